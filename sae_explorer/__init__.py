"""sae-explorer: explore what (Matryoshka) sparse autoencoders find inside CLIP.

The library never imports gradio; ``explorer_ui`` builds the web page on top of it. The names
below are imported on first use, so light modules (configs, the command lines' ``--help``) load
without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sae_explorer.checkpoints import load_sae, save_sae
    from sae_explorer.sae import SAE, SAEConfig

_LAZY = {
    "SAE": "sae_explorer.sae",
    "SAEConfig": "sae_explorer.sae",
    "load_sae": "sae_explorer.checkpoints",
    "save_sae": "sae_explorer.checkpoints",
}
__all__ = ["SAE", "SAEConfig", "load_sae", "save_sae"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'sae_explorer' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once imported, a plain attribute
    return value
