"""The explorer's model steps, batched across concurrent requests (:mod:`sae_explorer.batching`):
a text's CLIP embedding, an image's, and the SAE's pass over one input (its latents, their
Matryoshka levels, the reconstruction and its cosine at each level). Each request asks for its
own input's row; requests that arrive together share one call (the towers run them as one batch,
the SAE one row at a time, so its numbers never depend on the batch). A single caller gets its
result at once (no wait window unless one is configured)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from PIL import Image

from sae_explorer.batching import BatchStats, MicroBatcher
from sae_explorer.corpus import Modality
from sae_explorer.explorer import quality

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

MAX_BATCH = 16
"""Inputs in one batched call at most (the built-in world's and ViT-L/14's towers both gain
little beyond it on a CPU)."""


class SaeRow(NamedTuple):
    """The SAE's pass over one input (CLIP space except the latents)."""

    z_l: torch.Tensor  # [n_latents] full latents (what Inspect ranks)
    levels_l: torch.Tensor  # [n_latents] first Matryoshka level keeping each latent (-1: none)
    code_l0: int  # active latents in the SAE's own sparse code
    x_hat_d: torch.Tensor  # [n_inputs] reconstruction
    level_cosines_v: np.ndarray  # [n_levels] cosine of the input with each level's reconstruction


@torch.inference_mode()
def sae_row(explorer: Explorer, modality: Modality, x_1d: torch.Tensor) -> SaeRow:
    """The SAE's pass over one input of ``modality`` (``x_1d`` is a batch of one)."""
    sae = explorer.sae_of(modality)
    out = sae.forward(x_1d)
    levels_l = sae.latent_levels(out.z_bl)[0]
    code_l0 = int((out.codes_bl[0] != 0).sum())
    cosine_v = quality.level_metrics(explorer, x_1d, modality).cosine_vb[:, 0]
    return SaeRow(out.z_bl[0], levels_l, code_l0, out.x_hat_bd[0], cosine_v)


def sae_rows(explorer: Explorer, modality: Modality, x_bd: torch.Tensor) -> list[SaeRow]:
    """The SAE's pass over a batch of inputs of ``modality``, one row each, each row computed
    on its own: a [b, d] product rounds differently from a [1, d] one (by ~1e-6), and what
    Inspect shows for an input must not depend on who else asked at the same moment. The rows
    still share one worker (no thread oversubscription); beside the CLIP tower the SAE's
    one-row passes cost little (768 -> 24,576 latents: ~10 ms a row on a 2-core CPU)."""
    return [sae_row(explorer, modality, x_bd[i : i + 1]) for i in range(len(x_bd))]


class Batchers:
    """One batcher per model step of one explorer."""

    def __init__(self, explorer: Explorer, max_batch: int = MAX_BATCH, wait_s: float = 0.0):
        encoder = explorer.encoder

        def texts(batch: list[str]) -> Sequence[np.ndarray]:
            return list(encoder.encode_texts(batch).numpy().astype(np.float32))

        def images(batch: list[Image.Image]) -> Sequence[np.ndarray]:
            return list(encoder.encode_images(batch).numpy().astype(np.float32))

        def sae_of(modality: Modality) -> MicroBatcher[np.ndarray, SaeRow]:
            def run(batch: list[np.ndarray]) -> list[SaeRow]:
                x_bd = torch.as_tensor(np.stack(batch), dtype=torch.float32)
                return sae_rows(explorer, modality, x_bd)

            return MicroBatcher(run, max_batch, wait_s)

        self.text: MicroBatcher[str, np.ndarray] = MicroBatcher(texts, max_batch, wait_s)
        """A text's raw CLIP embedding [n_inputs] float32."""
        self.image: MicroBatcher[Image.Image, np.ndarray] = MicroBatcher(images, max_batch, wait_s)
        """A checked image's raw CLIP embedding [n_inputs] float32."""
        self.sae: dict[Modality, MicroBatcher[np.ndarray, SaeRow]] = {
            m: sae_of(m) for m in ("image", "text")
        }
        """The SAE's pass over a raw embedding, as inputs of each modality see it."""

    def all(self) -> dict[str, MicroBatcher]:
        return {
            "text": self.text,
            "image": self.image,
            **{f"sae_{m}": b for m, b in self.sae.items()},
        }

    def configure(self, max_batch: int, wait_s: float) -> None:
        """Every batcher's batch size and wait window (``ValueError`` when out of range)."""
        for batcher in self.all().values():
            batcher.configure(max_batch, wait_s)

    def stats(self) -> dict[str, BatchStats]:
        return {name: b.stats() for name, b in self.all().items()}
