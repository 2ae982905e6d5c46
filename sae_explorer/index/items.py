"""The items table of an index (``items.parquet``): one row per indexed item."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sae_explorer.atomic import atomic_path
from sae_explorer.index.files import ITEMS_NAME

if TYPE_CHECKING:
    import pyarrow as pa

    from sae_explorer.corpus import CorpusItem


def items_table(
    items: Sequence[CorpusItem], corpus_idx_n: np.ndarray, n_active_n: np.ndarray
) -> pa.Table:
    """The items table of an index (Arrow): corpus columns, ``n_active``, ground truth as
    ``attr_*``. Built with pyarrow alone: pandas would add its import and a copy of every
    string to the build's peak memory."""
    import pyarrow as pa

    chosen = [items[int(i)] for i in corpus_idx_n]
    modalities = ["image", "text"]
    modality_n = np.array([it.modality == "text" for it in chosen], dtype=np.int8)
    columns = {
        "item_id": pa.array([it.item_id for it in chosen], pa.string()),
        "modality": pa.DictionaryArray.from_arrays(modality_n, pa.array(modalities)),
        "source": pa.array([it.source for it in chosen], pa.string()),
        "label": pa.array([it.label for it in chosen]),
        "corpus_idx": pa.array(corpus_idx_n.astype(np.int64)),
        "n_active": pa.array(n_active_n.astype(np.int32)),
    }
    names: dict[str, None] = {}
    for it in chosen:
        names.update(dict.fromkeys(it.attributes or ()))
    for name in names:
        columns[f"attr_{name}"] = pa.array([(it.attributes or {}).get(name) for it in chosen])
    return pa.table(columns)


def write_items(
    dpath: Path, items: Sequence[CorpusItem], corpus_idx_n: np.ndarray, n_active_n: np.ndarray
) -> None:
    """Write ``items.parquet`` for the items at corpus positions ``corpus_idx_n``."""
    import pyarrow.parquet as pq

    with atomic_path(dpath / ITEMS_NAME) as tmp:
        pq.write_table(items_table(items, corpus_idx_n, n_active_n), tmp)
