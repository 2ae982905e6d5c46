"""Corpora: the images and texts whose latent activations the explorer indexes.

One function, :func:`load_corpus`, turns a source string into a flat list of items, each with a
modality, a source (file path or the text itself), an optional label and a stable id. Sources:

- an image folder, searched recursively; an image's sub-folder name is its label;
- a table (``.csv``, ``.jsonl``, ``.parquet``, or a ``.txt`` whose first line is a CSV header
  naming known columns) with an image-path column and/or a text column, plus optional label/id
  columns; options after ``?`` pick columns, e.g. ``captions.csv?image=file&text=caption``;
- a plain ``.txt`` file, one text per line;
- ``builtin:shapes`` (``builtin:shapes?n=2000&seed=0``): the generated world, image and caption
  of every index, redrawn on demand from ``shapes.make_item``;
- WebDataset ``.tar`` shards and Parquet files holding image bytes (what img2dataset writes):
  a shard file, a folder of them, or a glob (``cc3m/*.tar``); options name Parquet columns
  (``?image=jpg&text=txt``). A shard that cannot be listed is skipped and reported
  (``Corpus.unreadable``); see :mod:`sae_explorer.packed_corpus`;
- ``hf:org/dataset`` (``hf:org/dataset?split=test&config=x&image=img&text=caption``): a Hugging
  Face dataset, streamed up to ``max_items`` rows; its images are written once to a folder under
  the cache so the corpus can be reopened offline. A local dataset folder works the same way.

Several sources can be combined (``load_corpus([a, b])``); ids are then prefixed with the
source's position so they stay unique. The corpus's ``manifest_hash`` covers every item and each
image file's size and modification time, so a changed corpus never reuses a stale cache.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image, UnidentifiedImageError

from sae_explorer import builtin, packed_corpus
from sae_explorer.atomic import atomic_write_bytes, atomic_write_text
from sae_explorer.images import to_rgb
from sae_explorer.packed_corpus import UnreadableSource

Modality = Literal["image", "text"]
MODALITIES: tuple[str, ...] = ("image", "text")

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")

# Column names recognised without options, in order of preference.
IMAGE_COLUMNS = ("image", "image_path", "img", "path", "file", "filename", "filepath", "file_name")
TEXT_COLUMNS = ("text", "caption", "sentence", "prompt", "description", "title")
LABEL_COLUMNS = ("label", "class", "category", "labels", "fine_label", "coarse_label")
ID_COLUMNS = ("id", "item_id", "uid", "key")

SOURCE_SEPARATOR = " + "
"""Between the sources of a corpus read from several (``Corpus.source``)."""
HF_DEFAULT_MAX_ITEMS = 10_000
"""A Hugging Face dataset is streamed; without ``max_items`` this many rows are read."""


class CorpusItem(NamedTuple):
    """One image or text. ``source`` is a file path for images (or a ``builtin:shapes?...``
    reference) and the text itself for texts; ``attributes`` carries known ground truth."""

    item_id: str
    modality: str
    source: str
    label: str | None = None
    attributes: dict[str, str] | None = None


@dataclass(frozen=True)
class Corpus:
    """An ordered list of items; images are read only when asked for."""

    items: list[CorpusItem]
    source: str
    """The source string(s) it came from, for display."""
    fingerprints: tuple[str, ...] = field(default=(), repr=False)
    """Per-source content fingerprints (file sizes and times, world versions) for the hash."""
    unreadable: tuple[UnreadableSource, ...] = field(default=(), repr=False)
    """Shard files of the sources that could not be listed (skipped)."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> CorpusItem:
        return self.items[i]

    @property
    def n_images(self) -> int:
        return sum(item.modality == "image" for item in self.items)

    @property
    def n_texts(self) -> int:
        return sum(item.modality == "text" for item in self.items)

    @property
    def attribute_names(self) -> list[str]:
        """Names of the ground-truth attributes any item carries (e.g. the shapes world's)."""
        names: dict[str, None] = {}
        for item in self.items:
            names.update(dict.fromkeys(item.attributes or ()))
        return list(names)

    def load_image(self, i: int) -> Image.Image:
        """Item ``i``'s image as RGB; ValueError naming the file when it cannot be read."""
        return load_item_image(self.items[i])

    @property
    def manifest_hash(self) -> str:
        """sha256 over every item (id, modality, source, label) and the source fingerprints."""
        digest = hashlib.sha256()
        for fingerprint in self.fingerprints:
            digest.update(fingerprint.encode())
        for item in self.items:
            line = "\t".join((item.item_id, item.modality, item.source, item.label or ""))
            digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
        return digest.hexdigest()


def load_item_image(item: CorpusItem) -> Image.Image:
    """Decode one image item to RGB (regenerating built-in world items)."""
    if item.modality != "image":
        raise ValueError(f"item {item.item_id!r} is a {item.modality}, not an image")
    if builtin.is_builtin(item.source):
        options = _parse_options(item.source.partition("?")[2])
        return builtin.resolve(item.source).module().load_image(options)
    try:
        packed = packed_corpus.is_packed(item.source)
        fp = packed_corpus.open_image_bytes(item.source) if packed else item.source
        return _open_rgb(fp)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read image {item.source!r}: {e}") from e


def read_item_bytes(item: CorpusItem) -> bytes | None:
    """The encoded bytes of an image item's file or shard member; None for a built-in world's
    item (generated, not stored). ValueError naming the source when they cannot be read."""
    if builtin.is_builtin(item.source):
        return None
    try:
        if packed_corpus.is_packed(item.source):
            return packed_corpus.read_image_bytes(item.source)
        return Path(item.source).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read image {item.source!r}: {e}") from e


def image_from_bytes(data: bytes, source: str) -> Image.Image:
    """Decode an image item's bytes (:func:`read_item_bytes`) to RGB, as :func:`load_item_image`
    would; ValueError naming ``source`` when they do not decode."""
    try:
        return _open_rgb(io.BytesIO(data))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise ValueError(f"cannot read image {source!r}: {e}") from e


def _open_rgb(fp) -> Image.Image:
    with Image.open(fp) as opened:
        opened.load()
        image = to_rgb(opened)
        return image.copy() if image is opened else image


# --------------------------------------------------------------------------- entry point
def load_corpus(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    max_items: int | None = None,
    cache_dpath: str | os.PathLike | None = None,
) -> Corpus:
    """Read a corpus from one source or several (see the module docstring for the forms).

    ``max_items`` caps each source: local sources keep items spread evenly over their sorted
    order (so a capped class folder still covers every class), streamed ones keep the first rows.
    ``cache_dpath`` is where streamed datasets are materialised (default: :func:`default_cache_dpath`).
    """
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be >= 1 or None, got {max_items}")
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("no corpus source given")
    parts = [_load_one(str(s), max_items, cache_dpath) for s in sources]
    if len(parts) == 1:
        corpus = parts[0]
    else:
        items = [
            item._replace(item_id=f"{k}:{item.item_id}")
            for k, part in enumerate(parts)
            for item in part.items
        ]
        fingerprints = tuple(f for part in parts for f in part.fingerprints)
        unreadable = tuple(u for part in parts for u in part.unreadable)
        name = SOURCE_SEPARATOR.join(part.source for part in parts)
        corpus = Corpus(items, name, fingerprints, unreadable)
    if not corpus.items:
        raise ValueError(f"the corpus {corpus.source!r} is empty: it has no images or texts")
    return corpus


def default_cache_dpath() -> Path:
    """``$SAE_EXPLORER_CACHE`` or ``~/.cache/sae-explorer``: where indexes and datasets go."""
    env = os.environ.get("SAE_EXPLORER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sae-explorer"


def _load_one(source: str, max_items: int | None, cache_dpath) -> Corpus:
    if builtin.is_builtin(source):
        return _load_builtin(source, max_items)
    if source.startswith("hf:"):
        return _load_hf(source, max_items, cache_dpath)
    path_str, _, query = source.partition("?")
    path = Path(path_str).expanduser()
    if "*" in path_str or "[" in path_str:  # a glob of shard files
        parent = Path(path_str).expanduser().parent
        return _load_packed(source, packed_corpus.shard_files(parent, path.name), query, max_items)
    if not path.exists():
        raise ValueError(
            f"corpus source {source!r} not found; give an image folder, a .csv/.tsv/.jsonl/"
            f".parquet/.txt file, 'builtin:shapes' or 'hf:org/dataset'"
        )
    if path.is_dir() and packed_corpus.folder_is_packed(path):
        return _load_packed(source, packed_corpus.shard_files(path, None), query, max_items)
    if path.is_dir():
        if query:
            raise ValueError(f"an image folder takes no options, got {query!r}")
        return _load_folder(path, max_items)
    suffix = path.suffix.lower()
    if suffix == ".tar" or (
        suffix == ".parquet" and _parquet_image_column(path, _parse_options(query))
    ):
        return _load_packed(source, [path], query, max_items)
    if suffix in TABLE_SUFFIXES or (suffix == ".txt" and (query or _looks_like_csv(path))):
        return _load_table(path, _parse_options(query), max_items)
    if suffix == ".txt":
        return _load_lines(path, max_items)
    raise ValueError(
        f"unsupported corpus file {path.name!r}; allowed: an image folder, "
        f"{', '.join(TABLE_SUFFIXES)}, .txt (one text per line, or CSV with a header)"
    )


def _parquet_image_column(fpath: Path, options: dict[str, str]) -> str | None:
    try:
        return packed_corpus.parquet_image_column(fpath, options.get("image"))
    except (OSError, ValueError):  # unreadable: the table reader says why
        return None


def _load_packed(source: str, fpaths: list[Path], query: str, max_items: int | None) -> Corpus:
    """WebDataset tar shards or Parquet files with image bytes (:mod:`.packed_corpus`)."""
    options = _parse_options(query)
    allowed = {"image", "text", "label", "id"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown options {unknown} for shard files; allowed: {sorted(allowed)}")
    if not fpaths:
        raise ValueError(f"{source!r} names no .tar or .parquet shard files")
    fpaths = [p.resolve() for p in fpaths]
    listing = packed_corpus.list_shards(fpaths, options)
    if not listing.items:
        first = listing.unreadable[0].error if listing.unreadable else "they hold no items"
        raise ValueError(
            f"no images or texts in the {len(fpaths)} shard files of {source!r} "
            f"({len(listing.unreadable)} unreadable; {first})"
        )
    items = [CorpusItem(*item) for item in listing.items]
    items = [items[i] for i in spread_indices(len(items), max_items)]
    name = str(fpaths[0]) if len(fpaths) == 1 else source
    return Corpus(items, name, (_file_fingerprint(fpaths),), tuple(listing.unreadable))


def _parse_options(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))


def spread_indices(n: int, max_items: int | None) -> np.ndarray:
    """Indices of at most ``max_items`` of ``n`` items, evenly spread, in order."""
    if max_items is None or n <= max_items:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_items).round().astype(np.int64))


def _file_fingerprint(fpaths: Iterable[Path]) -> str:
    """Hash of sizes and mtimes: cheap (no reads) and catches replaced or edited files."""
    digest = hashlib.sha256()
    for fpath in fpaths:
        try:
            st = fpath.stat()
            digest.update(f"{fpath}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{fpath}\tmissing\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- folders
def _load_folder(dpath: Path, max_items: int | None) -> Corpus:
    dpath = dpath.resolve()
    fpaths = sorted(
        p
        for p in dpath.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    if not fpaths:
        raise ValueError(
            f"the image folder {str(dpath)!r} holds no images "
            f"(looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    fpaths = [fpaths[i] for i in spread_indices(len(fpaths), max_items)]
    items = []
    for fpath in fpaths:
        rel = fpath.relative_to(dpath)
        label = rel.parts[-2] if len(rel.parts) > 1 else None
        items.append(CorpusItem(rel.as_posix(), "image", str(fpath), label))
    return Corpus(items, str(dpath), (_file_fingerprint(fpaths),))


# --------------------------------------------------------------------------- text lines
def _load_lines(fpath: Path, max_items: int | None) -> Corpus:
    lines = [
        (n, line.strip())
        for n, line in enumerate(fpath.read_text(encoding="utf-8").splitlines(), start=1)
        if line.strip()
    ]
    if not lines:
        raise ValueError(f"the text file {str(fpath)!r} has no non-empty lines")
    lines = [lines[i] for i in spread_indices(len(lines), max_items)]
    items = [CorpusItem(f"line{n}", "text", text) for n, text in lines]
    return Corpus(items, str(fpath.resolve()))


# --------------------------------------------------------------------------- tables
def _looks_like_csv(fpath: Path) -> bool:
    """A ``.txt`` whose first line is a header of known column names (Flickr8k's captions.txt)."""
    with open(fpath, encoding="utf-8", errors="replace") as f:
        header = f.readline().strip()
    names = [name.strip().lower() for name in header.split(",")]
    known = set(IMAGE_COLUMNS + TEXT_COLUMNS + LABEL_COLUMNS + ID_COLUMNS)
    return len(names) >= 2 and all(names) and all(name in known for name in names)


def _read_table(fpath: Path):
    import pandas as pd

    suffix = fpath.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(fpath)
        if suffix == ".jsonl":
            return pd.read_json(fpath, lines=True, dtype=False)
        sep = "\t" if suffix == ".tsv" else ","
        return pd.read_csv(
            fpath, sep=sep, dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL
        )
    except (ValueError, OSError) as e:
        raise ValueError(f"cannot read the table {str(fpath)!r}: {e}") from e


def _pick_column(columns: list[str], option: str | None, candidates: tuple[str, ...], role: str):
    if option is not None:
        if option == "":
            return None
        if option not in columns:
            raise ValueError(f"{role} column {option!r} not in the table; its columns: {columns}")
        return option
    lowered = {c.lower(): c for c in columns}
    return next((lowered[c] for c in candidates if c in lowered), None)


def _resolve_image_path(value: str, roots: list[Path]) -> Path:
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    for root in roots:
        if (root / path).exists():
            return root / path
    return roots[0] / path


def _load_table(fpath: Path, options: dict[str, str], max_items: int | None) -> Corpus:
    allowed = {"image", "text", "label", "id", "image_root"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"unknown table options {unknown}; allowed: {sorted(allowed)}")
    fpath = fpath.resolve()
    df = _read_table(fpath)
    columns = [str(c) for c in df.columns]
    image_col = _pick_column(columns, options.get("image"), IMAGE_COLUMNS, "image")
    text_col = _pick_column(columns, options.get("text"), TEXT_COLUMNS, "text")
    label_col = _pick_column(columns, options.get("label"), LABEL_COLUMNS, "label")
    id_col = _pick_column(columns, options.get("id"), ID_COLUMNS, "id")
    if image_col is None and text_col is None:
        raise ValueError(
            f"the table {fpath.name!r} has no image column (one of {list(IMAGE_COLUMNS)}) and no "
            f"text column (one of {list(TEXT_COLUMNS)}); its columns are {columns}. Name them "
            f"with options, e.g. '{fpath.name}?image=<column>&text=<column>'"
        )
    if df.empty:
        raise ValueError(f"the table {str(fpath)!r} has no rows")
    # Relative image paths: beside the table, in ``image_root``, or in an ``images/`` sibling.
    roots = [Path(options["image_root"]).expanduser().resolve()] if "image_root" in options else []
    roots += [fpath.parent, fpath.parent / "images"]
    items: list[CorpusItem] = []
    seen_images: set[str] = set()
    image_fpaths: list[Path] = []
    rows = df.to_dict("records")
    for n in spread_indices(len(rows), max_items):
        row = rows[n]
        label = _cell(row.get(label_col)) if label_col else None
        base_id = _cell(row.get(id_col)) if id_col else None
        image_value = _cell(row.get(image_col)) if image_col else None
        if image_value:
            image_fpath = _resolve_image_path(image_value, roots)
            if str(image_fpath) not in seen_images:  # a captions table lists each image 5 times
                seen_images.add(str(image_fpath))
                image_fpaths.append(image_fpath)
                items.append(CorpusItem(base_id or image_value, "image", str(image_fpath), label))
        text_value = _cell(row.get(text_col)) if text_col else None
        if text_value:
            if base_id is None:
                item_id = f"row{n + 1}"
            else:
                item_id = f"{base_id}:text" if image_value else base_id
            items.append(CorpusItem(item_id, "text", text_value, label))
    return Corpus(items, str(fpath), (_file_fingerprint([fpath, *image_fpaths]),))


def _cell(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


# --------------------------------------------------------------------------- built-in world
def _load_builtin(source: str, max_items: int | None) -> Corpus:
    world = builtin.resolve(source)
    return world.module().load_corpus(source, _parse_options(source.partition("?")[2]), max_items)


# --------------------------------------------------------------------------- Hugging Face
def _load_hf(source: str, max_items: int | None, cache_dpath) -> Corpus:
    """Stream a dataset (hub id or local dataset folder) and materialise its images once."""
    name, _, query = source[len("hf:") :].partition("?")
    options = _parse_options(query)
    allowed = {"split", "config", "image", "text", "label", "id"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for a Hugging Face corpus; allowed: {sorted(allowed)}"
        )
    if not name:
        raise ValueError("a Hugging Face corpus needs a dataset id: 'hf:org/dataset'")
    cap = max_items or HF_DEFAULT_MAX_ITEMS
    split = options.get("split", "train")
    key = json.dumps({"name": name, "options": options, "cap": cap}, sort_keys=True)
    slug = "".join(c if c.isalnum() else "-" for c in name).strip("-")[-60:]
    dpath = (
        Path(cache_dpath or default_cache_dpath())
        / "corpora"
        / (f"hf-{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    )
    table_fpath = dpath / "items.jsonl"
    if not table_fpath.is_file():
        _materialise_hf(name, options, split, cap, dpath)
    items = []
    with open(table_fpath, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            source_value = record["source"]
            if record["modality"] == "image":
                source_value = str(dpath / source_value)
            items.append(
                CorpusItem(record["item_id"], record["modality"], source_value, record["label"])
            )
    return Corpus(items, f"hf:{name}", (f"hf:{key}",))


def _hf_columns(
    features, options: dict[str, str]
) -> tuple[str | None, str | None, str | None, str | None]:
    import datasets

    columns = list(features)

    def pick(role: str, candidates: tuple[str, ...], kind) -> str | None:
        if role in options:
            return _pick_column(columns, options[role], candidates, role)
        typed = [c for c in columns if kind is not None and isinstance(features[c], kind)]
        return typed[0] if typed else _pick_column(columns, None, candidates, role)

    image_col = pick("image", IMAGE_COLUMNS, datasets.Image)
    text_col = pick("text", TEXT_COLUMNS, None)
    label_col = pick("label", LABEL_COLUMNS, datasets.ClassLabel)
    id_col = pick("id", ID_COLUMNS, None)
    return image_col, text_col, label_col, id_col


def _iter_hf_rows(name: str, options: dict[str, str], split: str):
    import datasets

    kwargs = {"split": split, "streaming": True}
    config = options.get("config")
    try:
        ds = datasets.load_dataset(name, config, **kwargs)
    except ValueError as e:
        raise ValueError(f"cannot open the dataset {name!r} (split {split!r}): {e}") from e
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise ValueError(
            f"cannot stream the dataset {name!r}: {e}. Offline, point 'hf:' at a local dataset "
            "folder (parquet files or an image folder) instead"
        ) from e
    features = ds.features
    if features is None:  # some streamed datasets only know their columns after the first row
        first = next(iter(ds), None)
        features = datasets.Features({k: datasets.Value("string") for k in (first or {})})
    image_col, text_col, label_col, id_col = _hf_columns(features, options)
    if image_col is None and text_col is None:
        raise ValueError(
            f"the dataset {name!r} has no image column and no text column; its columns are "
            f"{list(features)}. Name them: 'hf:{name}?image=<column>&text=<column>'"
        )
    if image_col is not None and isinstance(features[image_col], datasets.Image):
        ds = ds.cast_column(image_col, datasets.Image(decode=False))
    label_feature = features[label_col] if label_col else None
    return ds, image_col, text_col, label_col, id_col, label_feature


def _materialise_hf(name: str, options: dict[str, str], split: str, cap: int, dpath: Path) -> None:
    import datasets

    ds, image_col, text_col, label_col, id_col, label_feature = _iter_hf_rows(name, options, split)
    dpath.mkdir(parents=True, exist_ok=True)
    image_dpath = dpath / "images"
    image_dpath.mkdir(exist_ok=True)
    records = []
    for n, row in enumerate(_take(ds, cap)):
        label = row.get(label_col) if label_col else None
        if isinstance(label_feature, datasets.ClassLabel) and isinstance(label, int) and label >= 0:
            label = label_feature.int2str(label)
        label = None if label is None else str(label)
        base_id = str(row[id_col]) if id_col and row.get(id_col) is not None else f"{split}/{n}"
        image = row.get(image_col) if image_col else None
        if image is not None:
            rel = _write_hf_image(image, image_dpath, n)
            suffix = ":image" if text_col else ""
            records.append(
                {"item_id": base_id + suffix, "modality": "image", "source": rel, "label": label}
            )
        text = _cell(row.get(text_col)) if text_col else None
        if text:
            suffix = ":text" if image_col else ""
            records.append(
                {"item_id": base_id + suffix, "modality": "text", "source": text, "label": label}
            )
    if not records:
        raise ValueError(f"the dataset {name!r} (split {split!r}) gave no images or texts")
    atomic_write_text(dpath / "items.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def _take(iterable: Iterable, n: int) -> Iterator:
    for i, value in enumerate(iterable):
        if i >= n:
            return
        yield value


def _write_hf_image(image, image_dpath: Path, n: int) -> str:
    """Keep the dataset's own encoded bytes (no re-encoding); PIL images are saved as PNG."""
    if isinstance(image, dict) and image.get("bytes") is not None:
        data = image["bytes"]
        suffix = Path(image.get("path") or "").suffix.lower()
        if suffix not in IMAGE_SUFFIXES:
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    suffix = "." + (opened.format or "png").lower()
            except (OSError, UnidentifiedImageError):
                suffix = ".bin"  # unreadable: kept so precompute lists it as skipped
    elif isinstance(image, dict) and image.get("path"):
        data = Path(image["path"]).read_bytes()
        suffix = Path(image["path"]).suffix.lower()
    elif isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data, suffix = buffer.getvalue(), ".png"
    else:
        raise ValueError(f"row {n}: the image column holds a {type(image).__name__}, not an image")
    rel = f"images/{n:07d}{suffix}"
    atomic_write_bytes(image_dpath / f"{n:07d}{suffix}", data)
    return rel
