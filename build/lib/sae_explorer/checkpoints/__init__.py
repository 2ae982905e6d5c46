"""Load any supported SAE checkpoint; save and convert to the project format.

Sources :func:`load_sae` reads (``sae.source_format`` says which format was detected):

- a project-format folder (``config.json`` + ``sae.safetensors``), or ``builtin:<name>``;
- MSAE ``.pth``/``.pt`` files (configuration from the file name);
- SAELens folders (``cfg.json`` + ``sae_weights.safetensors``);
- saev files (``saev.nn.dump``: a JSON line, then a state dict) and plain saev state dicts;
- OpenAI ``sparse_autoencoder`` and auto_circuit state dicts (``.pt``/``.safetensors``);
- ``hf-hub:org/repo[@revision][/path]`` / ``hf://org/repo[/path]``: fetched, then any of the above.

Each format reproduces its own library's ``encode``/``decode`` (see :mod:`.registry`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from sae_explorer import builtin
from sae_explorer.checkpoints import hub
from sae_explorer.checkpoints.probe import UnsafeCheckpointError
from sae_explorer.checkpoints.project import CONFIG_FNAME, FORMAT, SCHEMA, WEIGHTS_FNAME, save_sae
from sae_explorer.checkpoints.registry import Detection, Format, formats, load_local
from sae_explorer.sae import SAE

__all__ = [
    "CONFIG_FNAME",
    "FORMAT",
    "SCHEMA",
    "WEIGHTS_FNAME",
    "Detection",
    "Format",
    "UnsafeCheckpointError",
    "builtin_dpath",
    "formats",
    "load_sae",
    "save_sae",
]


def builtin_dpath(name: str) -> Path:
    """Folder of ``builtin:<name>``'s SAE; ValueError naming the available worlds when unknown."""
    world = builtin.resolve(name)
    if not (world.sae_dpath / CONFIG_FNAME).is_file():
        raise ValueError(
            f"built-in SAE {world.source!r} not found at {world.sae_dpath}; rebuild it with "
            f"`python -m {world.module_name} train`"
        )
    return world.sae_dpath


def load_sae(
    source: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SAE:
    """Load an SAE from any supported source (see the module docstring), in eval mode, with its
    weights put straight on ``device`` (default CPU) in ``dtype`` (default float32)."""
    text = str(source)
    if builtin.is_builtin(text):
        sae = load_local(builtin_dpath(text), None, device, dtype)
    elif hub.is_hub_source(text):
        fetched = hub.fetch(text)
        sae = load_local(fetched.path, fetched.name, device, dtype)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ValueError(
                f"SAE source {text!r} is not an existing file or folder, 'builtin:<name>', "
                f"'hf-hub:org/repo/path' or 'hf://org/repo/path'"
            )
        sae = load_local(path, None, device, dtype)
    sae.source = text
    return sae.eval()
