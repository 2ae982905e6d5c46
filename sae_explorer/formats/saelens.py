"""SAELens checkpoints: a folder with ``cfg.json`` and ``sae_weights.safetensors``.

Weights ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``, ``b_dec [d_in]``.
SAELens computes ``act((x - b_dec) @ W_enc + b_enc)`` when ``apply_b_dec_to_input`` (the default)
and ``act(x @ W_enc + b_enc)`` otherwise; the latter is the same model with
``latent_bias = b_enc + b_dec @ W_enc``, which is how it is stored here. Architectures
``standard`` (ReLU) and ``topk`` (TopK then ReLU) are supported, with activation normalisation
``none`` or ``layer_norm`` (= MSAE's per-sample normalisation).
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file

from sae_explorer.formats import require_tensors
from sae_explorer.sae import SAE, SAEConfig

FORMAT = "saelens"
CFG_FNAME = "cfg.json"
WEIGHTS_FNAME = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "topk")
NORMALIZATIONS = {"none": False, None: False, "layer_norm": True}


def _activation(cfg: dict) -> tuple[str, int | None]:
    architecture = cfg.get("architecture", "standard")
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"SAELens architecture {architecture!r} is not supported; supported: {ARCHITECTURES}"
        )
    fn = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if architecture == "topk" or fn == "topk":
        k = cfg.get("k", kwargs.get("k"))
        if not isinstance(k, int):
            raise ValueError(f"SAELens topk config needs an integer k, got {k!r}")
        return "TopKReLU", k
    if fn != "relu":
        raise ValueError(f"SAELens activation {fn!r} is not supported; supported: relu, topk")
    return "ReLU", None


def load_saelens(dpath: Path) -> SAE:
    """Load a SAELens folder (see module docstring for what is supported)."""
    cfg_fpath, weights_fpath = dpath / CFG_FNAME, dpath / WEIGHTS_FNAME
    for fpath in (cfg_fpath, weights_fpath):
        if not fpath.is_file():
            raise ValueError(f"SAELens folder {dpath} has no {fpath.name}")
    try:
        cfg = json.loads(cfg_fpath.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{cfg_fpath} is not valid JSON: {err}") from err
    missing = [key for key in ("d_in", "d_sae") if key not in cfg]
    if missing:
        raise ValueError(f"SAELens {cfg_fpath} is missing {missing}")
    norm = cfg.get("normalize_activations", "none")
    if norm not in NORMALIZATIONS:
        raise ValueError(
            f"SAELens normalize_activations={norm!r} is not supported; supported: none, layer_norm"
        )
    activation, k = _activation(cfg)
    state = load_file(weights_fpath)
    w = require_tensors(state, ["W_enc", "W_dec", "b_enc", "b_dec"], f"SAELens {weights_fpath}")
    d_in, d_sae = int(cfg["d_in"]), int(cfg["d_sae"])
    if tuple(w["W_enc"].shape) != (d_in, d_sae) or tuple(w["b_dec"].shape) != (d_in,):
        raise ValueError(
            f"SAELens W_enc has shape {tuple(w['W_enc'].shape)} and b_dec {tuple(w['b_dec'].shape)}; "
            f"cfg.json says d_in={d_in}, d_sae={d_sae}"
        )
    latent_bias = w["b_enc"]
    if not cfg.get("apply_b_dec_to_input", True):
        latent_bias = w["b_enc"] + w["b_dec"] @ w["W_enc"]
    sae_cfg = SAEConfig(
        n_inputs=d_in,
        n_latents=d_sae,
        activation=activation,
        k=k,
        normalize=NORMALIZATIONS[norm],
    )
    tensors = {
        "pre_bias": w["b_dec"],
        "encoder": w["W_enc"],
        "latent_bias": latent_bias,
        "decoder": w["W_dec"],
    }
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else cfg
    provenance = {
        f"saelens_{key}": meta[key]
        for key in ("model_name", "hook_name", "dataset_path")
        if isinstance(meta.get(key), str)
    }
    return SAE.from_tensors(
        sae_cfg, tensors, source_format=FORMAT, source=str(dpath), provenance=provenance
    )
