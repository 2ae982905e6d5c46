"""``python -m sae_explorer convert SRC DST``: write any supported SAE in the project format."""

from __future__ import annotations

import argparse

from sae_explorer.checkpoints import load_sae, save_sae


def main(argv: list[str] | None = None) -> int:
    """``python -m sae_explorer convert SRC DST``: write any supported SAE in the project format."""
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer convert",
        description="Convert an SAE checkpoint (MSAE .pth, SAELens, saev, OpenAI/auto_circuit, Hub, "
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
