"""What the app loads at start: :class:`StartupConfig`, whose fields are the app's flags and
``SAE_EXPLORER_<NAME>`` environment variables (for Hugging Face Spaces) and whose help texts are
their help; :mod:`sae_explorer.cli` generates all three from the fields.

Light on purpose (no torch, no Hub client): ``python app.py --help`` imports only this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sae_explorer.cli import dataclass_from_env, doc

BUILTIN = "builtin:shapes"
BUILTIN_CORPUS = "builtin:shapes"
"""The built-in world's corpus (its default size); what ``--demo`` and the fallback index."""
DEFAULT_CLIP = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"
DEFAULT_CORPUS = "hf:uoft-cs/cifar10?split=test"
"""CIFAR-10 test images streamed from the Hub; ``DEFAULT_MAX_ITEMS`` of them are indexed."""
DEFAULT_MAX_ITEMS = 500
AUTO = "auto"
"""``--sae auto``: pick the released MSAE checkpoint that matches the CLIP model."""
ENV_PREFIX = "SAE_EXPLORER_"
NO_CAP_WORDS = ("none", "all", "0")


def text_or_none(raw: str) -> str | None:
    """The text, or None for ``none`` (any case) or an empty text."""
    return None if raw.strip().lower() in ("", "none") else raw


def item_cap(raw: str) -> int | None:
    """A positive item count, or None (no cap) for ``0``, ``none`` or ``all``."""
    if raw.strip().lower() in NO_CAP_WORDS:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError("give a whole number of items, or 0, none or all for no cap")
    return n or None


@dataclass(frozen=True)
class StartupConfig:
    """What to load at start; each field is a flag (``--max-items``) and an environment variable
    (``SAE_EXPLORER_MAX_ITEMS``), its help text the help of both."""

    clip: str = field(
        default=DEFAULT_CLIP,
        metadata=doc("open_clip model (ViT-L-14, hf-hub:org/repo, local-dir:/path) or " + BUILTIN),
    )
    pretrained: str | None = field(
        default=DEFAULT_PRETRAINED,
        metadata=doc(
            "open_clip pretrained tag or weights file, none for random weights; ignored for builtin:shapes",
            parse=text_or_none,
        ),
    )
    sae: str = field(
        default=AUTO,
        metadata=doc(
            "SAE source for load_sae (folder, .pth/.safetensors, hf-hub:org/repo/path, "
            "builtin:shapes), or 'auto' to pick the released MSAE checkpoint matching --clip"
        ),
    )
    corpus: str = field(
        default=DEFAULT_CORPUS,
        metadata=doc(
            "corpus source: folder, table, .txt, builtin:shapes[?n=&seed=] or "
            "hf:org/dataset[?split=]"
        ),
    )
    max_items: int | None = field(
        default=DEFAULT_MAX_ITEMS,
        metadata=doc(
            "cap on corpus items, 0, none or all for no cap; a streamed Hub dataset reads only "
            "this many rows",
            parse=item_cap,
        ),
    )
    index: str | None = field(
        default=None,
        metadata=doc(
            "a published index to serve, hf-hub:org/name[@revision] (python -m sae_explorer "
            "publish): downloaded and checked, no corpus and no encoding at start; --clip and "
            "--sae must load the models it was built with",
            parse=text_or_none,
        ),
    )
    cache_dir: str | None = field(
        default=None,
        metadata=doc(
            "where activation indexes and streamed datasets are kept; default "
            "$SAE_EXPLORER_CACHE or ~/.cache/sae-explorer"
        ),
    )
    device: str | None = field(
        default=None, metadata=doc("torch device for CLIP; default CUDA if available, else CPU")
    )
    demo: bool = field(
        default=False,
        metadata=doc("load the built-in shapes world (offline, seconds to start) instead"),
    )
    strict: bool = field(
        default=False,
        metadata=doc("fail instead of falling back to the built-in world when loading fails"),
    )

    @property
    def is_builtin(self) -> bool:
        return self.clip == BUILTIN

    def builtin(self) -> StartupConfig:
        """The built-in world with this config's cache and device."""
        return replace(
            self,
            clip=BUILTIN,
            pretrained=None,
            sae=BUILTIN,
            corpus=BUILTIN_CORPUS,
            max_items=None,
            index=None,
        )


def config_from_env(environ: Mapping[str, str] | None = None) -> StartupConfig:
    """The defaults overridden by the ``SAE_EXPLORER_<FIELD>`` variables that are set (not empty);
    ``ValueError`` names a variable whose value does not parse."""
    return dataclass_from_env(StartupConfig, ENV_PREFIX, environ)
