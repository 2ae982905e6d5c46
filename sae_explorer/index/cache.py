"""Where an index is kept and who may write it: cache keys, the build lock, clearing a folder.

An index lives in ``<cache_root>/index/<key[:20]>``, the key a hash of everything that changes
its contents (:func:`cache_key`). One build per folder at a time (:func:`build_lock`); a folder is
cleared only while its lock is held, and only if everything in it belongs to an index
(:func:`clear_index_dpath`): a folder passed by mistake is refused, never wiped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sae_explorer.index.files import (
    BUILD_ONLY_NAMES,
    MANIFEST_NAME,
    OPTIONAL_NAMES,
    PROGRESS_NAME,
    SCHEMA,
    STATE_NAME,
    CorruptIndexError,
    index_file_names,
    read_manifest,
)
from sae_explorer.index.reader import ActivationIndex
from sae_explorer.index.shards import SHARDS_DNAME

if TYPE_CHECKING:
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.progress import Progress

log = logging.getLogger(__name__)


def cache_key(
    encoder_id: str,
    sae_hash: str,
    corpus_hash: str,
    cfg: PrecomputeConfig,
    input_stats: dict | None = None,
) -> str:
    """Hash naming an index folder: same inputs and result settings, same folder.
    ``input_stats`` (:meth:`StatsPlan.key_payload`) where a modality gets its own statistics."""
    payload = {
        "schema": SCHEMA,
        "encoder": encoder_id,
        "sae": sae_hash,
        "corpus": corpus_hash,
        "config": {name: getattr(cfg, name) for name in cfg.RESULT_FIELDS},
    }
    if input_stats is not None:
        payload["input_stats"] = input_stats
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def index_dpath(cache_root: str | Path, key: str) -> Path:
    return Path(cache_root) / "index" / key[:20]


_locked: set[Path] = set()
"""Folders whose build lock this process holds (only :func:`clear_index_dpath` reads it)."""


@contextlib.contextmanager
def build_lock(dpath: Path, progress: Progress | None = None) -> Iterator[None]:
    """Hold an exclusive lock on building ``dpath`` (a ``.<name>.lock`` file beside it).

    A second process that asks for the same index waits here, then finds it finished instead
    of writing into the same folder. POSIX ``flock``; no lock where that does not exist.
    Everything that writes or clears the folder happens inside this block.
    """
    held = Path(dpath).absolute()
    with _flock(Path(dpath), progress):
        _locked.add(held)
        try:
            yield
        finally:
            _locked.discard(held)


@contextlib.contextmanager
def _flock(dpath: Path, progress: Progress | None) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    dpath.parent.mkdir(parents=True, exist_ok=True)
    with open(dpath.parent / f".{dpath.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building %s; waiting for it", dpath)
            if progress is not None:
                progress(0.0, "another process is building this index; waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reuse_index(dpath: Path, key: str) -> ActivationIndex | None:
    """The finished index in ``dpath`` if it is sound and for ``key``; otherwise clear it.
    Call it holding :func:`build_lock`."""
    if not (dpath / MANIFEST_NAME).exists():
        return None
    try:
        if read_manifest(dpath).get("key") != key:
            raise CorruptIndexError(f"{dpath} holds an index for another key")
        return ActivationIndex.load(dpath)
    except CorruptIndexError as e:
        log.warning("rebuilding the index at %s: %s", dpath, e)
        clear_index_dpath(dpath)
        return None


def clear_index_dpath(dpath: Path, keep: bool = False) -> None:
    """Delete an index folder (``keep``: only its contents), after checking that everything in
    it is an index's or a build's file: a folder passed by mistake (``index_embeddings(...,
    "~/photos")``) raises ``ValueError`` instead of being wiped. Only under :func:`build_lock`:
    another process may be reading or building the folder otherwise."""
    from sae_explorer.naming import NAMES_FILE, NAMES_META

    assert Path(dpath).absolute() in _locked, f"clearing {dpath} without holding its build lock"
    ours = {
        MANIFEST_NAME, *index_file_names(), *OPTIONAL_NAMES, NAMES_FILE, NAMES_META,
        PROGRESS_NAME, STATE_NAME, *BUILD_ONLY_NAMES.values(),
    }  # fmt: skip
    paths = list(dpath.iterdir())
    for path in paths:
        name = path.name
        if name.startswith("."):  # .<name>.partial (appenders), .<name>.<random>.tmp (atomic)
            name = name[1:].removesuffix(".partial")
            name = name.rsplit(".", 2)[0] if name.endswith(".tmp") else name
        if path.is_dir() and name == SHARDS_DNAME:  # a sharded build's partial results
            continue
        if not path.is_file() or name not in ours:
            raise ValueError(
                f"{dpath} holds {path.name!r}, which is not part of an activation index; "
                "refusing to delete it (pass an empty or new folder)"
            )
    if not keep:
        shutil.rmtree(dpath)
        return
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
