"""Corpora packed in shard files, as large image-text sets are distributed (what img2dataset
writes for CC3M and LAION): WebDataset ``.tar`` shards and Parquet files holding image bytes.

Listing reads only the small members (captions, labels) and remembers where each image lies;
an image is read when it is decoded, straight from its shard:

- a WebDataset item's source is ``tar:<shard path>?offset=<byte>&size=<bytes>&member=<name>``:
  one seek and one read, no tar parsing;
- a Parquet item's source is ``parquet:<file path>?row=<n>&column=<name>``: its row group's
  image column is read once per process and kept while consecutive items use it.

A shard that cannot be listed (not a tar, cut short, not Parquet) is skipped and reported as an
:class:`UnreadableSource`, never fatal; an image that does not decode is skipped later, item by
item, like any unreadable image.
"""

from __future__ import annotations

import functools
import io
import os
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode

TAR_PREFIX = "tar:"
PARQUET_PREFIX = "parquet:"
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm"})
TEXT_EXTENSIONS = ("txt", "caption", "text")
LABEL_EXTENSIONS = ("cls", "label")
PARQUET_TEXT_COLUMNS = ("txt", "caption", "text", "sentence", "prompt", "title")
PARQUET_ID_COLUMNS = ("key", "id", "item_id", "uid")


class UnreadableSource(NamedTuple):
    """A shard file of a corpus that could not be listed, and why (skipped, reported)."""

    source: str
    error: str


class PackedItem(NamedTuple):
    """One listed item before it becomes a :class:`~sae_explorer.corpus.CorpusItem`."""

    item_id: str
    modality: str
    source: str
    label: str | None


class Listing(NamedTuple):
    items: list[PackedItem]
    unreadable: list[UnreadableSource]


def is_packed(source: str) -> bool:
    return source.startswith((TAR_PREFIX, PARQUET_PREFIX))


# --------------------------------------------------------------------------- WebDataset
def _split_member(name: str) -> tuple[str, str]:
    """WebDataset's sample key and extension: ``dir/000123.jpg`` -> (``dir/000123``, ``jpg``)."""
    path = PurePosixPath(name)
    stem, _, ext = path.name.partition(".")
    return str(path.with_name(stem)), ext.lower()


def list_tar(fpath: Path) -> list[PackedItem]:
    """The items of one WebDataset shard: per sample key, an image item (its first image
    member) and a text item (its caption); ``ValueError`` if the shard cannot be listed."""
    size = fpath.stat().st_size
    samples: dict[str, dict[str, tuple[int, int] | str]] = {}
    try:
        with tarfile.open(fpath, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.offset_data + member.size > size:
                    raise ValueError(f"member {member.name!r} runs past the end of the file")
                key, ext = _split_member(member.name)
                sample = samples.setdefault(key, {})
                if ext in IMAGE_EXTENSIONS and "image" not in sample:
                    sample["image"] = (member.offset_data, member.size)
                    sample["member"] = member.name
                elif ext in TEXT_EXTENSIONS + LABEL_EXTENSIONS:
                    data = tar.extractfile(member).read()
                    sample[ext] = data.decode("utf-8", errors="replace").strip()
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise ValueError(f"cannot list the WebDataset shard {str(fpath)!r}: {e}") from e
    items = []
    for key, sample in samples.items():
        label = next((sample[e] for e in LABEL_EXTENSIONS if sample.get(e)), None)
        text = next((sample[e] for e in TEXT_EXTENSIONS if sample.get(e)), None)
        item_id = f"{fpath.stem}/{key}"
        if "image" in sample:
            offset, n_bytes = sample["image"]
            query = urlencode({"offset": offset, "size": n_bytes, "member": sample["member"]})
            source = f"{TAR_PREFIX}{fpath}?{query}"
            items.append(PackedItem(item_id, "image", source, label))
        if text:
            items.append(PackedItem(f"{item_id}:text", "text", text, label))
    return items


def _read_tar_member(source: str) -> bytes:
    path, _, query = source[len(TAR_PREFIX) :].rpartition("?")
    options = dict(parse_qsl(query))
    with open(path, "rb") as f:
        f.seek(int(options["offset"]))
        data = f.read(int(options["size"]))
    if len(data) != int(options["size"]):
        raise OSError(f"{path} ends inside member {options.get('member')!r}")
    return data


# --------------------------------------------------------------------------- Parquet
def _image_column(schema, option: str | None) -> str | None:
    """The column holding image bytes: the one named, else the first binary column or struct
    with a ``bytes`` field (Hugging Face's image feature)."""
    import pyarrow as pa

    def holds_bytes(t) -> bool:
        if pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return True
        return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0

    if option is not None:
        if option not in schema.names:
            raise ValueError(f"image column {option!r} not in the table; columns: {schema.names}")
        return option if holds_bytes(schema.field(option).type) else None
    return next((f.name for f in schema if holds_bytes(f.type)), None)


def parquet_image_column(fpath: Path, option: str | None = None) -> str | None:
    """The image-bytes column of a Parquet file (None: it holds paths or no images)."""
    import pyarrow.parquet as pq

    return _image_column(pq.read_schema(fpath), option)


def list_parquet(fpath: Path, options: dict[str, str]) -> list[PackedItem]:
    """The items of one Parquet file with image bytes (text and id columns read, image
    column not); ``ValueError`` if it cannot be read."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(fpath)
        image_col = _image_column(schema, options.get("image"))
        if image_col is None:
            raise ValueError("it has no column of image bytes")
        names = {n.lower(): n for n in schema.names}
        text_col = options.get("text") or next(
            (names[c] for c in PARQUET_TEXT_COLUMNS if c in names), None
        )
        id_col = options.get("id") or next(
            (names[c] for c in PARQUET_ID_COLUMNS if c in names), None
        )
        label_col = options.get("label") or names.get("label")
        wanted = [c for c in dict.fromkeys((text_col, id_col, label_col)) if c]
        table = pq.read_table(fpath, columns=wanted) if wanted else None
    except (OSError, ValueError, KeyError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"cannot read the Parquet file {str(fpath)!r}: {e}") from e
    n_rows = pq.ParquetFile(fpath).metadata.num_rows
    columns = {c: table.column(c).to_pylist() for c in wanted} if table is not None else {}
    items = []
    for row in range(n_rows):
        key = columns[id_col][row] if id_col else None
        item_id = f"{fpath.stem}/{key if key is not None else row}"
        label = columns[label_col][row] if label_col else None
        label = None if label is None else str(label)
        query = urlencode({"row": row, "column": image_col})
        items.append(PackedItem(item_id, "image", f"{PARQUET_PREFIX}{fpath}?{query}", label))
        text = columns[text_col][row] if text_col else None
        if text is not None and str(text).strip():
            items.append(PackedItem(f"{item_id}:text", "text", str(text).strip(), label))
    return items


@functools.lru_cache(maxsize=2)
def _row_group(path: str, mtime_ns: int, group: int, column: str) -> list:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).to_pylist()


@functools.lru_cache(maxsize=64)
def _group_starts(path: str, mtime_ns: int) -> list[int]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    starts, total = [], 0
    for g in range(meta.num_row_groups):
        starts.append(total)
        total += meta.row_group(g).num_rows
    return [*starts, total]


def _read_parquet_cell(source: str) -> bytes:
    import bisect

    path, _, query = source[len(PARQUET_PREFIX) :].rpartition("?")
    options = dict(parse_qsl(query))
    row, column = int(options["row"]), options["column"]
    mtime_ns = os.stat(path).st_mtime_ns
    starts = _group_starts(path, mtime_ns)
    if not 0 <= row < starts[-1]:
        raise OSError(f"{path} has no row {row}")
    group = bisect.bisect_right(starts, row) - 1
    value = _row_group(path, mtime_ns, group, column)[row - starts[group]]
    if isinstance(value, dict):  # Hugging Face's image struct
        value = value.get("bytes")
    if value is None:
        raise OSError(f"row {row} of {path} has no image")
    return value


# --------------------------------------------------------------------------- reading
def read_image_bytes(source: str) -> bytes:
    """The encoded image of a packed item (``OSError`` if it cannot be read)."""
    try:
        if source.startswith(TAR_PREFIX):
            return _read_tar_member(source)
        return _read_parquet_cell(source)
    except (KeyError, ValueError) as e:
        raise OSError(f"bad packed image reference {source!r}: {e}") from e


def open_image_bytes(source: str) -> io.BytesIO:
    return io.BytesIO(read_image_bytes(source))


# --------------------------------------------------------------------------- sources
def shard_files(path: Path, pattern: str | None) -> list[Path]:
    """The shard files of a source: the file, the files a glob pattern matches, or a folder's
    ``.tar`` files (else its ``.parquet`` files), sorted."""
    if pattern is not None:
        return sorted(p for p in path.glob(pattern) if p.is_file())
    if path.is_file():
        return [path]
    tars = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
    return tars or sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())


def list_shards(fpaths: Sequence[Path], options: dict[str, str]) -> Listing:
    """Every shard's items in order; the shards that cannot be listed are reported, skipped."""
    items: list[PackedItem] = []
    unreadable: list[UnreadableSource] = []
    for fpath in fpaths:
        try:
            if fpath.suffix == ".tar":
                items += list_tar(fpath)
            else:
                items += list_parquet(fpath, options)
        except ValueError as e:
            unreadable.append(UnreadableSource(str(fpath), str(e)))
    return Listing(items, unreadable)


def folder_is_packed(dpath: Path) -> bool:
    """A folder of shards (what img2dataset writes) rather than of image files."""
    return any(
        p.suffix in (".tar", ".parquet") and p.is_file() for p in dpath.iterdir()
    ) and not any(
        p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS for p in _first(dpath.rglob("*"), 1000)
    )


def _first(paths: Iterable[Path], n: int) -> list[Path]:
    out = []
    for path in paths:
        if len(out) >= n:
            break
        out.append(path)
    return out
