"""The Compare view: the loaded SAE against a second SAE of the same CLIP, latents matched by
decoder cosine and correlated over the index's cached embeddings (``sae_explorer.latent_matching``
does the work; this module feeds it the explorer's SAE, as each modality sees it, and corpus)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sae_explorer.latent_matching import (
    CompareConfig,
    SAEComparison,
    check_widths,
    compare_saes,
    modality_saes,
)
from sae_explorer.sae import SAE

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer
    from sae_explorer.progress import Progress


def compare_sae(
    explorer: Explorer,
    other: SAE | str | Path,
    config: CompareConfig | None = None,
    progress: Progress | None = None,
) -> SAEComparison:
    """The loaded SAE (A) against ``other`` (B: an SAE, or any source ``load_sae`` reads), over
    every indexed item; B encodes each modality as the index would have encoded it."""
    if not isinstance(other, SAE):
        from sae_explorer.checkpoints import load_sae

        if not str(other).strip():
            raise ValueError(
                "give a second SAE: a folder, a file, hf-hub:org/repo/path or builtin:"
            )
        other = load_sae(str(other).strip())
    check_widths(explorer.sae, other)
    x_nd = explorer.index.embeddings
    is_image_n = (explorer.items["modality"] == "image").to_numpy()
    other_saes = modality_saes(other.eval(), x_nd, is_image_n)
    config = config or CompareConfig()
    return compare_saes(explorer.saes, other_saes, np.asarray(x_nd), is_image_n, config, progress)
