"""Vocabulary naming and text search of latents, on a tiny random CLIP with planted latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _precompute_helpers import build_sae

from sae_explorer.naming import (
    LatentNames,
    default_vocabulary,
    embed_words,
    load_vocabulary,
    name_latents,
    search_latents,
)
from sae_explorer.sae import SAE

WORDS = ["red", "blue", "circle", "square", "ocean", "forest", "guitar", "bread"]


@pytest.fixture(scope="module")
def encoder():
    from sae_explorer.encoder import load_encoder
    from sae_explorer.worlds import shapes

    return load_encoder(shapes.CLIP_ARCH, device="cpu")


@pytest.fixture(scope="module")
def planted(encoder):
    """An SAE whose latent i points exactly at word ``PLANT[i]`` (in model space, centred),
    plus random latents; with a non-trivial input preprocessing (mean, scaling)."""
    base = build_sae(encoder.embed_dim, 12, seed=3)
    tensors = base.tensors()
    raw = embed_words(encoder, WORDS)
    tensors["mean"] = raw.mean(0) * 0.5
    tensors["pre_bias"] = torch.randn(encoder.embed_dim) * 0.01
    cfg = base.cfg.__class__(**{**base.cfg.to_dict(), "scaling_factor": 2.0})
    sae = SAE.from_tensors(cfg, tensors)
    xm = sae.to_model_space(raw)
    unit = torch.nn.functional.normalize(xm - xm.mean(0), dim=-1)
    plant = [3, 0, 6]  # latent i -> word index
    decoder = tensors["decoder"].clone()
    decoder[: len(plant)] = unit[plant]
    tensors["decoder"] = decoder
    tensors["encoder"] = decoder.t().contiguous()
    return SAE.from_tensors(cfg, tensors), raw, plant


def test_planted_latents_get_their_word(planted, encoder):
    sae, raw, plant = planted
    names = name_latents(encoder, sae, WORDS)
    assert names.word_ids_ln.shape == (12, 5)
    for latent, word in enumerate(plant):
        top = names.top(latent)
        assert top[0].name == WORDS[word] and top[0].cosine == pytest.approx(1.0, abs=1e-5)
        assert names.label(latent) == WORDS[word]
        assert [t.cosine for t in top] == sorted((t.cosine for t in top), reverse=True)
    # the second score is the latent's own activation on that word
    with torch.inference_mode():
        z = sae.encode(raw).numpy()
    for latent in range(12):
        ids = names.word_ids_ln[latent]
        assert np.allclose(names.activation_ln[latent], z[ids, latent], atol=1e-5)
    # precomputed embeddings give the same names without the text encoder
    again = name_latents(None, sae, WORDS, embeddings_vd=raw)
    assert np.array_equal(again.word_ids_ln, names.word_ids_ln)


def test_names_round_trip_and_table(planted, encoder, tmp_path):
    sae, raw, _ = planted
    names = name_latents(encoder, sae, WORDS, embeddings_vd=raw, source="test words")
    names.save(tmp_path)
    loaded = LatentNames.load(tmp_path)
    assert loaded.vocabulary == tuple(WORDS) and loaded.source == "test words"
    assert np.array_equal(loaded.word_ids_ln, names.word_ids_ln)
    assert np.array_equal(loaded.center_d, names.center_d)
    table = loaded.to_frame()
    assert len(table) == 12 * 5 and list(table.columns) == [
        "latent_id",
        "rank",
        "name",
        "cosine",
        "activation",
        "auroc",
    ]
    assert table["auroc"].isna().all()  # not scored: scores come with an index
    assert table.loc[0, "name"] == names.label(0)


def test_search_finds_the_planted_latent(planted, encoder):
    sae, raw, plant = planted
    names = name_latents(encoder, sae, WORDS, embeddings_vd=raw)
    found = search_latents("guitar", encoder, sae, names, k=4)
    assert found.loc[0, "latent_id"] == plant.index(6)
    assert found.loc[0, "name_match"] and found.loc[0, "name"] == "guitar"
    assert found["score"].is_monotonic_decreasing
    # without names: decoder cosine only (no vocabulary centring), still a ranked table
    bare = search_latents("square", encoder, sae, None, k=3)
    assert len(bare) == 3 and not bare["name_match"].any()
    with pytest.raises(ValueError, match="query is empty"):
        search_latents("  ", encoder, sae, names)
    with pytest.raises(ValueError, match="names are for 12 latents"):
        search_latents("red", encoder, build_sae(encoder.embed_dim, 7), names)


def test_default_vocabulary():
    words = default_vocabulary(n_words=500)
    assert len(words) == 500 and len(set(words)) == 500
    assert "the" not in words and "which" not in words  # function words are left out
    assert all(w.isalpha() and len(w) >= 3 for w in words)
    assert default_vocabulary(n_words=500) == words
    shapes_words = default_vocabulary("builtin:shapes", n_words=100)
    for word in ("red", "purple", "circle", "star", "white background", "small"):
        assert word in shapes_words
    with pytest.raises(ValueError, match="unknown built-in world"):
        default_vocabulary("planets")


def test_vocabulary_file(tmp_path):
    fpath = tmp_path / "v.txt"
    fpath.write_text("# colours\nred\n\nblue\nred\n  dark green  \n")
    assert load_vocabulary(fpath) == ["red", "blue", "dark green"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="has no words"):
        load_vocabulary(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="not found"):
        load_vocabulary(tmp_path / "missing.txt")
