"""Load any supported SAE checkpoint; save and convert to the project format.

Sources understood by :func:`load_sae` (the detected format ends up in ``sae.source_format``):

- project format (``sae-explorer``): a folder with ``config.json`` (``schema`` number, SAE config,
  preprocessing, provenance) and ``sae.safetensors``;
- ``builtin:<name>``: the project-format SAE shipped in ``<repo>/checkpoints/builtin-<name>/sae``;
- MSAE ``.pth``/``.pt`` files (``msae-pth``, config read from the file name);
- SAELens folders (``saelens``: ``cfg.json`` + ``sae_weights.safetensors``);
- OpenAI ``sparse_autoencoder`` / auto_circuit state dicts (``openai`` / ``auto_circuit``) in a
  ``.pt``/``.pth``/``.bin`` pickle or a ``.safetensors`` file;
- ``hf-hub:org/repo[@revision][/path]`` or ``hf://org/repo[/path]``: fetched with
  ``huggingface_hub.hf_hub_download``, then any of the above (a path without a file suffix is a
  folder holding ``config.json`` or ``cfg.json``).

``python -m sae_explorer convert SRC DST`` writes any of them in the project format.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path, PurePosixPath

import torch
from safetensors.torch import load_file, save_file

from sae_explorer.atomic import atomic_path, atomic_write_text
from sae_explorer.formats import load_pickle_safely, msae, openai, saelens
from sae_explorer.sae import SAE, SAEConfig

logger = logging.getLogger(__name__)

SCHEMA = 1
FORMAT = "sae-explorer"
CONFIG_FNAME = "config.json"
WEIGHTS_FNAME = "sae.safetensors"
REPO_DPATH = Path(__file__).resolve().parents[1]
BUILTIN_DPATH = REPO_DPATH / "checkpoints"
HUB_PREFIXES = ("hf-hub:", "hf://")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


# ---------------------------------------------------------------------- project format
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


def load_project(dpath: Path) -> SAE:
    """Load a project-format folder; ValueError for a bad schema, config or weights."""
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
        cfg, tensors, source_format=FORMAT, source=str(dpath), provenance=config.get("provenance")
    )
    stored = config.get("content_hash")
    if stored is not None and stored != sae.content_hash:
        warnings.warn(
            f"{dpath}: weights/config differ from the stored content_hash (edited by hand?)",
            UserWarning,
            stacklevel=3,
        )
    return sae


# ---------------------------------------------------------------------- dispatch
def builtin_dpath(name: str) -> Path:
    """Folder of ``builtin:<name>``; ValueError listing the available ones when missing."""
    dpath = BUILTIN_DPATH / f"builtin-{name}" / "sae"
    if not (dpath / CONFIG_FNAME).is_file():
        available = sorted(
            p.parent.parent.name.removeprefix("builtin-")
            for p in BUILTIN_DPATH.glob(f"builtin-*/sae/{CONFIG_FNAME}")
        )
        raise ValueError(
            f"no built-in SAE {name!r} (looked for {dpath / CONFIG_FNAME}); available: {available}"
        )
    return dpath


def _load_local_dir(dpath: Path) -> SAE:
    if (dpath / CONFIG_FNAME).is_file():
        return load_project(dpath)
    if (dpath / saelens.CFG_FNAME).is_file():
        return saelens.load_saelens(dpath)
    raise ValueError(
        f"folder {dpath} holds no SAE: expected {CONFIG_FNAME} + {WEIGHTS_FNAME} (sae-explorer) "
        f"or {saelens.CFG_FNAME} + {saelens.WEIGHTS_FNAME} (SAELens)"
    )


def _load_local_file(fpath: Path, display_name: str | None = None) -> SAE:
    if fpath.name in {CONFIG_FNAME, saelens.CFG_FNAME}:
        return _load_local_dir(fpath.parent)
    if fpath.suffix == ".safetensors":
        if (fpath.parent / CONFIG_FNAME).is_file() and fpath.name == WEIGHTS_FNAME:
            return load_project(fpath.parent)
        if (fpath.parent / saelens.CFG_FNAME).is_file() and fpath.name == saelens.WEIGHTS_FNAME:
            return saelens.load_saelens(fpath.parent)
        try:
            state = load_file(fpath)
        except Exception as err:
            raise ValueError(f"cannot read {fpath} as safetensors: {err}") from err
        return openai.load_state_dict(state, str(fpath))
    if fpath.suffix in PICKLE_SUFFIXES:
        obj = load_pickle_safely(fpath)
        if isinstance(obj, dict) and "model" in obj:
            return msae.load_msae(fpath, display_name, ckpt=obj)
        if isinstance(obj, dict) and openai.detect(obj):
            return openai.load_state_dict(obj, str(fpath))
        keys = sorted(map(str, obj))[:12] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"{fpath}: not a recognised SAE checkpoint (top-level {keys}); expected an MSAE dict "
            f"with 'model', or an OpenAI/auto_circuit state dict"
        )
    raise ValueError(
        f"don't know how to load {fpath}: use a folder, a .safetensors file, or one of "
        f"{PICKLE_SUFFIXES}"
    )


def parse_hub_source(source: str) -> tuple[str, str | None, str]:
    """``hf-hub:org/repo[@rev]/path`` -> (repo_id, revision, path inside the repo, maybe '')."""
    rest = next(source[len(p) :] for p in HUB_PREFIXES if source.startswith(p))
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"Hub source {source!r} must look like hf-hub:org/repo[/path/to/file]")
    repo, revision = parts[1], None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return f"{parts[0]}/{repo}", revision, "/".join(parts[2:])


def _load_hub(source: str) -> SAE:
    """Download what the source names with ``hf_hub_download`` and load it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    repo_id, revision, path = parse_hub_source(source)

    def fetch(fname: str) -> Path:
        return Path(hf_hub_download(repo_id, fname, revision=revision))

    posix = PurePosixPath(path)
    if posix.suffix in PICKLE_SUFFIXES:
        sae = _load_local_file(fetch(path), display_name=posix.name)
    elif posix.suffix == ".safetensors" or posix.suffix == ".json":
        folder = str(posix.parent) if str(posix.parent) != "." else ""
        sae = _load_hub_folder(fetch, folder, EntryNotFoundError, single=path)
    else:
        sae = _load_hub_folder(fetch, path, EntryNotFoundError)
    sae.source = source
    return sae


def _load_hub_folder(fetch, folder: str, not_found, single: str | None = None) -> SAE:
    def join(name: str) -> str:
        return f"{folder}/{name}" if folder else name

    for cfg_name, weights_name in (
        (CONFIG_FNAME, WEIGHTS_FNAME),
        (saelens.CFG_FNAME, saelens.WEIGHTS_FNAME),
    ):
        if single is not None and PurePosixPath(single).name not in {cfg_name, weights_name}:
            continue
        try:
            cfg_fpath = fetch(join(cfg_name))
        except not_found:
            continue
        weights_fpath = fetch(join(weights_name))
        if weights_fpath.parent != cfg_fpath.parent:  # a plain cache layout keeps them together
            raise ValueError(
                f"Hub files {cfg_fpath} and {weights_fpath} landed in different folders"
            )
        return _load_local_dir(cfg_fpath.parent)
    if single is not None and single.endswith(".safetensors"):
        return _load_local_file(fetch(single))
    raise ValueError(
        f"Hub folder {folder or '/'} has neither {CONFIG_FNAME} (sae-explorer) nor "
        f"{saelens.CFG_FNAME} (SAELens)"
    )


def load_sae(source: str | Path) -> SAE:
    """Load an SAE from any supported source (see module docstring): eval mode, fp32, CPU."""
    text = str(source)
    if text.startswith("builtin:"):
        sae = load_project(builtin_dpath(text.removeprefix("builtin:")))
        sae.source = text
    elif text.startswith(HUB_PREFIXES):
        sae = _load_hub(text)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            sae = _load_local_dir(path)
        elif path.is_file():
            sae = _load_local_file(path)
        else:
            raise ValueError(
                f"SAE source {text!r} is not an existing file or folder, 'builtin:<name>', "
                f"'hf-hub:org/repo/path' or 'hf://org/repo/path'"
            )
    logger.info("loaded %s SAE (%s) from %s", sae.source_format, sae.cfg.architecture, text)
    return sae.to("cpu", dtype=torch.float32).eval()


# ---------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m sae_explorer convert SRC DST``: write any supported SAE in the project format."""
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer convert",
        description="Convert an SAE checkpoint (MSAE .pth, SAELens, OpenAI/auto_circuit, Hub, "
        "project format) to the project format (config.json + sae.safetensors).",
    )
    parser.add_argument(
        "src", help="checkpoint file/folder, builtin:<name> or hf-hub:org/repo/path"
    )
    parser.add_argument("dst", help="output folder")
    parser.add_argument("--clip-model", help="CLIP model id to record in provenance")
    args = parser.parse_args(argv)
    try:
        sae = load_sae(args.src)
    except ValueError as err:
        print(f"error: {err}")
        return 1
    provenance = {"converted_from_source": args.src}
    if args.clip_model:
        provenance["clip_model"] = args.clip_model
    out = save_sae(sae, args.dst, provenance)
    print(
        f"detected {sae.source_format} ({sae.cfg.architecture}, {sae.n_inputs} -> "
        f"{sae.n_latents} latents); wrote {out} (content hash {sae.content_hash[:12]})"
    )
    return 0
