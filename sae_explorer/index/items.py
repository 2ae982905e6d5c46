"""The items table of an index (``items.parquet``): one row per indexed item, written in row
groups of :data:`ROWS_PER_GROUP` and read lazily (:class:`ItemTable`): a page reads the rows it
shows and the columns it filters on, never the whole table; from :data:`ARROW_MIN_ITEMS` items
through a memory-mapped Arrow IPC copy (``items.arrow``, checked against the Parquet file's
checksum and rewritten when it does not match), below by Parquet row group."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd

from sae_explorer.atomic import atomic_path
from sae_explorer.index.files import ITEMS_ARROW_NAME, ITEMS_NAME, CorruptIndexError

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sae_explorer.corpus import CorpusItem

log = logging.getLogger(__name__)
T = TypeVar("T")

ROWS_PER_GROUP = 8192
"""Rows per Parquet row group: what reading one item costs (at 10M items, ~1,200 groups)."""
GROUPS_CACHED = 64
"""Row groups an :class:`ItemTable` keeps decoded as DataFrames (the last ones read): all of
an index below :data:`ARROW_MIN_ITEMS`, a few MB."""
ARROW_MIN_ITEMS = 100_000
"""From this many items, an index is served from a memory-mapped Arrow copy of its items table
(``items.arrow``, written once): reading the row groups of 40 random rows out of 10M costs more
than a page may."""
ARROW_BATCH_ROWS = 1 << 20
"""Rows per record batch of ``items.arrow``: an open reads every batch's header, cold from
disk (~1,200 scattered reads at 10M items had it been one batch per row group, ~0.5 s); a
page's rows are taken batch by batch, so a batch's size costs a read nothing."""
REQUIRED_COLUMNS = ("item_id", "modality", "source")
MODALITY_DTYPE = pd.CategoricalDtype(["image", "text"])
"""The ``modality`` column as read, whole or by row group (Parquet keeps only the values a
row group uses)."""


def with_modality_dtype(df: pd.DataFrame) -> pd.DataFrame:
    df["modality"] = df["modality"].astype(MODALITY_DTYPE)
    return df


def items_table(
    items: Sequence[CorpusItem],
    corpus_idx_n: np.ndarray,
    n_active_n: np.ndarray,
    attribute_names: Sequence[str] = (),
) -> pa.Table:
    """The items table of the items at corpus positions ``corpus_idx_n`` (Arrow): corpus
    columns, ``n_active``, ground truth as ``attr_*`` (one per ``attribute_names``). Built with
    pyarrow alone: pandas would add its import and a copy of every string to the build's peak
    memory. Every column's type is fixed, so row groups written apart share one schema."""
    import pyarrow as pa

    chosen = [items[int(i)] for i in corpus_idx_n]
    modalities = ["image", "text"]
    modality_n = np.array([it.modality == "text" for it in chosen], dtype=np.int8)
    columns = {
        "item_id": pa.array([it.item_id for it in chosen], pa.string()),
        "modality": pa.DictionaryArray.from_arrays(modality_n, pa.array(modalities)),
        "source": pa.array([it.source for it in chosen], pa.string()),
        "label": pa.array([it.label for it in chosen], pa.string()),
        "corpus_idx": pa.array(corpus_idx_n.astype(np.int64)),
        "n_active": pa.array(n_active_n.astype(np.int32)),
    }
    for name in attribute_names:
        values = [(it.attributes or {}).get(name) for it in chosen]
        columns[f"attr_{name}"] = pa.array(values, pa.string())
    return pa.table(columns)


def attribute_names(items: Sequence[CorpusItem], corpus_idx_n: np.ndarray) -> list[str]:
    """The ground-truth attributes any of the chosen items has, in first-seen order."""
    names: dict[str, None] = {}
    for i in corpus_idx_n:
        names.update(dict.fromkeys(items[int(i)].attributes or ()))
    return list(names)


def write_items(
    dpath: Path, items: Sequence[CorpusItem], corpus_idx_n: np.ndarray, n_active_n: np.ndarray
) -> None:
    """Write ``items.parquet`` for the items at corpus positions ``corpus_idx_n``, one row
    group at a time (the build never holds the whole table)."""
    import pyarrow.parquet as pq

    names = attribute_names(items, corpus_idx_n)
    with atomic_path(dpath / ITEMS_NAME) as tmp:
        writer = None
        try:
            for lo in range(0, max(len(corpus_idx_n), 1), ROWS_PER_GROUP):
                part = slice(lo, lo + ROWS_PER_GROUP)
                table = items_table(items, corpus_idx_n[part], n_active_n[part], names)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, table.schema)
                writer.write_table(table, row_group_size=ROWS_PER_GROUP)
        finally:
            if writer is not None:
                writer.close()


def write_items_arrow(dpath: Path, items_sha256: str) -> None:
    """``items.arrow``: ``items.parquet`` as an uncompressed Arrow IPC file that a reader
    memory-maps (any row in microseconds, no row group decoded), in record batches of
    :data:`ARROW_BATCH_ROWS` rows (row groups gathered, one batch in memory at a time) and
    stamped with the Parquet file's checksum, its row count and the batch size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = pq.ParquetFile(Path(dpath) / ITEMS_NAME)
    stamp = arrow_stamp(items_sha256, source.metadata.num_rows)
    schema = source.schema_arrow.with_metadata(stamp)
    with atomic_path(Path(dpath) / ITEMS_ARROW_NAME) as tmp, pa.ipc.new_file(tmp, schema) as writer:
        gathered: list[pa.Table] = []  # fewer than ARROW_BATCH_ROWS rows between batches
        for g in range(source.metadata.num_row_groups):
            gathered.append(source.read_row_group(g).replace_schema_metadata(stamp))
            last = g == source.metadata.num_row_groups - 1
            while gathered and (last or sum(map(len, gathered)) >= ARROW_BATCH_ROWS):
                whole = pa.concat_tables(gathered).combine_chunks()
                writer.write_batch(whole.slice(0, ARROW_BATCH_ROWS).to_batches()[0])
                rest = whole.slice(ARROW_BATCH_ROWS)
                gathered = [rest] if len(rest) else []


def arrow_stamp(items_sha256: str, n_items: int) -> dict[bytes, bytes]:
    """What ``items.arrow`` is a copy of, and how it is laid out."""
    return {
        b"items_sha256": items_sha256.encode(),
        b"n_items": str(n_items).encode(),
        b"batch_rows": str(ARROW_BATCH_ROWS).encode(),
    }


def open_items_arrow(dpath: Path, items_sha256: str, n_items: int) -> pa.Table | str:
    """The memory-mapped ``items.arrow`` of an index whose ``items.parquet`` has the checksum
    ``items_sha256``, or why it cannot serve (missing, unreadable, of another table)."""
    import pyarrow as pa

    fpath = Path(dpath) / ITEMS_ARROW_NAME
    if not fpath.is_file():
        return f"there is no {ITEMS_ARROW_NAME}"
    try:
        table = pa.ipc.open_file(pa.memory_map(str(fpath))).read_all()
    except (OSError, pa.ArrowInvalid) as e:
        return f"{ITEMS_ARROW_NAME} cannot be read ({e})"
    stamp = table.schema.metadata or {}
    found = (stamp.get(b"items_sha256", b"").decode(), len(table))
    if found != (items_sha256, n_items):
        return (
            f"{ITEMS_ARROW_NAME} holds {found[1]} rows copied from items with checksum "
            f"{found[0][:12]!r}; the index has {n_items} rows with checksum {items_sha256[:12]!r}"
        )
    return table


def stale_layout(table: pa.Table) -> str | None:
    """Why an ``items.arrow`` of the right rows is laid out other than it is written now (one
    batch per row group, before :data:`ARROW_BATCH_ROWS`), or None."""
    found = (table.schema.metadata or {}).get(b"batch_rows", b"one per row group").decode()
    if found == str(ARROW_BATCH_ROWS):
        return None
    return f"{ITEMS_ARROW_NAME} is in batches of {found} rows, not {ARROW_BATCH_ROWS}"


class ItemTable:
    """The items table read lazily, with the part of the ``pandas.DataFrame`` interface the
    explorer uses: ``len``, ``columns``, ``iloc[rows]`` and ``table[column]`` (one whole
    column, read once). Rows come from ``arrow`` (the memory-mapped ``items.arrow``) when given,
    else from ``items.parquet``'s row groups holding them (:data:`GROUPS_CACHED` kept). Rows and
    columns equal the eager table's (``pq.read_table(...).to_pandas()``)."""

    def __init__(self, fpath: Path, n_items: int, arrow: pa.Table | None = None) -> None:
        self.fpath, self.arrow, self.file = Path(fpath), arrow, None
        self._batches = [] if arrow is None else arrow.to_batches()  # zero-copy views
        if arrow is None:  # the Parquet footer is only read where it serves
            self.file = self._open_parquet()
            meta = self.file.metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            names = self.file.schema_arrow.names
        else:
            sizes, names = [b.num_rows for b in self._batches], arrow.schema.names
        if sum(sizes) != n_items or not set(REQUIRED_COLUMNS) <= set(names):
            raise CorruptIndexError(
                f"{ITEMS_NAME} in {self.fpath.parent} has {sum(sizes)} rows "
                f"and columns {names}; expected {n_items} rows of items"
            )
        self.part_starts = _starts(sizes)
        """Each part's first row, the row count last: the record batches of ``arrow`` when
        it serves, else the Parquet file's row groups."""
        self.columns = pd.Index(names)
        self.iloc = _Rows(self)
        self._groups: OrderedDict[int, pd.DataFrame] = OrderedDict()
        self._columns: dict[str, pd.Series] = {}

    def _open_parquet(self) -> pq.ParquetFile:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.fpath)
        except Exception as e:  # pyarrow raises its own kinds for a damaged file
            raise CorruptIndexError(f"cannot read {ITEMS_NAME} in {self.fpath.parent}: {e}") from e

    def __len__(self) -> int:
        return int(self.part_starts[-1])

    def __repr__(self) -> str:
        return f"ItemTable({str(self.fpath)!r}, n_items={len(self)})"

    def _group(self, g: int) -> pd.DataFrame:
        """Row group ``g`` as a DataFrame (its own index 0..): decoded and converted once, so
        a page's rows are a pandas ``take``, not an Arrow-to-pandas conversion per request."""
        if g in self._groups:
            self._groups.move_to_end(g)
            return self._groups[g]
        try:
            frame = _frame(self.file.read_row_group(g))
        except Exception as e:
            raise CorruptIndexError(f"cannot read {ITEMS_NAME} in {self.fpath.parent}: {e}") from e
        self._groups[g] = frame
        if len(self._groups) > GROUPS_CACHED:
            self._groups.popitem(last=False)
        return frame

    def rows(self, rows_n: np.ndarray) -> pd.DataFrame:
        """The rows ``rows_n`` (in that order, repeats kept), index 0..len-1. Each row is taken
        from the part holding it (a record batch of ``items.arrow``, a row group of the Parquet
        file): a take over the whole memory-mapped table would cross every one of its
        ~1,200 batches at 10M items (~60 ms a page)."""
        rows_n = np.asarray(rows_n, dtype=np.int64).reshape(-1)
        if rows_n.size and (rows_n.min() < -len(self) or rows_n.max() >= len(self)):
            raise IndexError(f"item rows must be in [0, {len(self)}), got {rows_n}")
        rows_n = np.where(rows_n < 0, rows_n + len(self), rows_n)
        if self.arrow is not None:
            import pyarrow as pa

            if rows_n.size == 0:
                return _frame(self.arrow.slice(0, 0))
            batches = self._batches
            parts, inverse = _by_part(self.part_starts, rows_n, lambda b, i: batches[b].take(i))
            return _frame(pa.Table.from_batches(parts).take(inverse))
        if rows_n.size == 0:
            return self._group(0).iloc[:0]
        parts, inverse = _by_part(self.part_starts, rows_n, lambda g, i: self._group(g).take(i))
        return pd.concat(parts, ignore_index=True).take(inverse).reset_index(drop=True)

    def __getitem__(self, column: str) -> pd.Series:
        """One whole column (read once, then kept)."""
        if column not in self._columns:
            if column not in self.columns:
                raise KeyError(column)
            if self.arrow is not None:
                table = self.arrow.select([column])
            else:
                table = self.file.read(columns=[column])
            series = table.combine_chunks().to_pandas()[column]
            self._columns[column] = (
                series.astype(MODALITY_DTYPE) if column == "modality" else series
            )
        return self._columns[column]


def _starts(sizes: Sequence[int]) -> np.ndarray:
    """Each part's first row, and the total last (parts of ``sizes`` rows, in order)."""
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def _by_part(
    starts_p: np.ndarray, rows_n: np.ndarray, take: Callable[[int, np.ndarray], T]
) -> tuple[list[T], np.ndarray]:
    """``rows_n`` taken part by part (``starts_p``: each part's first row): ``take(part, local
    rows)`` for each part holding some, in part order, and the order that puts the rows taken
    back as asked."""
    part_n = np.searchsorted(starts_p, rows_n, side="right") - 1
    order = np.argsort(part_n, kind="stable")
    parts = [
        take(int(p), rows_n[order][part_n[order] == p] - starts_p[p]) for p in np.unique(part_n)
    ]
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return parts, inverse


def _frame(table: pa.Table) -> pd.DataFrame:
    return with_modality_dtype(table.combine_chunks().to_pandas())


class _Rows:
    """``ItemTable.iloc``: an int gives one row (a Series), anything else a DataFrame."""

    def __init__(self, table: ItemTable) -> None:
        self.table = table

    def __getitem__(self, rows) -> pd.DataFrame | pd.Series:
        if isinstance(rows, (int, np.integer)):
            row = int(rows) + (len(self.table) if rows < 0 else 0)
            return self.table.rows(np.array([row])).iloc[0].rename(row)
        if isinstance(rows, slice):
            rows = np.arange(len(self.table))[rows]
        return self.table.rows(np.asarray(rows))


def open_item_table(dpath: Path, n_items: int, items_sha256: str) -> ItemTable:
    """The items table of an index as it is served: from :data:`ARROW_MIN_ITEMS` items through
    ``items.arrow``, else by row group (:func:`served_arrow`)."""
    dpath = Path(dpath)
    arrow = served_arrow(dpath, n_items, items_sha256) if n_items >= ARROW_MIN_ITEMS else None
    return ItemTable(dpath / ITEMS_NAME, n_items, arrow)


def served_arrow(dpath: Path, n_items: int, items_sha256: str) -> pa.Table | None:
    """``items.arrow``, written first when it is missing, does not match ``items.parquet`` (a
    mismatch is logged, never served) or is laid out as before (then served as it is where it
    cannot be written: the same rows, a slower open); None where there is none to serve (the
    Parquet file is read by row group)."""
    opened = open_items_arrow(dpath, items_sha256, n_items)
    why = opened if isinstance(opened, str) else stale_layout(opened)
    if why is None:
        return opened
    if (dpath / ITEMS_ARROW_NAME).exists():
        log.warning("not serving %s in %s: %s; writing it again", ITEMS_ARROW_NAME, dpath, why)
    try:
        write_items_arrow(dpath, items_sha256)
        written = open_items_arrow(dpath, items_sha256, n_items)
    except OSError as e:  # a read-only cache
        written = f"it could not be written ({e})"
    if not isinstance(written, str):
        return written
    if not isinstance(opened, str):
        log.warning("serving %s in %s as it is: %s", ITEMS_ARROW_NAME, dpath, written)
        return opened
    log.warning("items of %s read by Parquet row group: %s", dpath, written)
    return None
