"""The shapes world: procedurally drawn images whose attributes are known exactly.

Every item is a coloured shape at a random position on a plain background, drawn from a seeded
generator keyed by ``(seed, index)``, so any single item can be regenerated on its own and a
corpus of thousands costs seconds to rebuild instead of megabytes to ship. Because the truth is
known, every claim the explorer makes about a latent ("this is the red detector") can be checked.

The world also owns the architecture of its tiny CLIP (``CLIP_ARCH``, an open_clip model config
shipped beside this file), registered with open_clip when first needed
(:func:`sae_explorer.builtin.register_clip_arch`). :mod:`sae_explorer.builtin` lists the world
and reaches it through :func:`load_corpus`, :func:`load_image` and :func:`vocabulary`.

CLI: ``python -m sae_explorer.worlds.shapes train`` retrains the world's CLIP and MSAE into
``sae_explorer/worlds/data/shapes`` (see ``sae_explorer.worlds.train_shapes``).
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": ("circle", "square", "triangle", "cross", "star"),
    "color": ("red", "orange", "yellow", "green", "blue", "purple"),
    "background": ("white", "black", "gray"),
    "size": ("small", "large"),
}
"""Attribute name -> its values; every item has exactly one value of each, drawn uniformly."""

IMAGE_SIZE = 64
"""Side of the generated images in pixels (the tiny CLIP's input size)."""

DEFAULT_DEMO_SEED = 0
DEFAULT_DEMO_SIZE = 3000
TRAIN_SEED = 1
"""Seed of the items the world's models were trained on; held-out checks use other seeds."""
HELDOUT_SEED = 2

CLIP_ARCH = "shapes-ViT-tiny"
"""open_clip architecture name of the world's tiny CLIP (config: ``shapes-ViT-tiny.json`` here)."""
CLIP_CONFIG_FPATH = Path(__file__).with_name(f"{CLIP_ARCH}.json")
SOURCE = "builtin:shapes"

_RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 20),
    "yellow": (240, 215, 30),
    "green": (35, 160, 55),
    "blue": (35, 75, 215),
    "purple": (135, 50, 185),
    "white": (242, 242, 242),
    "black": (18, 18, 18),
    "gray": (128, 128, 128),
}
# Circumradius as a fraction of the image side. Sizes are far apart and "small" is still several
# ViT patches wide, so the tiny model can see the silhouette.
_RADIUS_FRAC = {"small": 0.21, "large": 0.37}
_SUPERSAMPLE = 4  # draw 4x larger and box-downsample: cheap anti-aliasing


class ShapeItem(NamedTuple):
    image: Image.Image
    caption: str
    attributes: dict[str, str]


def caption(attributes: dict[str, str]) -> str:
    """The world's one caption template, e.g. "a large red circle on a white background"."""
    a = attributes
    return f"a {a['size']} {a['color']} {a['shape']} on a {a['background']} background"


def all_attribute_combinations() -> list[dict[str, str]]:
    """Every combination of attribute values (5*6*3*2 = 180), in a fixed order."""
    names = list(ATTRIBUTES)
    return [dict(zip(names, values)) for values in itertools.product(*ATTRIBUTES.values())]


def all_captions() -> list[str]:
    """Every distinct caption the world can produce, in ``all_attribute_combinations`` order."""
    return [caption(a) for a in all_attribute_combinations()]


def partial_captions(attributes: dict[str, str]) -> list[str]:
    """Shorter descriptions naming a subset of the attributes (extra text for training the SAE)."""
    a = attributes
    return [
        f"a {a['shape']}",
        f"a {a['color']} {a['shape']}",
        f"a {a['size']} {a['shape']}",
        f"something {a['color']}",
        f"a {a['background']} background",
        f"a {a['color']} {a['shape']} on a {a['background']} background",
    ]


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    return {name: values[int(rng.integers(len(values)))] for name, values in ATTRIBUTES.items()}


def make_item(index: int, seed: int = 0, image_size: int = IMAGE_SIZE) -> ShapeItem:
    """Draw item ``index`` of the world with ``seed``: same arguments, same pixels, anywhere."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, index])
    attributes = sample_attributes(rng)
    image = render(attributes, rng, image_size)
    return ShapeItem(image=image, caption=caption(attributes), attributes=attributes)


def make_items(n: int, seed: int = 0, start: int = 0) -> list[ShapeItem]:
    return [make_item(i, seed) for i in range(start, start + n)]


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, ...]:
    noise = rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(rgb) + noise, 0, 255))


def _star_points(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else 0.45 * r
        theta = angle + i * math.pi / 5 - math.pi / 2
        points.append((cx + radius * math.cos(theta), cy + radius * math.sin(theta)))
    return points


def _regular_points(
    cx: float, cy: float, r: float, n: int, angle: float
) -> list[tuple[float, float]]:
    return [
        (
            cx + r * math.cos(angle + 2 * math.pi * i / n),
            cy + r * math.sin(angle + 2 * math.pi * i / n),
        )
        for i in range(n)
    ]


def _cross_points(cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    arm = 0.36 * r  # half-width of each arm
    local = [
        (arm, r), (arm, arm), (r, arm), (r, -arm), (arm, -arm), (arm, -r),
        (-arm, -r), (-arm, -arm), (-r, -arm), (-r, arm), (-arm, arm), (-arm, r),
    ]  # fmt: skip
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in local]


class Layout(NamedTuple):
    """Where and how one item's shape is drawn, in supersampled pixels."""

    background: tuple[int, ...]
    fill: tuple[int, ...]
    r: float  # circumradius
    cx: float
    cy: float
    angle: float  # radians


def layout(attributes: dict[str, str], rng: np.random.Generator, image_size: int) -> Layout:
    """Random position (fully inside), small rotation, slight colour jitter."""
    big = image_size * _SUPERSAMPLE
    background = _jitter(_RGB[attributes["background"]], rng, 8)
    fill = _jitter(_RGB[attributes["color"]], rng, 14)
    r = big * _RADIUS_FRAC[attributes["size"]] * float(rng.uniform(0.9, 1.1))
    margin = r + _SUPERSAMPLE
    cx = float(rng.uniform(margin, big - margin))
    cy = float(rng.uniform(margin, big - margin))
    angle = float(rng.uniform(-0.3, 0.3))  # radians, about +-17 degrees
    return Layout(background, fill, r, cx, cy, angle)


def render(attributes: dict[str, str], rng: np.random.Generator, image_size: int) -> Image.Image:
    """Draw one item (its :func:`layout` drawn from ``rng``)."""
    at = layout(attributes, rng, image_size)
    canvas = Image.new("RGB", (image_size * _SUPERSAMPLE,) * 2, at.background)
    _draw_shape(ImageDraw.Draw(canvas), attributes["shape"], at, at.fill)
    return canvas.reduce(_SUPERSAMPLE)


def shape_mask(index: int, seed: int = 0, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """bool ``[image_size, image_size]``: where item ``index`` of ``seed`` has its shape (pixels
    at least half covered), drawn from the same random draws as :func:`make_item`."""
    rng = np.random.default_rng([seed, index])
    attributes = sample_attributes(rng)
    at = layout(attributes, rng, image_size)
    canvas = Image.new("L", (image_size * _SUPERSAMPLE,) * 2, 0)
    _draw_shape(ImageDraw.Draw(canvas), attributes["shape"], at, 255)
    return np.asarray(canvas.reduce(_SUPERSAMPLE)) >= 128


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, at: Layout, fill) -> None:
    cx, cy, r, angle = at.cx, at.cy, at.r, at.angle
    if shape == "circle":
        rc = 0.85 * r  # equal-ish visual area with the square
        draw.ellipse((cx - rc, cy - rc, cx + rc, cy + rc), fill=fill)
    elif shape == "square":
        draw.polygon(_regular_points(cx, cy, r, 4, angle + math.pi / 4), fill=fill)
    elif shape == "triangle":
        draw.polygon(_regular_points(cx, cy + 0.15 * r, 1.1 * r, 3, angle - math.pi / 2), fill=fill)
    elif shape == "cross":
        draw.polygon(_cross_points(cx, cy, r, angle), fill=fill)
    elif shape == "star":
        draw.polygon(_star_points(cx, cy, 1.1 * r, angle), fill=fill)
    else:
        raise AssertionError(f"unhandled shape {shape!r}")


def prompt_templates(attribute: str) -> list[str]:
    """Zero-shot templates for one attribute (``label`` is the shape, the corpus's label): every
    world caption with ``{}`` in that attribute's slot, the other attributes enumerated, so that
    a class's prompts are exactly the captions holding it. Empty for an unknown attribute."""
    attribute = "shape" if attribute == "label" else attribute
    if attribute not in ATTRIBUTES:
        return []
    others = [name for name in ATTRIBUTES if name != attribute]
    templates = []
    for values in itertools.product(*(ATTRIBUTES[name] for name in others)):
        slots = dict(zip(others, values), **{attribute: "{}"})
        templates.append(caption(slots))
    return templates


def vocabulary() -> list[str]:
    """The world's attribute values, backgrounds as "<colour> background": names for its latents."""
    out = []
    for attribute, values in ATTRIBUTES.items():
        out.extend(f"{v} background" if attribute == "background" else v for v in values)
    return out


def load_image(options: dict[str, str]) -> Image.Image:
    """The image of ``builtin:shapes?seed=<seed>&index=<index>`` (a corpus item's source)."""
    return make_item(int(options["index"]), seed=int(options["seed"])).image


def load_corpus(source: str, options: dict[str, str], max_items: int | None):
    """``builtin:shapes?n=&seed=&modality=``: images (drawn only when read) and captions."""
    from sae_explorer.corpus import MODALITIES, Corpus, CorpusItem, spread_indices

    unknown = sorted(set(options) - {"n", "seed", "modality"})
    if unknown:
        raise ValueError(f"unknown options {unknown} for {SOURCE}; allowed: n, seed, modality")
    try:
        n = int(options.get("n", DEFAULT_DEMO_SIZE))
        seed = int(options.get("seed", DEFAULT_DEMO_SEED))
    except ValueError as e:
        raise ValueError(f"{SOURCE} options n and seed must be integers: {e}") from e
    modality = options.get("modality", "both")
    if modality not in ("both", *MODALITIES):
        raise ValueError(f"{SOURCE} modality must be image, text or both, got {modality!r}")
    if n < 1:
        raise ValueError(f"{SOURCE} needs n >= 1, got {n}")
    items = []
    for index in spread_indices(n, max_items):
        # Attributes and caption come from the same seeded draw as the image; the image itself
        # is only drawn when asked for.
        attributes = sample_attributes(np.random.default_rng([seed, int(index)]))
        ref = f"{SOURCE}?seed={seed}&index={index}"
        label = attributes.get("shape")
        if modality in ("both", "image"):
            items.append(CorpusItem(f"{seed}/{index}:image", "image", ref, label, attributes))
        if modality in ("both", "text"):
            text = caption(attributes)
            items.append(CorpusItem(f"{seed}/{index}:text", "text", text, label, attributes))
    return Corpus(items, source, (f"{SOURCE}:image_size={IMAGE_SIZE}",))


def main(argv: list[str] | None = None) -> int:
    """``python -m sae_explorer.worlds.shapes train ...``: rebuild the world's models."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "train":
        print(
            "usage: python -m sae_explorer.worlds.shapes train [options]  (train --help for options)"
        )
        return 0 if argv and argv[0] in {"-h", "--help"} else 2
    from sae_explorer.worlds import train_shapes

    return train_shapes.main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
