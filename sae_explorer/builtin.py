"""One registry of the built-in worlds: a generated corpus with known ground truth, a tiny CLIP and
an SAE trained on it, shipped as package data so they load offline.

``builtin:<name>`` names a world wherever a CLIP model, an SAE or a corpus is asked for
(``builtin:shapes?n=2000&seed=0`` for a corpus). :func:`resolve` is the one place such a name is
read; a world's module (imported only when it is used) provides its corpus, images, vocabulary and
CLIP architecture.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

SCHEME = "builtin:"
DATA_DPATH = Path(__file__).resolve().with_name("worlds") / "data"


class BuiltinWorld(NamedTuple):
    """One built-in world."""

    name: str
    module_name: str
    """Its module: ``load_corpus(source, options, max_items)``, ``load_image(options)``,
    ``vocabulary()``, ``CLIP_CONFIG_FPATH`` and, optionally, ``prompt_templates(attribute)``
    (zero-shot templates its tiny CLIP understands, for ``evaluate``)."""
    clip_arch: str
    """The open_clip architecture of its CLIP, registered with open_clip when first needed."""
    n_words: int
    """Frequent English words its naming vocabulary adds to the world's own words."""

    @property
    def source(self) -> str:
        return f"{SCHEME}{self.name}"

    @property
    def dpath(self) -> Path:
        """Folder with ``clip/`` (an open_clip ``local-dir``) and ``sae/`` (project format)."""
        return DATA_DPATH / self.name

    @property
    def clip_dpath(self) -> Path:
        return self.dpath / "clip"

    @property
    def sae_dpath(self) -> Path:
        return self.dpath / "sae"

    def module(self) -> ModuleType:
        return importlib.import_module(self.module_name)

    def register_clip_arch(self) -> None:
        """Make ``clip_arch`` a known open_clip architecture (idempotent)."""
        import open_clip

        if self.clip_arch not in open_clip.list_models():
            open_clip.add_model_config(self.module().CLIP_CONFIG_FPATH)


WORLDS: dict[str, BuiltinWorld] = {
    "shapes": BuiltinWorld("shapes", "sae_explorer.worlds.shapes", "shapes-ViT-tiny", n_words=0),
}
DEFAULT = WORLDS["shapes"]
"""The world ``--demo`` and the app's offline fallback load."""


def is_builtin(source: object) -> bool:
    return str(source).startswith(SCHEME)


def resolve(source: str) -> BuiltinWorld:
    """The world ``builtin:<name>[?options]`` (or a bare ``<name>``) names; ValueError listing the
    available ones otherwise."""
    name = str(source).removeprefix(SCHEME).partition("?")[0]
    if name not in WORLDS:
        raise ValueError(
            f"unknown built-in world {name!r} (from {source!r}); available: "
            f"{[w.source for w in WORLDS.values()]}"
        )
    return WORLDS[name]


def world_of(*sources: str) -> BuiltinWorld | None:
    """The built-in world the first ``builtin:`` source among ``sources`` names, if any."""
    return next((resolve(s) for s in sources if is_builtin(s)), None)


def register_clip_arch(model: str) -> None:
    """Register a world's CLIP architecture when ``model`` names it (tests build random-init
    models of it by name)."""
    for world in WORLDS.values():
        if model == world.clip_arch:
            world.register_clip_arch()
