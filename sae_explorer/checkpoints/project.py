"""The project format (``sae-explorer``): a folder with ``config.json`` (schema number, SAE config,
preprocessing, content hash, provenance) and ``sae.safetensors``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sae_explorer.atomic import atomic_path, atomic_write_text
from sae_explorer.checkpoints.probe import Probe
from sae_explorer.checkpoints.registry import Detection
from sae_explorer.sae import SAE, SAEConfig

SCHEMA = 2
"""2 added ``input_norm`` (schema 1's boolean ``normalize``), ``inference``, ``nesting_by`` and the
JumpReLU ``threshold``; schema-1 folders still load."""
FORMAT = "sae-explorer"
CONFIG_FNAME = "config.json"
WEIGHTS_FNAME = "sae.safetensors"


def save_sae(sae: SAE, dpath: str | Path, provenance: dict | None = None) -> Path:
    """Write ``sae`` to folder ``dpath`` in the project format; returns ``dpath``.

    ``provenance`` (e.g. ``{"clip_model": ..., "training_data_hash": ...}``) is merged over the
    SAE's own. Weights are written before ``config.json``, so a folder with a config is complete.
    """
    dpath = Path(dpath)
    dpath.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: t.to("cpu", copy=True).float().contiguous() for name, t in sae.tensors().items()
    }
    merged = {**sae.provenance, **(provenance or {})}
    if sae.source_format not in {FORMAT, "random", "trained"}:
        merged.setdefault("converted_from", sae.source_format)
    config = {
        "schema": SCHEMA,
        "format": FORMAT,
        "architecture": sae.cfg.architecture,
        "sae": sae.cfg.to_dict(),
        "preprocessing": {
            "mean_centered": bool(tensors["mean"].abs().max() > 0),
            "mean": f"tensor 'mean' in {WEIGHTS_FNAME}",
            "scaling_factor": sae.cfg.scaling_factor,
            "formula": "x_model = (x - mean) * scaling_factor",
        },
        "content_hash": sae.content_hash,
        "provenance": merged,
    }
    text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    with atomic_path(dpath / WEIGHTS_FNAME) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "schema": str(SCHEMA)})
    atomic_write_text(dpath / CONFIG_FNAME, text)
    return dpath


def detect(probe: Probe) -> Detection:
    if probe.folder_holding(CONFIG_FNAME, WEIGHTS_FNAME) is not None:
        return Detection(True)
    return Detection(False, f"no {CONFIG_FNAME} + {WEIGHTS_FNAME} folder")


def load(probe: Probe, device: torch.device | str | None, dtype: torch.dtype | None) -> SAE:
    """Load a project-format folder; ValueError for a bad schema, config or weights."""
    dpath = probe.folder_holding(CONFIG_FNAME, WEIGHTS_FNAME)
    assert dpath is not None, "load() called on a source detect() declined"
    config_fpath, weights_fpath = dpath / CONFIG_FNAME, dpath / WEIGHTS_FNAME
    try:
        config = json.loads(config_fpath.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_fpath} is not valid JSON: {err}") from err
    schema = config.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ValueError(f"{config_fpath} has no integer 'schema' (got {schema!r})")
    if schema > SCHEMA:
        raise ValueError(
            f"{config_fpath} has schema {schema}, newer than this sae-explorer reads ({SCHEMA}); "
            f"upgrade sae-explorer"
        )
    if not isinstance(config.get("sae"), dict):
        raise ValueError(f"{config_fpath} has no 'sae' config section")
    cfg = SAEConfig.from_dict(config["sae"])
    if not weights_fpath.is_file():
        raise ValueError(f"{dpath} has {CONFIG_FNAME} but no {WEIGHTS_FNAME}")
    try:
        tensors = load_file(weights_fpath)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"cannot read {weights_fpath}: {err}") from err
    sae = SAE.from_tensors(
        cfg,
        tensors,
        source_format=FORMAT,
        source=str(dpath),
        provenance=config.get("provenance"),
        device=device,
        dtype=dtype,
    )
    # The hash covers the schema's config keys and fp32 weights: comparable only for those.
    stored = config.get("content_hash")
    comparable = stored is not None and schema == SCHEMA and sae.dtype == torch.float32
    if comparable and stored != sae.content_hash:
        warnings.warn(
            f"{dpath}: weights/config differ from the stored content_hash (edited by hand?)",
            UserWarning,
            stacklevel=3,
        )
    return sae
