"""OpenAI ``sparse_autoencoder`` and auto_circuit ``SparseAutoencoder`` state dicts (``.pt`` or
``.safetensors``).

Both compute ``latents = act(W_enc (x - b) + latent_bias)``, ``recons = W_dec latents + b``.

- OpenAI (``Autoencoder.from_state_dict``): ``encoder.weight [n_latents, n_inputs]``,
  ``decoder.weight [n_inputs, n_latents]`` or, tied, ``decoder.linear.weight`` (the encoder's own
  weight), ``pre_bias``, ``latent_bias``, statistics buffers, ``activation`` (``ReLU`` when
  absent, ``Identity``, or ``TopK`` with ``activation_state_dict = {"k", "postact_fn"}``, the
  post-activation ``ReLU`` or ``Identity`` applied to the kept values). OpenAI's loader turns on
  the input layer norm exactly for TopK files (no ``normalize`` key is stored), and ``encode``
  returns the k-sparse codes: both reproduced here.
- auto_circuit: ``encode_weight [n_latents, n_inputs]``, ``decode_weight [n_inputs, n_latents]``,
  ``bias [n_inputs]``, ``latent_bias [n_latents]``; ReLU.
"""

from __future__ import annotations

import torch

from sae_explorer.checkpoints.probe import Probe, require_tensors
from sae_explorer.checkpoints.registry import Detection
from sae_explorer.sae import SAE, SAEConfig

FORMAT = "openai"
AUTO_CIRCUIT = "auto_circuit"
AUTO_CIRCUIT_KEYS = ("encode_weight", "decode_weight", "bias", "latent_bias")
OPENAI_KEYS = ("encoder.weight", "pre_bias", "latent_bias")
OPENAI_DECODERS = ("decoder.weight", "decoder.linear.weight")
OPENAI_BUFFERS = ("stats_last_nonzero", "latents_activation_frequency", "latents_mean_square")
OPENAI_EXTRAS = ("activation", "activation_state_dict", "normalize")
POSTACT = {"ReLU": "TopKReLU", "Identity": "TopK"}


def _state(probe: Probe, keys: tuple[str, ...], what: str) -> tuple[dict | None, str]:
    if probe.is_dir or probe.json_header is not None:
        return None, "not a single weights file"
    state, why = probe.state()
    if state is None:
        return None, why
    missing = [key for key in keys if key not in state]
    if missing:
        return None, f"no {what} keys {missing} (has {sorted(map(str, state))[:8]})"
    return state, ""


def detect(probe: Probe) -> Detection:
    state, why = _state(probe, OPENAI_KEYS, "OpenAI")
    if state is not None and not any(key in state for key in OPENAI_DECODERS):
        state, why = None, f"no decoder ({' or '.join(OPENAI_DECODERS)})"
    return Detection(state is not None, why)


def detect_auto_circuit(probe: Probe) -> Detection:
    state, why = _state(probe, AUTO_CIRCUIT_KEYS, "auto_circuit")
    return Detection(state is not None, why)


def _two_d(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.ndim != 2:
        raise ValueError(
            f"{name} must be 2-d, got shape {tuple(tensor.shape)} (per-position pruned "
            f"auto_circuit SAEs are not supported)"
        )
    return tensor


def _openai_activation(state: dict, source: str) -> tuple[str, int | None]:
    """Our activation and k, as ``Autoencoder.from_state_dict`` reads them."""
    name = state.get("activation", "ReLU")
    if name in ("ReLU", "Identity"):
        return name, None
    if name != "TopK":
        raise ValueError(
            f"{source}: OpenAI activation {name!r} is not one of ReLU, Identity, TopK (OpenAI's "
            f"loader would silently read it as ReLU; sae-explorer refuses)"
        )
    params = state.get("activation_state_dict")
    if not isinstance(params, dict) or "k" not in params or "postact_fn" not in params:
        raise ValueError(
            f"{source}: an OpenAI TopK state dict needs activation_state_dict with 'k' and "
            f"'postact_fn' (got {params!r})"
        )
    if params["postact_fn"] not in POSTACT:
        raise ValueError(
            f"{source}: TopK postact_fn {params['postact_fn']!r} is not one of {sorted(POSTACT)}"
        )
    k = params["k"]
    k = int(k.item()) if isinstance(k, torch.Tensor) else k
    if not isinstance(k, int) or isinstance(k, bool):
        raise ValueError(f"{source}: TopK k must be an integer, got {k!r}")
    return POSTACT[params["postact_fn"]], k


def _openai_decoder(state: dict, encoder_ld: torch.Tensor, source: str) -> torch.Tensor | None:
    """The decoder [n_latents, n_inputs], or None when tied to the encoder."""
    if "decoder.weight" in state:
        return _two_d(
            require_tensors(state, ["decoder.weight"], source)["decoder.weight"], "decoder.weight"
        ).t()
    tied = require_tensors(state, ["decoder.linear.weight"], source)["decoder.linear.weight"]
    if tied.shape != encoder_ld.shape or not torch.equal(tied, encoder_ld):
        raise ValueError(
            f"{source}: decoder.linear.weight (tied) differs from encoder.weight; a tied OpenAI "
            f"autoencoder shares one matrix"
        )
    return None


def load(probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None) -> SAE:
    source = str(probe.path)
    state = probe.contents
    unknown = sorted(
        set(map(str, state)) - {*OPENAI_KEYS, *OPENAI_DECODERS, *OPENAI_BUFFERS, *OPENAI_EXTRAS}
    )
    if unknown:
        raise ValueError(f"{source}: keys {unknown} are not part of OpenAI's Autoencoder")
    activation, k = _openai_activation(state, source)
    normalize = activation in POSTACT.values()  # OpenAI: normalize = activation name == "TopK"
    if "normalize" in state and bool(state["normalize"]) != normalize:
        raise ValueError(
            f"{source}: 'normalize'={state['normalize']!r}, but OpenAI's loader layer-normalises "
            f"exactly the TopK autoencoders (this one: {normalize}) and stores no such key"
        )
    w = require_tensors(state, list(OPENAI_KEYS), f"OpenAI state dict {source}")
    encoder_ld = _two_d(w["encoder.weight"], "encoder.weight")
    decoder_ld = _openai_decoder(state, encoder_ld, source)
    n_latents, n_inputs = encoder_ld.shape
    cfg = SAEConfig(
        n_inputs,
        n_latents,
        activation=activation,
        k=k,
        tied=decoder_ld is None,
        input_norm="layer_norm" if normalize else "none",
        inference="topk" if k is not None else "full",
    )
    tensors = {
        "pre_bias": w["pre_bias"],
        "encoder": encoder_ld.t(),
        "latent_bias": w["latent_bias"],
    }
    if decoder_ld is not None:
        tensors["decoder"] = decoder_ld
    return SAE.from_tensors(
        cfg, tensors, source_format=FORMAT, source=source, device=device, dtype=dtype
    )


def load_auto_circuit(
    probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None
) -> SAE:
    source = str(probe.path)
    w = require_tensors(
        probe.contents, list(AUTO_CIRCUIT_KEYS), f"auto_circuit state dict {source}"
    )
    encoder_ld = _two_d(w["encode_weight"], "encode_weight")
    decoder_dl = _two_d(w["decode_weight"], "decode_weight")
    n_latents, n_inputs = encoder_ld.shape
    cfg = SAEConfig(n_inputs, n_latents, activation="ReLU")
    tensors = {
        "pre_bias": w["bias"],
        "encoder": encoder_ld.t(),
        "latent_bias": w["latent_bias"],
        "decoder": decoder_dl.t(),
    }
    return SAE.from_tensors(
        cfg, tensors, source_format=AUTO_CIRCUIT, source=source, device=device, dtype=dtype
    )
