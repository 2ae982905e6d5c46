"""SAE explorer web app: inspect an input, browse latents, steer, and see the SAE's overview.

``python app.py`` serves the default setup (OpenAI CLIP ViT-L/14 + the matching released MSAE
over a small Hub corpus), falling back to the built-in shapes world when the Hub is unreachable;
``python app.py --demo`` serves the built-in world directly. ``python app.py --help`` lists the
flags; each of :class:`StartupConfig` has a ``SAE_EXPLORER_*`` environment variable for Hugging
Face Spaces.

This file is start-up only: flags, environment variables and their help are generated from two
config dataclasses (what to load, how to serve), parsed before anything heavy is imported, so
``--help`` answers at once; the page itself is ``explorer_ui.build_demo``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sae_explorer.cli import add_dataclass_args, dataclass_from_args, doc
from sae_explorer.startup_config import ENV_PREFIX, StartupConfig

logger = logging.getLogger("sae_explorer.app")


def default_concurrency() -> int:
    """Requests served at once, over all endpoints together, sized to the machine: one per core,
    at most 4 (the models already use every core for one request; more only adds memory and
    queueing jitter)."""
    return max(1, min(4, os.cpu_count() or 1))


DEFAULT_CONCURRENCY = default_concurrency()


def default_workers() -> int:
    """Processes computing pages beside the server's own: one per core beyond the first, at most
    3 (one Python process computes on about one core however many there are)."""
    return max(0, min(3, (os.cpu_count() or 1) - 1))


DEFAULT_WORKERS = default_workers()


@dataclass(frozen=True)
class ServeConfig:
    """How to serve the page; each field is a flag, as :class:`StartupConfig`'s are."""

    host: str | None = field(
        default=None,
        metadata=doc(
            "bind address, 0.0.0.0 to serve a network; default 127.0.0.1",
            env="GRADIO_SERVER_NAME",
        ),
    )
    port: int = field(default=7860, metadata=doc("port", env="GRADIO_SERVER_PORT"))
    share: bool = field(default=False, metadata=doc("create a public gradio.live link"))
    concurrency: int = field(
        default=DEFAULT_CONCURRENCY,
        metadata=doc(
            "requests served at once over all endpoints together (the rest queue); default one "
            "per core, at most 4",
            env="SAE_EXPLORER_CONCURRENCY",
        ),
    )
    request_timeout: float = field(
        default=60.0,
        metadata=doc(
            "seconds a request may take before its caller gets an error",
            env="SAE_EXPLORER_REQUEST_TIMEOUT",
        ),
    )
    max_upload_mb: float = field(
        default=20.0,
        metadata=doc(
            "largest upload or request body in MB (inline images count at their decoded size)",
            env="SAE_EXPLORER_MAX_UPLOAD_MB",
        ),
    )
    max_sessions: int = field(
        default=500,
        metadata=doc(
            "browser sessions whose state is kept (the oldest is dropped first)",
            env="SAE_EXPLORER_MAX_SESSIONS",
        ),
    )
    workers: int = field(
        default=DEFAULT_WORKERS,
        metadata=doc(
            "worker processes computing pages (forked from the loaded app, so nothing loads "
            "twice; CPU only); default one per core beyond the first, at most 3; 0: none",
            env="SAE_EXPLORER_WORKERS",
        ),
    )
    page_cache: int = field(
        default=1024,
        metadata=doc(
            "deterministic pages kept in memory (a latent's page, a text's analysis), the least "
            "recently used dropped first; 0 keeps none",
            env="SAE_EXPLORER_PAGE_CACHE",
        ),
    )

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_sessions < 1 or min(self.page_cache, self.workers) < 0:
            raise ValueError(
                "--concurrency and --max-sessions must be >= 1, --page-cache and --workers >= 0, "
                f"got {self.concurrency}, {self.max_sessions}, {self.page_cache} and {self.workers}"
            )
        if not (self.request_timeout > 0 and self.max_upload_mb > 0):
            raise ValueError(
                f"--request-timeout and --max-upload-mb must be > 0, got {self.request_timeout} "
                f"and {self.max_upload_mb}"
            )

    def limits(self) -> Any:
        """The serving limits (``explorer_ui.serving.ServeLimits``; imports gradio)."""
        from explorer_ui.serving import ServeLimits

        return ServeLimits(
            self.concurrency,
            self.request_timeout,
            self.max_upload_mb,
            self.max_sessions,
            page_cache=self.page_cache,
            workers=self.workers,
        )


class Args(NamedTuple):
    startup: StartupConfig
    serve: ServeConfig


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The flags of both configs; defaults from the environment (``environ``: ``os.environ``)."""
    parser = argparse.ArgumentParser(
        description="Serve the SAE explorer. Flags override the environment variables named in "
        "their help; a Hugging Face Space sets those in its settings."
    )
    try:
        add_dataclass_args(parser, StartupConfig, env_prefix=ENV_PREFIX, environ=environ)
        add_dataclass_args(parser, ServeConfig, environ=environ)
    except ValueError as e:  # a variable that does not parse, named with its value
        parser.error(str(e))
    return parser


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Args:
    parser = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        return Args(
            dataclass_from_args(StartupConfig, args), dataclass_from_args(ServeConfig, args)
        )
    except ValueError as e:  # values that parse but are out of range
        parser.error(str(e))


def tqdm_progress() -> tuple[Any, Callable[[float, str], None]]:
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc="starting", unit="%", file=sys.stderr)

    def update(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_description(message[:60], refresh=True)

    return bar, update


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    startup, serve = parse_args(argv)
    # Uploads and files handed out go to one folder of their own, which serving keeps bounded.
    os.environ.setdefault(
        "GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "sae-explorer-gradio")
    )
    # The heavy parts (torch, open_clip, gradio) only now that the flags are parsed.
    from explorer_ui import build_demo
    from explorer_ui.banner import loaded_summary
    from explorer_ui.serving import prepare_serving
    from sae_explorer.explorer_startup import StartupError, load_explorer

    bar, progress = tqdm_progress()
    try:
        explorer = load_explorer(startup, progress=progress)
    except StartupError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    logger.info("serving %s", loaded_summary(explorer))
    demo = build_demo(explorer)
    launch_kwargs = prepare_serving(demo, explorer, serve.limits())
    demo.launch(server_name=serve.host, server_port=serve.port, share=serve.share, **launch_kwargs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
