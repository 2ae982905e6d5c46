"""OpenAI ``sparse_autoencoder`` and auto_circuit ``SparseAutoencoder`` state dicts.

Both implement ``latents = act(W_enc (x - b) + latent_bias)``, ``recons = W_dec latents + b``:

- auto_circuit: ``encode_weight [n_latents, n_inputs]``, ``decode_weight [n_inputs, n_latents]``,
  ``bias [n_inputs]``, ``latent_bias [n_latents]``; ReLU.
- OpenAI: ``encoder.weight [n_latents, n_inputs]``, ``decoder.weight [n_inputs, n_latents]``,
  ``pre_bias``, ``latent_bias``, optionally ``activation`` (``"ReLU"`` or ``"TopK"`` with
  ``activation_state_dict = {"k": k}``; OpenAI's TopK applies ReLU to the kept values) and
  ``normalize`` (per-sample layer norm, the same as MSAE's).
"""

from __future__ import annotations

import torch

from sae_explorer.formats import require_tensors
from sae_explorer.sae import SAE, SAEConfig

AUTO_CIRCUIT_KEYS = ("encode_weight", "decode_weight", "bias", "latent_bias")
OPENAI_KEYS = ("encoder.weight", "decoder.weight", "pre_bias", "latent_bias")
OPENAI_ACTIVATIONS = {"ReLU": "ReLU", "TopK": "TopKReLU"}


def detect(state: dict) -> str | None:
    """``"auto_circuit"``, ``"openai"`` or None for a state dict."""
    if all(key in state for key in AUTO_CIRCUIT_KEYS):
        return "auto_circuit"
    if all(key in state for key in OPENAI_KEYS):
        return "openai"
    return None


def _two_d(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.ndim != 2:
        raise ValueError(
            f"{name} must be 2-d, got shape {tuple(tensor.shape)} (per-position pruned "
            f"auto_circuit SAEs are not supported)"
        )
    return tensor


def load_state_dict(state: dict, source: str) -> SAE:
    """Build an SAE from an auto_circuit or OpenAI state dict (ValueError if neither)."""
    kind = detect(state)
    if kind == "auto_circuit":
        w = require_tensors(state, list(AUTO_CIRCUIT_KEYS), f"auto_circuit state dict {source}")
        encoder = _two_d(w["encode_weight"], "encode_weight").t()
        decoder = _two_d(w["decode_weight"], "decode_weight").t()
        pre_bias, activation, k, normalize = w["bias"], "ReLU", None, False
    elif kind == "openai":
        w = require_tensors(state, list(OPENAI_KEYS), f"OpenAI state dict {source}")
        encoder = _two_d(w["encoder.weight"], "encoder.weight").t()
        decoder = _two_d(w["decoder.weight"], "decoder.weight").t()
        pre_bias = w["pre_bias"]
        name = state.get("activation", "ReLU")
        if name not in OPENAI_ACTIVATIONS:
            raise ValueError(
                f"OpenAI activation {name!r} is not supported; supported: {sorted(OPENAI_ACTIVATIONS)}"
            )
        activation = OPENAI_ACTIVATIONS[name]
        k = (state.get("activation_state_dict") or {}).get("k") if name == "TopK" else None
        if name == "TopK" and k is None:
            raise ValueError("OpenAI TopK state dict lacks activation_state_dict['k']")
        k = int(k) if k is not None else None
        normalize = bool(state.get("normalize", False))
    else:
        raise ValueError(
            f"{source}: unrecognised state dict keys {sorted(map(str, state))[:12]}; expected "
            f"auto_circuit {list(AUTO_CIRCUIT_KEYS)} or OpenAI {list(OPENAI_KEYS)}"
        )
    n_inputs, n_latents = encoder.shape
    cfg = SAEConfig(n_inputs, n_latents, activation=activation, k=k, normalize=normalize)
    tensors = {
        "pre_bias": pre_bias,
        "encoder": encoder.contiguous(),
        "latent_bias": w["latent_bias"],
        "decoder": decoder.contiguous(),
    }
    return SAE.from_tensors(cfg, tensors, source_format=kind, source=source)
