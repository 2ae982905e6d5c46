"""What an unfinished build keeps on disk, and how a later run reads it back.

A build appends to its files (:class:`BuildFiles`) as chunks finish. A checkpoint flushes them,
then saves the accumulator's state (``state.npz``) and the row count of every file with the
other progress (``progress.json``, a :class:`Checkpoint`), in that order: a crash in between
leaves files longer than the checkpoint says, and a resumed run cuts them back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple
from zipfile import BadZipFile

import numpy as np

from sae_explorer.atomic import atomic_save_npz, atomic_write_json
from sae_explorer.index.accumulator import LatentAccumulator
from sae_explorer.index.appender import NpyAppender
from sae_explorer.index.files import (
    BUILD_ONLY_NAMES,
    CODES_NAMES,
    EMBEDDINGS_NAME,
    PROGRESS_NAME,
    STATE_NAME,
)


class BuildFiles(NamedTuple):
    """The growing files of a build, appended chunk by chunk (``.npy`` once closed)."""

    embeddings: NpyAppender  # float16 [n_ok, d]
    indptr: NpyAppender  # int64 [n_ok + 1]
    ids: NpyAppender  # int32 [nnz]
    values: NpyAppender  # float16 [nnz]
    corpus_idx: NpyAppender  # int64 [n_ok], build-only (goes into items.parquet)
    n_active: NpyAppender  # int32 [n_ok], build-only

    @classmethod
    def open(cls, dpath: Path, d: int, rows: dict[str, int] | None) -> BuildFiles:
        """New files, or (``rows``, from a checkpoint) the partial ones cut to those counts."""
        rows = rows or {}
        specs = {
            "embeddings": (dpath / EMBEDDINGS_NAME, np.float16, (d,)),
            "indptr": (dpath / CODES_NAMES[0], np.int64, ()),
            "ids": (dpath / CODES_NAMES[1], np.int32, ()),
            "values": (dpath / CODES_NAMES[2], np.float16, ()),
            "corpus_idx": (dpath / BUILD_ONLY_NAMES["corpus_idx"], np.int64, ()),
            "n_active": (dpath / BUILD_ONLY_NAMES["n_active"], np.int32, ()),
        }
        out = cls(
            **{k: NpyAppender(*spec, resume_rows=rows.get(k, 0)) for k, spec in specs.items()}
        )
        if not rows:
            out.indptr.append(np.zeros(1, dtype=np.int64))
        return out

    def rows(self) -> dict[str, int]:
        return {name: appender.n_rows for name, appender in self._asdict().items()}

    def flush(self) -> None:
        for appender in self:
            appender.flush()


class Checkpoint(NamedTuple):
    """The contents of ``progress.json``: where a resumed build goes on from."""

    key: str  # the index's cache key: a checkpoint of another build is not resumed
    chunk_size: int
    n_chunks_done: int
    n_ok: int  # items encoded so far (unreadable ones skipped)
    rows: dict[str, int]  # row count of each of the BuildFiles
    skipped: list[dict]  # {"item_id", "source", "error"} per unreadable item so far
    timings: dict[str, float]  # seconds per build step so far


class Saved(NamedTuple):
    checkpoint: Checkpoint
    acc: LatentAccumulator


def save_checkpoint(
    dpath: Path, acc: LatentAccumulator, files: BuildFiles, checkpoint: Checkpoint
) -> None:
    """Files first, then the state that counts their rows: a crash in between only redoes the
    chunks since the previous checkpoint."""
    files.flush()
    atomic_save_npz(dpath / STATE_NAME, acc.state())
    atomic_write_json(dpath / PROGRESS_NAME, checkpoint._asdict())


def load_checkpoint(dpath: Path, key: str, chunk_size: int) -> Saved | None:
    """The last checkpoint in ``dpath``, None if there is none. ``ValueError`` saying why when
    it cannot be used: unreadable or damaged (a truncated ``state.npz``, a ``progress.json``
    that is not a checkpoint), or written for another key or chunk size."""
    progress_fpath = dpath / PROGRESS_NAME
    if not progress_fpath.is_file():
        return None
    try:
        checkpoint = Checkpoint(**json.loads(progress_fpath.read_text()))
        with np.load(dpath / STATE_NAME, allow_pickle=False) as arrays:
            acc = LatentAccumulator.from_state(dict(arrays))
    except (OSError, ValueError, KeyError, TypeError, EOFError, AssertionError, BadZipFile) as e:
        raise ValueError(f"its {PROGRESS_NAME} or {STATE_NAME} cannot be read: {e!r}") from e
    if checkpoint.key != key or checkpoint.chunk_size != chunk_size:
        raise ValueError("written with other settings")
    rows = checkpoint.rows
    if (
        not isinstance(rows, dict)
        or acc.n_items != checkpoint.n_ok
        or rows.get("embeddings") != acc.n_items
    ):
        raise ValueError("accumulator and progress disagree")
    return Saved(checkpoint, acc)
