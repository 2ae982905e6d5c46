"""The files of an index folder: their names, the manifest that lists them, and its check.

A folder is a finished index once ``manifest.json`` is there: it is written last and lists every
file with its size, its SHA-256 and its modification time, so an unfinished, damaged or
other-schema folder is told apart by reading it (:func:`read_manifest`). Sizes are checked at every
open; a file's checksum is computed only when its size or modification time differs from the
manifest's (an open stays fast, a file written since the build is caught), and for every file by
:func:`verify_files` (``python -m sae_explorer verify INDEX_DIR``). The build's own files
(``progress.json``, ``state.npz``, the build-only columns) exist only while a build is unfinished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from sae_explorer.atomic import atomic_save_npy, atomic_write_json

SCHEMA = 1
MANIFEST_NAME = "manifest.json"
ITEMS_NAME = "items.parquet"
EMBEDDINGS_NAME = "embeddings.npy"
CODES_NAMES = ("codes_indptr.npy", "codes_ids.npy", "codes_values.npy")
INPUT_STATS_NAME = "input_stats.npz"
ANN_NAME = "ann.faiss"
ANN_META_NAME = "ann.json"
ITEMS_ARROW_NAME = "items.arrow"
DERIVED_NAMES = (ANN_NAME, ANN_META_NAME, ITEMS_ARROW_NAME)
"""Files derived from a large finished index after its manifest (its neighbour index,
:mod:`.ann`, and its items table memory-mappable, :mod:`.items`): checked against the index
when read, written again when they do not match it."""
OPTIONAL_NAMES = (INPUT_STATS_NAME,)
"""Files an index has only in some cases; the manifest lists them when they are there."""
LATENT_ARRAYS = (
    "latent_count",
    "latent_count_image",
    "latent_sum",
    "latent_max",
    "latent_level",
    "latent_top_idx",
    "latent_top_val",
    "latent_sample_idx",
    "latent_sample_val",
    "latent_hist",
)

PROGRESS_NAME = "progress.json"
STATE_NAME = "state.npz"
BUILD_ONLY_NAMES = {"corpus_idx": "build_corpus_idx.npy", "n_active": "build_n_active.npy"}
"""Per-item columns a build appends, then folds into ``items.parquet`` and deletes."""


class CorruptIndexError(ValueError):
    """An index folder that is incomplete, from another schema, or damaged."""


class IndexCounts(NamedTuple):
    """The ``counts`` of a manifest written by a build: what the index holds. (The reader
    needs only ``n_items``, ``n_latents`` and ``embed_dim``; benchmarks write only those.)"""

    n_items: int
    n_images: int
    n_texts: int
    n_latents: int
    embed_dim: int
    codes_nnz: int  # stored (item, latent) codes, at most top_k per item
    n_skipped: int  # corpus items that could not be read

    @classmethod
    def from_manifest(cls, manifest: dict) -> IndexCounts:
        counts = manifest.get("counts")
        try:
            return cls(**{name: int(counts[name]) for name in cls._fields})
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptIndexError(f"the manifest's counts are incomplete: {e!r}") from e


def write_latent_arrays(dpath: Path, arrays: dict[str, np.ndarray]) -> None:
    assert set(arrays) == set(LATENT_ARRAYS), sorted(arrays)
    for name, array in arrays.items():
        atomic_save_npy(dpath / f"{name}.npy", array)


def index_file_names() -> list[str]:
    """The files a complete index must have (``manifest.json`` aside)."""
    return [ITEMS_NAME, EMBEDDINGS_NAME, *CODES_NAMES, *(f"{n}.npy" for n in LATENT_ARRAYS)]


def index_files(dpath: Path) -> dict[str, int]:
    """Name -> size in bytes of the files a complete index must have, and of the optional ones
    it has (for the manifest)."""
    names = [*index_file_names(), *(n for n in OPTIONAL_NAMES if (dpath / n).is_file())]
    return {name: (dpath / name).stat().st_size for name in names}


CHECKSUM = "sha256"
"""The manifest's checksum of every file (``manifest["sha256"]``); ``sha256sum`` checks it too.
(1.5 GB/s on the 2-core dev box, 2.7x blake2b there.)"""


def file_checksum(fpath: Path) -> str:
    """The SHA-256 of a file, read in blocks (never whole into memory)."""
    with open(fpath, "rb") as f:
        return hashlib.file_digest(f, CHECKSUM).hexdigest()


def file_records(dpath: Path) -> dict[str, dict]:
    """The manifest's record of an index's files: ``files`` (sizes), ``sha256`` and
    ``mtime_ns`` (when each was last written, so an open re-hashes only files written since)."""
    dpath = Path(dpath)
    sizes = index_files(dpath)
    return {
        "files": sizes,
        CHECKSUM: {name: file_checksum(dpath / name) for name in sizes},
        "mtime_ns": {name: (dpath / name).stat().st_mtime_ns for name in sizes},
    }


class FileCheck(NamedTuple):
    """What :func:`check_files` read: the files it hashed and the modification times they have
    now (all matched the manifest)."""

    hashed: list[str]
    mtime_ns: dict[str, int]


def read_manifest(dpath: Path) -> dict:
    """The manifest of a finished index whose files check out (:func:`check_files`);
    ``CorruptIndexError`` saying what is wrong otherwise."""
    manifest = parse_manifest(dpath)
    check_files(dpath, manifest)
    return manifest


def verify_files(dpath: Path) -> FileCheck:
    """Check every file of an index against its manifest, checksums included, whatever the
    files' modification times (the ``verify`` command); ``CorruptIndexError`` otherwise."""
    manifest = parse_manifest(dpath)
    return check_files(dpath, manifest, names=manifest["files"])


def parse_manifest(dpath: Path) -> dict:
    """The manifest as written, its form checked but not the files it lists."""
    fpath = Path(dpath) / MANIFEST_NAME
    if not fpath.is_file():
        raise CorruptIndexError(f"{dpath} has no {MANIFEST_NAME} (not an index, or unfinished)")
    try:
        manifest = json.loads(fpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptIndexError(f"{fpath} is not valid JSON: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        raise CorruptIndexError(f"{fpath} has schema {found!r}; this version reads schema {SCHEMA}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise CorruptIndexError(f"{fpath} lists no files")
    if not isinstance(manifest.get(CHECKSUM), dict) or set(manifest[CHECKSUM]) != set(files):
        raise CorruptIndexError(
            f"{fpath} has no {CHECKSUM} of every file (built by an older version); rebuild it"
        )
    return manifest


def check_files(dpath: Path, manifest: dict, names: Iterable[str] | None = None) -> FileCheck:
    """Check each file the manifest lists: present, of its size, and of its checksum when its
    modification time is not the manifest's (``names``: hash these whatever their time).
    ``CorruptIndexError`` naming the first file that differs."""
    dpath = Path(dpath)
    always = set(names or ())
    recorded_mtime = manifest.get("mtime_ns") or {}
    check = FileCheck([], {})
    for name, size in manifest["files"].items():
        fpath = dpath / name
        if not fpath.is_file():
            raise CorruptIndexError(f"index file {name} is missing from {dpath}")
        stat = fpath.stat()
        if stat.st_size != size:
            raise CorruptIndexError(
                f"index file {name} has {stat.st_size} bytes, the manifest says {size}"
            )
        check.mtime_ns[name] = stat.st_mtime_ns
        if name in always or recorded_mtime.get(name) != stat.st_mtime_ns:
            if file_checksum(fpath) != manifest[CHECKSUM][name]:
                raise CorruptIndexError(
                    f"index file {name} in {dpath} is damaged: its {CHECKSUM} is not the "
                    "manifest's (changed since the index was built)"
                )
            check.hashed.append(name)
    return check


def write_manifest(dpath: Path, manifest: dict) -> None:
    """Write the manifest, last of all: its presence marks the index complete."""
    atomic_write_json(Path(dpath) / MANIFEST_NAME, manifest)


class FieldDifference(NamedTuple):
    name: str
    recorded: object
    expected: object


def first_difference(expected: NamedTuple, recorded: dict) -> FieldDifference | None:
    """The first field of ``expected`` whose value ``recorded`` (what a file says it was built
    with) does not hold; None when every field agrees."""
    for name in expected._fields:
        if recorded.get(name) != getattr(expected, name):
            return FieldDifference(name, recorded.get(name), getattr(expected, name))
    return None
