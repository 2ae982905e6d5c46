"""Corpus items as the pages list them: index rows with an ``item`` column and a display
``label``, a latent's strongest items of one modality, and the items nearest an embedding."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from sae_explorer.corpus import Modality

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer


def normalise_examples(df: pd.DataFrame) -> pd.DataFrame:
    """Name the item-index column ``item`` and give every row a display ``label``: the text
    itself for text items, the label (else the file name) for images."""
    df = df.rename(columns={"item_idx": "item"})
    assert "item" in df.columns, f"no item column in {list(df.columns)}"
    labels = df["label"] if "label" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["label"] = [
        str(src)
        if modality == "text"
        else (str(label) if isinstance(label, str) and label else Path(str(src)).name)
        for modality, src, label in zip(df["modality"], df["source"], labels)
    ]
    return df


def top_examples(explorer: Explorer, latent_id: int, m: int) -> pd.DataFrame:
    """The index's top list of one latent (both modalities): item, value, modality, label."""
    return normalise_examples(explorer.index.top_examples(latent_id, m))


SCAN_MAX_ROWS = 1_000_000
"""Above this many items of a modality, :func:`top_items` reads the index's top list instead
of scanning every stored embedding (at 10M items a scan reads 10 GB per page)."""


def top_items(explorer: Explorer, latent_id: int, n: int, modality: Modality) -> pd.DataFrame:
    """The ``n`` corpus items of one modality where the latent is strongest: item, value,
    modality, label. Recomputed from the stored embeddings (one latent: a matrix-vector
    product), because the index's top list mixes modalities and captions often fill it; above
    :data:`SCAN_MAX_ROWS` items of the modality, that modality's part of the top list (the
    same items, but at most ``top_m`` of both modalities together)."""
    rows = explorer.modality_rows[modality]
    if n <= 0 or rows.size == 0:
        return top_examples(explorer, latent_id, 0)
    if rows.size > SCAN_MAX_ROWS:
        top = top_examples(explorer, latent_id, None)
        return top[top["modality"] == modality].head(n).reset_index(drop=True)
    z_n = latent_activations(explorer, latent_id, rows, modality)
    order = np.argsort(-z_n, kind="stable")[:n]
    order = order[z_n[order] > 0]
    df = explorer.items.iloc[rows[order]].reset_index(drop=True)
    df.insert(0, "value", z_n[order])
    df.insert(0, "item", rows[order])
    return normalise_examples(df)


@torch.inference_mode()
def latent_activations(
    explorer: Explorer, latent_id: int, rows: np.ndarray, modality: Modality, chunk: int = 65536
) -> np.ndarray:
    """Activation of one latent on the stored embeddings of ``rows``, all items of
    ``modality`` (float32 [n]), as the SAE's ``encode`` gives it (with that modality's input
    statistics); only this latent's encoder column is computed unless the SAE selects TopK
    at inference (then whole rows are encoded, in smaller chunks)."""
    sae, out = explorer.saes.of(modality), []
    if sae.cfg.inference == "topk":
        chunk = min(chunk, max(256, (1 << 24) // sae.n_latents))
    for lo in range(0, len(rows), chunk):
        x_bd = torch.as_tensor(np.asarray(explorer.index.embeddings[rows[lo : lo + chunk]]))
        z_b1 = sae.latent_activations(x_bd.float().to(sae.device), [latent_id])
        out.append(z_b1[:, 0].float().cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def neighbours(
    explorer: Explorer,
    x_d: torch.Tensor | np.ndarray,
    k: int = 8,
    modality: Modality | None = None,
) -> pd.DataFrame:
    """Nearest corpus items by cosine (of one modality if given): item, cosine, modality, label."""
    x_d = np.asarray(x_d, dtype=np.float32)
    nearest = explorer.index.nearest(x_d, k, modality)
    df = normalise_examples(nearest.rename(columns={"similarity": "value"}))
    return pd.DataFrame(
        {
            "item": df["item"].astype(int).to_numpy(),
            "cosine": df["value"].astype(np.float64).round(4).to_numpy(),
            "modality": df["modality"].to_numpy(),
            "label": df["label"].to_numpy(),
        }
    )
