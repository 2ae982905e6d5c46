"""The corpus labels of a latent's examples: which labels its top examples carry, how pure they
are, and how the mix changes from its weakest to its strongest activations.

Label purity, here and in the latent browser, is the share of the most common label among the
latent's *labelled* top examples (the index's top list, both modalities): 1.0 when every labelled
top example has the same label; NaN when none of them has a label (a corpus without labels).
Unlabelled items are left out of the share rather than counted as a label of their own, so a
corpus whose images are labelled and whose captions are not is judged on its images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from sae_explorer.explorer import plots, queries

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

N_BINS = 5
"""Activation-quantile bins of a latent's random active sample (bin 0: weakest)."""
MAX_LABELS_SHOWN = 8
"""Labels drawn in the bars; the rest are summed as ``OTHER``."""
OTHER = "(other)"
TOP_GROUP = "top examples"


class LabelCodes(NamedTuple):
    """Every item's label as an integer code: ``code_n[i]`` indexes ``labels``, -1 for none."""

    code_n: np.ndarray  # int64 [n_items]
    labels: np.ndarray  # object [n_codes], in order of first appearance


class Purity(NamedTuple):
    """The label make-up of a latent's top examples."""

    purity: float  # share of top_label among the labelled top examples; NaN when none is labelled
    top_label: str | None  # the most common label (ties: the one seen first in the corpus)
    n_labelled: int  # top examples that carry a label


class LabelMix(NamedTuple):
    """A latent's label mix: its top examples and each activation-quantile bin."""

    table: pd.DataFrame  # group, label, count, share (of the group's labelled items)
    purity: Purity
    figure: go.Figure  # stacked bars, one per group


def label_codes(explorer: Explorer) -> LabelCodes:
    """The items' labels as codes (an empty or missing label is no label); the explorer keeps
    them as ``explorer.label_codes``, computed once."""
    if "label" not in explorer.items.columns:
        return LabelCodes(np.full(len(explorer.items), -1, dtype=np.int64), np.zeros(0, object))
    raw = explorer.items["label"].astype(object)
    raw = raw.where(raw.map(lambda v: isinstance(v, str) and v != ""), None)
    code_n, labels = pd.factorize(raw, use_na_sentinel=True)
    return LabelCodes(code_n.astype(np.int64), np.asarray(labels, dtype=object))


def item_labels(explorer: Explorer, item_n: np.ndarray) -> list[str | None]:
    """The label of each item (index rows), None where it has none."""
    codes = explorer.label_codes
    code_n = codes.code_n[np.asarray(item_n, dtype=np.int64)]
    return [None if c < 0 else str(codes.labels[c]) for c in code_n]


def purity_l(top_idx_lm: np.ndarray, codes: LabelCodes) -> tuple[np.ndarray, np.ndarray]:
    """Purity (float64, NaN: no labelled top example) and top label code (-1: none) of every row
    of ``top_idx_lm`` (item indices, -1 for an empty slot), vectorised over the rows."""
    top_idx_lm = np.asarray(top_idx_lm, dtype=np.int64)
    n_rows = len(top_idx_lm)
    code_lm = np.where(top_idx_lm >= 0, codes.code_n[np.maximum(top_idx_lm, 0)], -1)
    n_labelled_l = (code_lm >= 0).sum(axis=1)
    purity = np.full(n_rows, np.nan)
    top_code = np.full(n_rows, -1, dtype=np.int64)
    n_codes = max(len(codes.labels), 1)
    rows, cols = np.nonzero(code_lm >= 0)
    if len(rows) == 0:
        return purity, top_code
    keys, counts = np.unique(rows * n_codes + code_lm[rows, cols], return_counts=True)
    key_rows, key_codes = keys // n_codes, keys % n_codes
    order = np.lexsort((key_codes, -counts, key_rows))  # per row: most counts, then first seen
    first = order[np.r_[True, np.diff(key_rows[order]) != 0]]
    purity[key_rows[first]] = counts[first] / n_labelled_l[key_rows[first]]
    top_code[key_rows[first]] = key_codes[first]
    return purity, top_code


def purity(explorer: Explorer, latent_id: int) -> Purity:
    """The purity of one latent's top examples (the browser's ``label_purity`` column)."""
    top_idx = np.asarray(explorer.index.top_idx_lm[latent_id], dtype=np.int64)
    codes = explorer.label_codes
    value, code = purity_l(top_idx[None, :], codes)
    top_idx = top_idx[top_idx >= 0]
    n_labelled = int((codes.code_n[top_idx] >= 0).sum())
    top_label = None if code[0] < 0 else str(codes.labels[code[0]])
    return Purity(float(value[0]), top_label, n_labelled)


def label_mix(explorer: Explorer, latent_id: int, n_bins: int = N_BINS) -> LabelMix:
    """The labels of the latent's top examples and of each activation-quantile bin of its random
    active sample (every sampled item, not only the few the page shows)."""
    latent_id = queries.check_latent(explorer, latent_id)
    top = np.asarray(explorer.index.top_idx_lm[latent_id], dtype=np.int64)
    sample, bins = explorer.index.sample_bins(latent_id, n_bins)
    groups = [(TOP_GROUP, top[top >= 0])]
    groups += [(bin_name(b, n_bins), sample[bins == b]) for b in range(n_bins - 1, -1, -1)]
    groups = [(name, items) for name, items in groups if len(items)]
    table = mix_table(explorer.label_codes, groups)
    fig = plots.label_mix_bars(shown_mix(table), latent_id)
    return LabelMix(table, purity(explorer, latent_id), fig)


def bin_name(b: int, n_bins: int) -> str:
    """``"q5/5 (strongest)"`` ... ``"q1/5 (weakest)"``: bins of equal counts, by activation."""
    tail = " (strongest)" if b == n_bins - 1 else " (weakest)" if b == 0 else ""
    return f"q{b + 1}/{n_bins}{tail}"


def mix_table(codes: LabelCodes, groups: list[tuple[str, np.ndarray]]) -> pd.DataFrame:
    """group, label, count, share: each group's labelled items (index rows) counted by label,
    most first."""
    n_codes = len(codes.labels)
    parts = []
    for name, items in groups:
        code = codes.code_n[items]
        counts = np.bincount(code[code >= 0], minlength=n_codes)
        order = np.argsort(-counts, kind="stable")
        order = order[counts[order] > 0]
        total = max(int(counts.sum()), 1)
        parts.append((name, codes.labels[order], counts[order], np.round(counts[order] / total, 4)))
    return pd.DataFrame(
        {
            "group": np.concatenate([[n] * len(c) for n, _, c, _ in parts]) if parts else [],
            "label": np.concatenate([lab for _, lab, _, _ in parts]) if parts else [],
            "count": np.concatenate([c for _, _, c, _ in parts]) if parts else [],
            "share": np.concatenate([s for _, _, _, s in parts]) if parts else [],
        },
        columns=["group", "label", "count", "share"],
    ).astype({"count": np.int64, "share": np.float64, "label": object, "group": object})


def shown_mix(table: pd.DataFrame, max_labels: int = MAX_LABELS_SHOWN) -> pd.DataFrame:
    """The table with all but the ``max_labels`` most common labels summed into ``OTHER``."""
    if table["label"].nunique() <= max_labels:
        return table
    keep = table.groupby("label")["count"].sum().nlargest(max_labels).index
    shown = table.assign(label=table["label"].where(table["label"].isin(keep), OTHER))
    return shown.groupby(["group", "label"], sort=False, as_index=False)[["count", "share"]].sum()
