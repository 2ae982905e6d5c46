"""MSAE ``.pth`` checkpoints, whose configuration lives in the file name.

The file holds ``{"model": state_dict, "mean_center", "scaling_factor", "target_norm"}`` with
``pre_bias [n_inputs]``, ``encoder [n_inputs, n_latents]``, ``latent_bias [n_latents]``,
``decoder [n_latents, n_inputs]`` (absent when tied) and ``latents_activation_frequency``.
Dimensions come from the tensors; the rest from the name, as MSAE's training writes it::

    {n_latents}_{n_inputs}_{activation}[_{k}|_{l1}][_RW|_UW]_{tied}_{normalize}_{soft_cap}_{dataset...}.pth

e.g. ``6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth``. A bare
``ReLU`` is followed by its L1 coefficient (``ReLU_003``), as MSAE's ``load_model`` expects.

Assumption: the name carries only the first k and the weighting. MSAE trains Matryoshka SAEs with
the nesting list doubling from k while below n_latents, then n_latents itself
(``64 -> (64, 128, ..., 4096, 6144)``); that list is rebuilt here. It only matters for
``latent_levels`` and further training, never for ``encode``/``decode``.

A renamed file (a name that does not parse) still loads: the activation falls back to ReLU (the
full latents of any TopKReLU SAE are exactly its ReLU latents), no soft cap, no normalisation,
tied taken from the weights -- with a warning saying so.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import torch

from sae_explorer.checkpoints.probe import Probe, as_float, require_tensors
from sae_explorer.checkpoints.registry import Detection
from sae_explorer.sae import (
    ACTIVATIONS,
    SAE,
    WEIGHTINGS,
    SAEConfig,
    doubling_nesting_list,
    relative_importance,
)

FORMAT = "msae-pth"


class MSAEName(NamedTuple):
    """Fields parsed from an MSAE checkpoint file name."""

    n_latents: int
    n_inputs: int
    activation: str
    k: int | None
    l1_coefficient: str | None
    weighting: str | None
    tied: bool
    normalize: bool
    soft_cap: float
    dataset: str


def _parse_bool(token: str, field: str) -> bool:
    if token not in {"True", "False"}:
        raise ValueError(f"expected True/False for {field}, got {token!r}")
    return token == "True"


def parse_msae_filename(fname: str | Path) -> MSAEName:
    """Parse an MSAE checkpoint name; ValueError naming the first token that does not fit."""
    stem = Path(fname).name
    for suffix in (".pth", ".pt"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    tokens = stem.split("_")
    pos = 0

    def take(field: str) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"MSAE file name {Path(fname).name!r} ends before {field}")
        pos += 1
        return tokens[pos - 1]

    def take_int(field: str) -> int:
        token = take(field)
        if not token.isdigit():
            raise ValueError(f"expected an integer {field}, got {token!r}")
        return int(token)

    n_latents = take_int("n_latents")
    n_inputs = take_int("n_inputs")
    activation = take("activation")
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; MSAE names use {sorted(ACTIVATIONS)}")
    k = l1 = weighting = None
    if ACTIVATIONS[activation].top_k:
        k = take_int("k")
    elif activation == "ReLU" and pos < len(tokens) and tokens[pos] not in {"True", "False"}:
        l1 = take("L1 coefficient")
    if pos < len(tokens) and tokens[pos] in WEIGHTINGS:
        weighting = take("weighting")
    tied = _parse_bool(take("tied"), "tied")
    normalize = _parse_bool(take("normalize"), "normalize")
    cap_token = take("soft_cap")
    try:
        soft_cap = float(cap_token)
    except ValueError as err:
        raise ValueError(f"expected a float soft cap, got {cap_token!r}") from err
    dataset = "_".join(tokens[pos:])
    return MSAEName(
        n_latents, n_inputs, activation, k, l1, weighting, tied, normalize, soft_cap, dataset
    )


def config_from_name(name: MSAEName, n_inputs: int, n_latents: int, tied: bool) -> SAEConfig:
    """SAEConfig from a parsed name and the dimensions/tying read off the tensors."""
    nesting = weights = None
    if name.weighting is not None:
        if name.k is None:
            raise ValueError(f"weighting {name.weighting} needs a TopK activation with k")
        nesting = doubling_nesting_list(name.k, n_latents)
        weights = relative_importance(name.weighting, len(nesting))
    return SAEConfig(
        n_inputs=n_inputs,
        n_latents=n_latents,
        activation=name.activation,
        k=name.k,
        nesting_list=nesting,
        relative_importance=weights,
        tied=tied,
        input_norm="layer_norm" if name.normalize else "none",
        soft_cap=name.soft_cap,
    )


def detect(probe: Probe) -> Detection:
    if probe.is_dir or probe.json_header is not None or probe.path.suffix == ".safetensors":
        return Detection(False, "not a pickled .pt/.pth file")
    ckpt, why = probe.state()
    if ckpt is None:
        return Detection(False, why)
    if "model" not in ckpt:
        return Detection(False, f"no 'model' entry (top-level keys {sorted(map(str, ckpt))[:12]})")
    return Detection(True)


def load(probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None) -> SAE:
    """Load an MSAE ``.pth``; ``probe.name`` is the file name parsed (e.g. a Hub path's)."""
    fpath, ckpt = probe.path, probe.contents
    if not isinstance(ckpt.get("model"), dict):
        raise ValueError(
            f"{fpath} is not an MSAE checkpoint: 'model' is a {type(ckpt['model']).__name__}, "
            f"not a state dict"
        )
    state = ckpt["model"]
    tied = "decoder" not in state or state["decoder"] is None
    names = ["pre_bias", "encoder", "latent_bias"] + ([] if tied else ["decoder"])
    tensors = require_tensors(state, names, f"MSAE state dict in {fpath.name}")
    if tensors["encoder"].ndim != 2:
        raise ValueError(
            f"MSAE encoder must be 2-d [n_inputs, n_latents], got {tuple(tensors['encoder'].shape)}"
        )
    n_inputs, n_latents = tensors["encoder"].shape
    missing_extra = [key for key in ("mean_center", "scaling_factor") if key not in ckpt]
    if missing_extra:
        raise ValueError(f"MSAE checkpoint {fpath.name} is missing {missing_extra}")
    mean = ckpt["mean_center"]
    tensors["mean"] = (
        mean if isinstance(mean, torch.Tensor) else torch.tensor(as_float(mean, "mean_center"))
    )
    scaling = as_float(ckpt["scaling_factor"], "scaling_factor")
    fname = probe.name
    try:
        name = parse_msae_filename(fname)
    except ValueError as err:
        warnings.warn(
            f"could not read the MSAE configuration from the file name {fname!r} ({err}); was it "
            f"renamed? Loading with safe defaults: activation=ReLU (same full latents as TopKReLU), "
            f"no soft cap, no per-sample normalisation, tied={tied} (from the weights), no nesting.",
            UserWarning,
            stacklevel=2,
        )
        cfg = SAEConfig(n_inputs, n_latents, activation="ReLU", tied=tied, scaling_factor=scaling)
        name = None
    else:
        if (name.n_inputs, name.n_latents) != (n_inputs, n_latents) or name.tied != tied:
            warnings.warn(
                f"MSAE file name {fname!r} says n_latents={name.n_latents}, n_inputs={name.n_inputs}, "
                f"tied={name.tied} but the weights have {n_latents}, {n_inputs}, tied={tied}; "
                f"using the weights",
                UserWarning,
                stacklevel=2,
            )
        cfg = config_from_name(name, n_inputs, n_latents, tied)
        cfg = SAEConfig.from_dict({**cfg.to_dict(), "scaling_factor": scaling})
    provenance: dict = {"msae_filename": fname}
    if "target_norm" in ckpt:
        provenance["msae_target_norm"] = as_float(ckpt["target_norm"], "target_norm")
    if name is not None:
        provenance["msae_dataset"] = name.dataset
        modality = next((t for t in name.dataset.split("_") if t in ("image", "text")), None)
        if modality is not None:
            provenance["training_modality"] = modality
        if name.l1_coefficient is not None:
            provenance["msae_l1_coefficient"] = name.l1_coefficient
    return SAE.from_tensors(
        cfg,
        tensors,
        source_format=FORMAT,
        source=str(fpath),
        provenance=provenance,
        device=device,
        dtype=dtype,
    )
