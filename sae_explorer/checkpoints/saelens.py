"""SAELens checkpoints: a folder with ``cfg.json`` and ``sae_weights.safetensors``, read the way
SAELens' own ``SAE.load_from_disk`` reads them (SAELens 6, with its handling of pre-6.0 configs).

Weights ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``
(``threshold [d_sae]`` for JumpReLU). SAELens encodes ``act((norm(x) - b_dec) @ W_enc + b_enc)``
and decodes ``denorm(z @ W_dec + b_dec)``; this module turns each setting into the same
computation in :class:`~sae_explorer.sae.SAE`:

- ``apply_b_dec_to_input=False`` (``act(norm(x) @ W_enc + b_enc)``): the same model with
  ``latent_bias = b_enc + b_dec @ W_enc``;
- ``rescale_acts_by_decoder_norm`` (topk, abstopk: pre-activations times ``|W_dec|`` per latent,
  codes divided by it before decoding): folded into the weights as SAELens' own
  ``fold_W_dec_norm`` does (``W_enc * n``, ``b_enc * n``, ``W_dec / n``), which changes neither
  ``encode`` nor ``decode``;
- ``normalize_activations``: ``layer_norm`` and ``constant_norm_rescale`` become the SAE's
  ``input_norm``; ``none``, ``expected_average_only_in`` and ``covariance_whitening`` are no-ops
  in SAELens at inference (the scaling or whitening is folded into the weights when saved), and
  so here; pre-6.0 booleans read as SAELens reads them;
- architectures ``standard`` (ReLU), ``topk`` (TopK then ReLU), ``abstopk`` (TopK of |pre|, signed
  values) and ``jumprelu`` (ReLU where pre > threshold), with ``encode`` returning the codes
  SAELens returns; BatchTopK and Matryoshka BatchTopK training runs are saved as ``jumprelu``, and
  a Matryoshka save's ``matryoshka_widths`` become the SAE's levels (nested by dictionary width).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from sae_explorer.checkpoints.probe import Probe, require_tensors
from sae_explorer.checkpoints.registry import Detection
from sae_explorer.sae import SAE, SAEConfig

logger = logging.getLogger(__name__)

FORMAT = "saelens"
CFG_FNAME = "cfg.json"
WEIGHTS_FNAME = "sae_weights.safetensors"
ACTIVATIONS = {"standard": "ReLU", "topk": "TopKReLU", "abstopk": "AbsTopK", "jumprelu": "JumpReLU"}
REFUSED = {
    "gated": "a Gated SAE (separate gate and magnitude encoder paths)",
    "transcoder": "a transcoder (it reads one activation and writes another)",
    "skip_transcoder": "a skip transcoder (it reads one activation and writes another)",
    "jumprelu_transcoder": "a JumpReLU transcoder (it reads one activation and writes another)",
    "temporal": "a temporal SAE (its codes depend on earlier positions)",
    "matching_pursuit": "a matching-pursuit SAE (iterative encoder)",
    "batchtopk": "a BatchTopK *training* checkpoint",
    "matryoshka_batchtopk": "a Matryoshka BatchTopK *training* checkpoint",
}
NORMALIZATIONS = {
    "none": "none",
    "expected_average_only_in": "none",
    "covariance_whitening": "none",
    "layer_norm": "layer_norm",
    "constant_norm_rescale": "constant_norm_rescale",
}


def detect(probe: Probe) -> Detection:
    if probe.folder_holding(CFG_FNAME, WEIGHTS_FNAME) is not None:
        return Detection(True)
    return Detection(False, f"no {CFG_FNAME} + {WEIGHTS_FNAME} folder")


def upgrade_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """SAELens' own defaulting of configs written before SAELens 6: renamed keys, topk from
    ``activation_fn_kwargs``, boolean ``normalize_activations``."""
    version = cfg.get("sae_lens_version") or (cfg.get("metadata") or {}).get("sae_lens_version")
    if version and str(version).split(".")[0].isdigit() and int(str(version).split(".")[0]) >= 6:
        return cfg
    renames = {"hook_point": "hook_name", "activation_fn_str": "activation_fn"}
    cfg = {renames.get(key, key): value for key, value in cfg.items()}
    cfg.setdefault("architecture", "standard")
    cfg.setdefault("apply_b_dec_to_input", True)
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if cfg.get("activation_fn") == "topk" and kwargs.get("k") is not None:
        cfg["architecture"], cfg["k"] = "topk", kwargs["k"]
    norm = cfg.get("normalize_activations")
    if isinstance(norm, bool):
        cfg["normalize_activations"] = "expected_average_only_in" if norm else "none"
    elif norm is None:
        cfg["normalize_activations"] = "none"
    return cfg


def _architecture(cfg: dict[str, Any]) -> tuple[str, int | None]:
    """Our activation name and k for SAELens' architecture; ValueError naming what was trained."""
    architecture = cfg.get("architecture", "standard")
    if architecture in REFUSED:
        hint = (
            " SAELens itself loads only the inference save: write it with "
            "save_inference_model(), which stores it as 'jumprelu'."
            if "training" in REFUSED[architecture]
            else ""
        )
        raise ValueError(
            f"this SAELens checkpoint is {REFUSED[architecture]} (architecture "
            f"{architecture!r}); sae-explorer reads {sorted(ACTIVATIONS)}.{hint}"
        )
    if architecture not in ACTIVATIONS:
        raise ValueError(
            f"SAELens architecture {architecture!r} is not supported; supported: {sorted(ACTIVATIONS)}"
        )
    if architecture == "standard" and cfg.get("activation_fn", "relu") != "relu":
        raise ValueError(
            f"SAELens standard SAE with activation_fn={cfg['activation_fn']!r} is not supported "
            f"(SAELens 6 applies ReLU); supported: relu"
        )
    k = None
    if architecture in ("topk", "abstopk"):
        k = cfg.get("k")
        if isinstance(k, float) and k.is_integer():
            k = int(k)
        if not isinstance(k, int) or isinstance(k, bool):
            raise ValueError(f"SAELens {architecture} config needs an integer k, got {k!r}")
    return ACTIVATIONS[architecture], k


def _input_norm(cfg: dict[str, Any]) -> str:
    norm = cfg.get("normalize_activations", "none")
    if norm not in NORMALIZATIONS:
        raise ValueError(
            f"SAELens normalize_activations={norm!r} is not supported; SAELens accepts "
            f"{sorted(NORMALIZATIONS)}"
        )
    if norm in ("expected_average_only_in", "covariance_whitening"):
        logger.info(
            "SAELens normalize_activations=%r is a no-op at inference (as in SAELens)", norm
        )
    return NORMALIZATIONS[norm]


def _matryoshka_widths(cfg: dict[str, Any], d_sae: int) -> tuple[int, ...] | None:
    meta = cfg.get("metadata") or {}
    details = meta.get("training_architecture_details") or {}
    widths = cfg.get("matryoshka_widths") or details.get("matryoshka_widths")
    if not widths:
        return None
    widths = tuple(int(w) for w in widths)
    return widths if widths[-1] == d_sae else (*widths, d_sae)


def _read_weights(dpath: Path, cfg: dict[str, Any], jump: bool) -> dict[str, torch.Tensor]:
    weights_fpath = dpath / WEIGHTS_FNAME
    if not weights_fpath.is_file():
        raise ValueError(f"SAELens folder {dpath} has no {WEIGHTS_FNAME}")
    try:
        state = load_file(weights_fpath)
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"cannot read {weights_fpath}: {err}") from err
    scaling = state.get("scaling_factor")
    if scaling is not None and not torch.allclose(scaling, torch.ones_like(scaling)):
        raise ValueError(
            f"{weights_fpath} holds a fine-tuning 'scaling_factor' that is not all ones "
            f"(finetuning_scaling_factor); SAELens 6 does not load it either"
        )
    if jump and "threshold" not in state and "log_threshold" in state:
        raise ValueError(
            f"{weights_fpath} is a JumpReLU *training* checkpoint (log_threshold); SAELens loads "
            f"the inference save (save_inference_model), which stores 'threshold'"
        )
    names = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if jump else [])
    w = require_tensors(state, names, f"SAELens {weights_fpath}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if tuple(w["W_enc"].shape) != (d_in, d_sae) or tuple(w["b_dec"].shape) != (d_in,):
        raise ValueError(
            f"SAELens W_enc has shape {tuple(w['W_enc'].shape)} and b_dec {tuple(w['b_dec'].shape)}; "
            f"{CFG_FNAME} says d_in={d_in}, d_sae={d_sae}"
        )
    return w


def _fold(w: dict[str, torch.Tensor], cfg: dict[str, Any], activation: str) -> dict[str, Any]:
    """Our tensors from SAELens' weights: b_dec into the latent bias when SAELens does not
    subtract it from the input; decoder norms into the weights under rescale_acts_by_decoder_norm."""
    w_enc, w_dec, b_enc, b_dec = w["W_enc"], w["W_dec"], w["b_enc"], w["b_dec"]
    if not cfg.get("apply_b_dec_to_input", True):
        b_enc = (b_enc.float() + b_dec.float() @ w_enc.float()).to(b_enc.dtype)
    if cfg.get("rescale_acts_by_decoder_norm") and activation in ("TopKReLU", "AbsTopK"):
        norm_l = w_dec.float().norm(dim=-1)
        w_enc = (w_enc.float() * norm_l).to(w_enc.dtype)
        b_enc = (b_enc.float() * norm_l).to(b_enc.dtype)
        w_dec = (w_dec.float() / norm_l[:, None]).to(w_dec.dtype)
    tensors = {"pre_bias": b_dec, "encoder": w_enc, "latent_bias": b_enc, "decoder": w_dec}
    if "threshold" in w:
        tensors["threshold"] = w["threshold"]
    return tensors


def load(probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None) -> SAE:
    """Load a SAELens folder (see the module docstring for what each setting becomes)."""
    dpath = probe.folder_holding(CFG_FNAME, WEIGHTS_FNAME)
    assert dpath is not None, "load() called on a source detect() declined"
    cfg_fpath = dpath / CFG_FNAME
    try:
        raw = json.loads(cfg_fpath.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_fpath} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{cfg_fpath} holds a {type(raw).__name__}, not a config object")
    missing = [key for key in ("d_in", "d_sae") if key not in raw]
    if missing:
        raise ValueError(f"SAELens {cfg_fpath} is missing {missing}")
    cfg = upgrade_config(raw)
    activation, k = _architecture(cfg)
    input_norm = _input_norm(cfg)
    w = _read_weights(dpath, cfg, jump=activation == "JumpReLU")
    widths = _matryoshka_widths(cfg, int(cfg["d_sae"]))
    sae_cfg = SAEConfig(
        n_inputs=int(cfg["d_in"]),
        n_latents=int(cfg["d_sae"]),
        activation=activation,
        k=k,
        input_norm=input_norm,
        inference="topk" if k is not None else "full",
        nesting_list=widths,
        nesting_by="width" if widths else "k",
    )
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else cfg
    provenance = {
        f"saelens_{key}": meta[key]
        for key in ("model_name", "hook_name", "dataset_path", "training_architecture")
        if isinstance(meta.get(key), str)
    }
    return SAE.from_tensors(
        sae_cfg,
        _fold(w, cfg, activation),
        source_format=FORMAT,
        source=str(dpath),
        provenance=provenance,
        device=device,
        dtype=dtype,
    )
