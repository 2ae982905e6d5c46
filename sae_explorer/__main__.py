"""Command line: ``python -m sae_explorer <command> [options]``.

Each command lives in the module that does the job; this file only dispatches, importing the
module lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("sae_explorer.train", "train an SAE / Matryoshka SAE on an array of embeddings"),
    "convert": (
        "sae_explorer.checkpoints.convert",
        "convert any supported SAE checkpoint to the project format",
    ),
    "precompute": (
        "sae_explorer.precompute",
        "encode a corpus and build the latent activation index",
    ),
    "index-embeddings": (
        "sae_explorer.ray_embeddings",
        "build the index of precomputed embeddings (.npy), in this process or on Ray",
    ),
    "verify": ("sae_explorer.index.verify", "check an index folder's files against its checksums"),
    "evaluate": (
        "sae_explorer.evaluation.cli",
        "MSAE's metrics and CLIP zero-shot fidelity of an SAE on a corpus, per level",
    ),
    "publish": (
        "sae_explorer.publish",
        "upload an index with its thumbnails to a Hub dataset repo (app.py --index hf-hub:...)",
    ),
    "figure": ("sae_explorer.figures", "draw latent cards or a grid of them as PNG, SVG and PDF"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        lines = [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
        print("usage: python -m sae_explorer <command> [options]\n\ncommands:\n" + "\n".join(lines))
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"\nerror: unknown command {argv[0]!r}; choose one of {sorted(COMMANDS)}")
            return 2
        return 0
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
