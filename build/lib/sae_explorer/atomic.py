"""Atomic file writes: a reader (or a crash) never sees a half-written file.

Everything is written to a temporary file in the destination folder and renamed into place with
``os.replace``, which is atomic on POSIX and Windows. Files get the usual ``0o644``-under-umask
mode (``mkstemp`` alone would leave them private to the writer).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(fpath: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``fpath``; on success rename it onto ``fpath``.

    For writers that insist on a file name (safetensors, pyarrow). On error the temporary file is
    removed and ``fpath`` is left as it was.
    """
    fpath = Path(fpath)
    fd, tmp = tempfile.mkstemp(dir=fpath.parent, prefix=f".{fpath.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, fpath)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(fpath: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a binary file object, then rename the result onto ``fpath``."""
    with atomic_path(fpath) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(fpath)


def atomic_write_bytes(fpath: str | Path, data: bytes) -> Path:
    return atomic_write(fpath, lambda f: f.write(data))


def atomic_write_text(fpath: str | Path, text: str) -> Path:
    return atomic_write_bytes(fpath, text.encode("utf-8"))


def atomic_write_json(fpath: str | Path, data: Any) -> Path:
    return atomic_write_text(fpath, json.dumps(data, indent=1, sort_keys=True) + "\n")


def atomic_save_npy(fpath: str | Path, array: np.ndarray) -> Path:
    return atomic_write(fpath, lambda f: np.save(f, array, allow_pickle=False))


def atomic_save_npz(fpath: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    return atomic_write(fpath, lambda f: np.savez(f, **arrays))
