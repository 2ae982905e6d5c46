"""The shapes world generator: deterministic items whose pixels match their labels."""

from __future__ import annotations

import collections

import numpy as np
import open_clip
import pytest

from sae_explorer import builtin
from sae_explorer.corpus import load_corpus
from sae_explorer.worlds import shapes


def _rgb_distance(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).max())


def test_items_are_deterministic_per_seed_and_index() -> None:
    a = shapes.make_item(17, seed=5)
    b = shapes.make_item(17, seed=5)
    assert a.image.tobytes() == b.image.tobytes() and a.caption == b.caption
    # regenerating one item alone equals generating it inside a run
    assert shapes.make_items(20, seed=5)[17].image.tobytes() == a.image.tobytes()
    assert shapes.make_item(17, seed=6).image.tobytes() != a.image.tobytes()
    assert shapes.make_item(18, seed=5).image.tobytes() != a.image.tobytes()
    with pytest.raises(ValueError, match="index"):
        shapes.make_item(-1)


def test_items_cover_every_attribute_value_and_caption_them() -> None:
    items = shapes.make_items(600, seed=0)
    for name, values in shapes.ATTRIBUTES.items():
        counts = collections.Counter(it.attributes[name] for it in items)
        assert set(counts) == set(values)
        assert min(counts.values()) > 600 / len(values) / 2  # roughly uniform
    for it in items[:50]:
        assert it.image.mode == "RGB" and it.image.size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
        assert it.caption == shapes.caption(it.attributes)
        assert all(it.attributes[k] in it.caption for k in shapes.ATTRIBUTES)
    assert shapes.caption(
        {"size": "large", "color": "red", "shape": "circle", "background": "white"}
    ) == ("a large red circle on a white background")


def test_pixels_agree_with_the_labels() -> None:
    """Background in the corners, shape colour at its centre of mass, area by size and shape."""
    areas = collections.defaultdict(list)
    for it in shapes.make_items(300, seed=1):
        px = np.asarray(it.image).astype(float)
        bg = np.asarray(shapes._RGB[it.attributes["background"]], dtype=float)
        fg = np.asarray(shapes._RGB[it.attributes["color"]], dtype=float)
        corners = [px[0, 0], px[0, -1], px[-1, 0], px[-1, -1]]
        assert sum(_rgb_distance(c, bg) <= 8 for c in corners) >= 3
        mask = np.abs(px - bg).max(axis=2) > 40
        near_fg = np.abs(px - fg).max(axis=2) <= 20
        assert near_fg.sum() >= 0.7 * mask.sum() > 0
        areas[(it.attributes["size"], it.attributes["shape"])].append(mask.mean())
    for shape in shapes.ATTRIBUTES["shape"]:
        assert min(areas[("large", shape)]) > 1.8 * max(areas[("small", shape)])
    # areas follow the geometry (per unit circumradius^2: circle 2.27, cross 2.36, square 2.0,
    # star 1.60, triangle 1.57)
    area = {s: np.mean(areas[("large", s)]) for s in shapes.ATTRIBUTES["shape"]}
    assert (
        min(area["circle"], area["cross"])
        > area["square"]
        > 1.15 * max(area["star"], area["triangle"])
    )


def test_caption_helpers() -> None:
    combos = shapes.all_attribute_combinations()
    assert len(combos) == np.prod([len(v) for v in shapes.ATTRIBUTES.values()])
    assert len(set(shapes.all_captions())) == len(combos)
    partial = shapes.partial_captions(combos[0])
    assert all(isinstance(p, str) and p for p in partial)


def test_demo_corpus_is_varied_and_held_out_from_training() -> None:
    corpus = load_corpus(builtin.DEFAULT.source)
    n_images = sum(item.modality == "image" for item in corpus.items)
    assert n_images == shapes.DEFAULT_DEMO_SIZE and len(corpus.items) == 2 * n_images
    demo = {it.image.tobytes() for it in shapes.make_items(200, seed=shapes.DEFAULT_DEMO_SEED)}
    train = {it.image.tobytes() for it in shapes.make_items(200, seed=shapes.TRAIN_SEED)}
    assert len(demo) == 200 and not demo & train


def test_clip_arch_is_registered_with_open_clip() -> None:
    builtin.DEFAULT.register_clip_arch()
    builtin.DEFAULT.register_clip_arch()  # idempotent
    assert shapes.CLIP_ARCH in open_clip.list_models()
    model = open_clip.create_model(shapes.CLIP_ARCH)
    cfg = open_clip.get_model_config(shapes.CLIP_ARCH)
    assert model.visual.image_size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    assert model.text_projection.shape[1] == cfg["embed_dim"]
    tokenizer = open_clip.get_tokenizer(shapes.CLIP_ARCH)
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    longest = max(
        (shapes.all_captions() + shapes.partial_captions(shapes.make_item(0).attributes)), key=len
    )
    tokens = tokenizer([longest])[0]
    assert tokens[-1] == 0  # the longest world caption fits the context without truncation
