"""saev checkpoints (``saev.nn.dump``): one JSON line describing the SAE, then a torch state dict
``W_enc [d_vit, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_vit]``, ``b_dec [d_vit]``; or that
state dict alone.

saev 0.1 (PyPI; a header of bare config fields, no ``schema``) trains a ReLU SAE and computes
``relu((x - b_dec) @ W_enc + b_enc)``; a plain state dict reads the same way. Later saev writes
``{"schema": 1 | 2, "cfg": {..., "activation": {"cls", "params"}}}`` and encodes
``act(x @ W_enc + b_enc)`` without subtracting ``b_dec`` (stored here as
``latent_bias = b_enc + b_dec @ W_enc``), with ``Relu``, or ``TopK``/``BatchTopK`` keeping the
``top_k`` largest pre-activations with their signed values (BatchTopK selects per sample at
inference). saev normalises activations in its data loader (``scale_mean``, ``scale_norm``), not
in the checkpoint: feed inputs prepared the way the SAE was trained.
"""

from __future__ import annotations

from typing import Any

import torch

from sae_explorer.checkpoints.probe import Probe, require_tensors
from sae_explorer.checkpoints.registry import Detection
from sae_explorer.sae import SAE, SAEConfig

FORMAT = "saev"
KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
LEGACY_FIELDS = {"d_vit", "exp_factor"}


def detect(probe: Probe) -> Detection:
    if probe.is_dir:
        return Detection(False, "a folder, not a saev file")
    header = probe.json_header
    if header is not None:
        if "schema" in header or set(header) >= LEGACY_FIELDS:
            return Detection(True)
        return Detection(False, f"a JSON header line without saev's fields: {sorted(header)[:8]}")
    if probe.path.suffix == ".safetensors":
        return Detection(False, "saev files are torch pickles")
    state, why = probe.state()
    if state is None:
        return Detection(False, why)
    if set(map(str, state)) == set(KEYS):
        return Detection(True)
    return Detection(False, f"not exactly the keys {list(KEYS)}")


def _activation(header: dict[str, Any] | None) -> tuple[str, int | None, bool]:
    """(our activation, k, whether encode subtracts b_dec) for a saev header."""
    if header is None or "schema" not in header:
        return "ReLU", None, True  # saev 0.1 / a bare state dict
    schema, cfg = header["schema"], header.get("cfg")
    if schema not in (1, 2) or not isinstance(cfg, dict):
        raise ValueError(f"saev header schema {schema!r} is not one of 1, 2 (with a 'cfg' object)")
    cls_name, params = header.get("cls", "SparseAutoencoderConfig"), {}
    if cls_name in ("Relu", "TopK", "BatchTopK"):  # schema 1, first layout
        params = {"top_k": cfg.get("top_k", 32)}
    elif isinstance(cfg.get("activation"), dict):
        cls_name = cfg["activation"].get("cls")
        params = cfg["activation"].get("params") or {}
    else:
        cls_name = "Relu"
    if cls_name == "Relu":
        return "ReLU", None, False
    if cls_name in ("TopK", "BatchTopK"):
        k = params.get("top_k", 32)
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"saev {cls_name} top_k must be a positive integer, got {k!r}")
        return "TopK", k, False
    raise ValueError(f"saev activation {cls_name!r} is not one of Relu, TopK, BatchTopK")


def load(probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None) -> SAE:
    source = str(probe.path)
    header = probe.json_header
    activation, k, subtracts_b_dec = _activation(header)
    state = probe.contents
    if not isinstance(state, dict):
        raise ValueError(
            f"{source}: after saev's header comes a {type(state).__name__}, not a state dict"
        )
    w = require_tensors(state, list(KEYS), f"saev state dict {source}")
    if w["W_enc"].ndim != 2:
        raise ValueError(f"saev W_enc must be 2-d [d_vit, d_sae], got {tuple(w['W_enc'].shape)}")
    d_vit, d_sae = w["W_enc"].shape
    latent_bias = w["b_enc"]
    if not subtracts_b_dec:
        latent_bias = (w["b_enc"].float() + w["b_dec"].float() @ w["W_enc"].float()).to(
            w["b_enc"].dtype
        )
    cfg = SAEConfig(
        d_vit, d_sae, activation=activation, k=k, inference="topk" if k is not None else "full"
    )
    tensors = {
        "pre_bias": w["b_dec"],
        "encoder": w["W_enc"],
        "latent_bias": latent_bias,
        "decoder": w["W_dec"],
    }
    provenance = {"saev_header": header} if header is not None else {}
    return SAE.from_tensors(
        cfg,
        tensors,
        source_format=FORMAT,
        source=source,
        provenance=provenance,
        device=device,
        dtype=dtype,
    )
