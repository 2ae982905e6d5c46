"""Grow a ``.npy`` file row by row, resumably."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class NpyAppender:
    """Grow a ``.npy`` file by appending rows; ``close()`` writes the final shape and renames it.

    The rows go to ``.<name>.partial`` beside the target with plain appends (pages already
    written do not stay in the process's memory, unlike a memory map). The header has a fixed
    size, so it is rewritten in place for the final row count: no copy at the end. A run that
    stops can reopen the partial file at a known row count (``resume_rows``); rows written
    after that point are cut off.
    """

    HEADER_BYTES = 128  # magic + version + length + dict padded with spaces; a multiple of 64

    def __init__(
        self, fpath: Path, dtype, row_shape: tuple[int, ...] = (), resume_rows: int = 0
    ) -> None:
        self.fpath = Path(fpath)
        self.tmp = self.fpath.with_name(f".{self.fpath.name}.partial")
        self.dtype, self.row_shape = np.dtype(dtype), tuple(row_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.row_shape, dtype=np.int64))
        if resume_rows:
            size = self.HEADER_BYTES + resume_rows * self.row_bytes
            if not self.tmp.is_file() or self.tmp.stat().st_size < size:
                raise ValueError(f"{self.tmp.name} holds fewer than {resume_rows} rows")
            self.file = open(self.tmp, "r+b")  # noqa: SIM115 (closed in close())
            self.file.truncate(size)
            self.file.seek(size)
        else:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 (closed in close())
            self.file.write(self._header(0))
        self.n_rows = resume_rows

    def _header(self, n_rows: int) -> bytes:
        shape = (n_rows, *self.row_shape)
        descr = np.lib.format.dtype_to_descr(self.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
        body = text.ljust(self.HEADER_BYTES - 10 - 1) + "\n"
        assert len(body) == self.HEADER_BYTES - 10, text
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin1")

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        assert rows.shape[1:] == self.row_shape, (rows.shape, self.row_shape)
        self.file.write(rows.reshape(-1).view(np.uint8))
        self.n_rows += len(rows)

    def flush(self) -> None:
        """Hand the rows written so far to the OS (before recording ``n_rows`` as resumable)."""
        self.file.flush()

    def close(self) -> Path:
        self.file.seek(0)
        self.file.write(self._header(self.n_rows))
        self.file.close()
        os.replace(self.tmp, self.fpath)
        return self.fpath
