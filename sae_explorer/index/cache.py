"""Where an index is kept and who may write it: cache keys, the build lock, clearing a folder.

An index lives in ``<cache_root>/index/<key[:20]>``, the key a hash of everything that changes
its contents (:func:`cache_key`). One build per folder at a time (:func:`build_lock`); a folder is
cleared only while its lock is held, and only if everything in it belongs to an index
(:func:`clear_index_dpath`): a folder passed by mistake is refused, never wiped.

A cache that cannot be written is no reason to fail when it already holds the index: a read-only
cache serves a finished index without its lock (:func:`read_finished`). A full disk during a build
removes the unfinished files and raises :class:`CacheError` saying so (:func:`cleared_when_full`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sae_explorer.index.files import (
    BUILD_ONLY_NAMES,
    DERIVED_NAMES,
    MANIFEST_NAME,
    OPTIONAL_NAMES,
    PROGRESS_NAME,
    SCHEMA,
    STATE_NAME,
    CorruptIndexError,
    check_files,
    index_file_names,
    parse_manifest,
    write_manifest,
)
from sae_explorer.index.reader import ActivationIndex
from sae_explorer.index.shards import SHARDS_DNAME

if TYPE_CHECKING:
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.progress import Progress

log = logging.getLogger(__name__)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
"""errno values of a full disk (or quota)."""
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
"""errno values of a folder this process may not write."""


class LockUnavailable(OSError):
    """The build lock cannot be taken: its folder may not be written (a read-only cache)."""


class CacheError(OSError):
    """The cache cannot hold an index: its disk is full, or it is read-only and does not hold
    a finished index for these inputs. The message says which, and what to do."""


def is_full_disk(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in NO_SPACE


def is_read_only(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in READ_ONLY


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
    :class:`LockUnavailable` when the lock file cannot be created (a read-only cache).
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
    lock_fpath = dpath.parent / f".{dpath.name}.lock"
    try:
        dpath.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_fpath, "a")  # noqa: SIM115 (closed below)
    except OSError as e:
        if not is_read_only(e):
            raise
        raise LockUnavailable(e.errno, f"cannot create the build lock {lock_fpath}") from e
    with f:
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
    Call it holding :func:`build_lock`. Files re-hashed because their modification time changed
    (a copied cache) and found intact get their new times in the manifest, so the next open
    does not hash them again."""
    if not (dpath / MANIFEST_NAME).exists():
        return None
    try:
        index, hashed = open_finished(dpath, key)
    except CorruptIndexError as e:
        log.warning("rebuilding the index at %s: %s", dpath, e)
        clear_index_dpath(dpath)
        return None
    if hashed:
        manifest = dict(index.manifest, mtime_ns=hashed)
        with contextlib.suppress(OSError):  # only a speed-up: a read-only folder hashes again
            write_manifest(dpath, manifest)
            index.manifest = manifest
    return index


def open_finished(dpath: Path, key: str) -> tuple[ActivationIndex, dict[str, int] | None]:
    """The finished index in ``dpath`` for ``key``, its files, values and items table checked,
    and the files' modification times when some had to be re-hashed (else None);
    ``CorruptIndexError`` saying what is wrong otherwise."""
    manifest = parse_manifest(dpath)
    if manifest.get("key") != key:
        raise CorruptIndexError(f"{dpath} holds an index for another key")
    check = check_files(dpath, manifest)
    index = ActivationIndex(dpath, manifest)
    index.item_table  # noqa: B018 (opened now: an unreadable table means rebuild, not a failed start)
    index.input_stats  # noqa: B018
    return index, (check.mtime_ns if check.hashed else None)


def read_finished(dpath: Path, key: str, reason: OSError) -> ActivationIndex:
    """The finished index of a cache this process cannot write (``reason``: why the lock could
    not be taken), read without the lock; ``CacheError`` when there is none to read."""
    try:
        return open_finished(dpath, key)[0]
    except (CorruptIndexError, OSError) as e:
        raise CacheError(
            f"the index folder {dpath} cannot be written ({reason.strerror or reason}) and holds "
            f"no finished index for this setup ({e}); point the cache (--cache-dir, "
            "SAE_EXPLORER_CACHE_DIR) at a writable folder"
        ) from e


@contextlib.contextmanager
def held_for_building(dpath: Path, progress: Progress | None) -> Iterator[LockUnavailable | None]:
    """:func:`build_lock` and :func:`cleared_when_full` around a build of ``dpath``; yields
    None holding them, or, holding nothing, why the lock cannot be taken (a read-only cache:
    then only :func:`read_finished` may look at the folder)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(build_lock(dpath, progress))
        except LockUnavailable as e:
            log.warning("%s; reading the finished index there without the lock", e)
            yield e
            return
        stack.enter_context(cleared_when_full(dpath))
        yield None


@contextlib.contextmanager
def cleared_when_full(dpath: Path) -> Iterator[None]:
    """Run a build; if the disk fills up, remove what it wrote to ``dpath`` (under the build
    lock) and raise :class:`CacheError`: no unfinished files are left to fill the disk."""
    try:
        yield
    except OSError as e:
        if not is_full_disk(e) or isinstance(e, CacheError):
            raise
        if dpath.exists():
            clear_index_dpath(dpath)
        raise CacheError(
            f"the disk holding the index folder {dpath} is full ({e.strerror or e}); the "
            "unfinished index was removed. Free some space, or point the cache (--cache-dir, "
            "SAE_EXPLORER_CACHE_DIR) at another disk"
        ) from e


def clear_index_dpath(dpath: Path, keep: bool = False) -> None:
    """Delete an index folder (``keep``: only its contents), after checking that everything in
    it is an index's or a build's file: a folder passed by mistake (``index_embeddings(...,
    "~/photos")``) raises ``ValueError`` instead of being wiped. Only under :func:`build_lock`:
    another process may be reading or building the folder otherwise."""
    from sae_explorer.naming import NAMES_FILE, NAMES_META

    assert Path(dpath).absolute() in _locked, f"clearing {dpath} without holding its build lock"
    ours = {
        MANIFEST_NAME, *index_file_names(), *OPTIONAL_NAMES, *DERIVED_NAMES, NAMES_FILE, NAMES_META,
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
