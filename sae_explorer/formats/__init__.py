"""Adapters turning foreign SAE checkpoints into :class:`~sae_explorer.sae.SAE`.

Each module reads one family and returns an ``SAE`` whose ``source_format`` names it:

- :mod:`.msae` -- MSAE ``.pth`` files (config parsed from the file name; quarantined here).
- :mod:`.saelens` -- SAELens ``cfg.json`` + ``sae_weights.safetensors``.
- :mod:`.openai` -- OpenAI ``sparse_autoencoder`` and auto_circuit state dicts.

Pickled files are only ever opened with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint that would need arbitrary code to load; it is refused."""


def load_pickle_safely(fpath: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never runs pickled code)."""
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refusing to load {fpath}: it is not a plain weights file (loading it would run "
            f"arbitrary pickled code, which sae-explorer never does). Re-save it as a dict of "
            f"tensors, or convert it on a trusted machine. Detail: {str(err).splitlines()[0]}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"cannot read {fpath} as a torch checkpoint: {err}") from err


def as_float(value: Any, name: str) -> float:
    """A Python float from a float, int or one-element tensor; ValueError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def require_tensors(state: dict, names: list[str], what: str) -> dict[str, torch.Tensor]:
    """Pick ``names`` out of a state dict, naming the missing ones in a ValueError."""
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"{what} is missing {missing}; it has {sorted(map(str, state))}")
    out = {}
    for name in names:
        if not isinstance(state[name], torch.Tensor):
            raise ValueError(f"{what}: {name!r} is a {type(state[name]).__name__}, not a tensor")
        out[name] = state[name].to(torch.float32)
    return out
