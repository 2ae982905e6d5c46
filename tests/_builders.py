"""Builders of small SAE checkpoints that several test files write."""

from __future__ import annotations

from pathlib import Path

import torch

from sae_explorer.startup_config import StartupConfig
from sae_explorer.worlds import shapes


def write_msae_pth(fpath: Path, n_inputs: int = 64, n_latents: int = 128, seed: int = 0) -> Path:
    """A random MSAE ``.pth`` (``{"model", "mean_center", "scaling_factor"}``) at ``fpath``,
    whose name says its configuration as MSAE's file names do."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        "pre_bias": torch.randn(n_inputs, generator=gen) * 0.1,
        "encoder": torch.randn(n_inputs, n_latents, generator=gen) * 0.3,
        "latent_bias": torch.randn(n_latents, generator=gen) * 0.1,
        "decoder": torch.randn(n_latents, n_inputs, generator=gen) * 0.3,
        "latents_activation_frequency": torch.zeros(n_latents, dtype=torch.int64),
    }
    fpath.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state, "mean_center": 0.0, "scaling_factor": 1.0}, fpath)
    return fpath


def tiny_startup_cfg(tmp_path: Path, **overrides) -> StartupConfig:
    """Auto SAE selection over the world's tiny CLIP architecture (random weights, no download)."""
    values = dict(
        clip=shapes.CLIP_ARCH,
        pretrained=None,
        sae="auto",
        corpus="builtin:shapes?n=20",
        cache_dir=str(tmp_path / "explorer-cache"),
        device="cpu",
    )
    return StartupConfig(**{**values, **overrides})
