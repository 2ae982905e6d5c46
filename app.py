"""SAE explorer web app: inspect an input, browse latents, steer, and see the SAE's overview.

``python app.py`` serves the default setup (OpenAI CLIP ViT-L/14 + the matching released MSAE
over a small Hub corpus), falling back to the built-in shapes world when the Hub is unreachable;
``python app.py --demo`` serves the built-in world directly. ``python app.py --help`` lists the
flags; each has a ``SAE_EXPLORER_*`` environment variable for Hugging Face Spaces.

This file is start-up only; the page itself is ``explorer_ui.build_demo``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from explorer_ui import build_demo
from explorer_ui.banner import loaded_summary
from sae_explorer.explorer_startup import StartupError, load_explorer
from sae_explorer.startup_config import ENV_PREFIX, StartupConfig, config_from_env

logger = logging.getLogger("sae_explorer.app")

DEFAULT_CONCURRENCY = 2
"""Requests served at once; the models are CPU/GPU-bound, so more only adds queueing jitter."""


# ---------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = config_from_env()
    parser = argparse.ArgumentParser(
        description="Serve the SAE explorer. Every flag also reads an environment variable "
        f"({ENV_PREFIX}CLIP, {ENV_PREFIX}SAE, ...); flags win.",
    )
    parser.add_argument("--clip", default=env.clip, help="open_clip model or builtin:shapes")
    parser.add_argument(
        "--pretrained", default=env.pretrained, help="open_clip pretrained tag or file"
    )
    parser.add_argument("--sae", default=env.sae, help="SAE source for load_sae, or 'auto'")
    parser.add_argument("--corpus", default=env.corpus, help="corpus source (folder, table, hf:..)")
    parser.add_argument("--max-items", type=int, default=env.max_items, help="corpus item cap")
    parser.add_argument("--cache-dir", default=env.cache_dir, help="index and dataset cache folder")
    parser.add_argument("--device", default=env.device, help="torch device for CLIP")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME"), help="bind address")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port"
    )
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument(
        "--demo", action="store_true", default=env.demo, help="built-in shapes world"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        default=env.strict,
        help="no fallback to the built-in world",
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests served at once"
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StartupConfig:
    return StartupConfig(
        clip=args.clip,
        pretrained=None if args.pretrained in (None, "", "none") else args.pretrained,
        sae=args.sae,
        corpus=args.corpus,
        max_items=args.max_items if args.max_items and args.max_items > 0 else None,
        cache_dir=args.cache_dir,
        device=args.device,
        demo=args.demo,
        strict=args.strict,
    )


def tqdm_progress():
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc="starting", unit="%", file=sys.stderr)

    def update(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_description(message[:60], refresh=True)

    return bar, update


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    bar, progress = tqdm_progress()
    try:
        explorer = load_explorer(config_from_args(args), progress=progress)
    except StartupError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    logger.info("serving %s", loaded_summary(explorer))
    demo = build_demo(explorer)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
