"""Per-modality input statistics: an image-trained SAE encodes texts with text statistics in the
index, the names and every explorer action; an SAE trained on both, or that does not say, is
untouched."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _precompute_helpers import assert_same_index, build_sae

import sae_explorer.precompute as pc
from sae_explorer.checkpoints import load_sae, save_sae
from sae_explorer.corpus import CorpusItem, load_corpus
from sae_explorer.explorer import Explorer
from sae_explorer.index import INPUT_STATS_NAME, active_entries, top_codes
from sae_explorer.modality_stats import (
    ModalitySAEs,
    ModalityStats,
    OwnStats,
    StatsPlan,
    plan_stats,
    stats_from_embeddings,
)
from sae_explorer.naming import world_vocabulary
from sae_explorer.precompute import PrecomputeConfig, cache_key, index_embeddings, precompute
from sae_explorer.sae import InputStats
from sae_explorer.steering import Edit
from sae_explorer.train import TrainConfig, train_sae

CFG = PrecomputeConfig(top_k=16, top_m=5, n_samples=12, chunk_size=8, batch_size=8, n_words=0)
N_SHAPES = 12
CORPUS = f"builtin:shapes?n={N_SHAPES}"
TEXT = "a large red circle on a white background"


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def encoder():
    from sae_explorer.encoder import load_encoder
    from sae_explorer.worlds import shapes

    return load_encoder(shapes.CLIP_ARCH, device="cpu")


def modality_sae(d: int, training_modality: str | None, seed: int = 0):
    """A random Matryoshka SAE with a non-zero mean and scaling factor, and a training modality."""
    sae = build_sae(d, 80, seed=seed, matryoshka=4, scaling_factor=1.7)
    with torch.no_grad():
        sae.mean.copy_(torch.randn(d, generator=torch.Generator().manual_seed(seed + 1)))
    if training_modality is not None:
        sae.provenance = {"training_modality": training_modality}
    return sae


@pytest.fixture(scope="module")
def image_sae(encoder):
    return modality_sae(encoder.embed_dim, "image")


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(CORPUS)


@pytest.fixture(scope="module")
def image_index(encoder, image_sae, corpus, tmp_path_factory):
    return precompute(encoder, image_sae, corpus, tmp_path_factory.mktemp("cache"), CFG)


@pytest.fixture(scope="module")
def image_explorer(encoder, image_sae, image_index, corpus):
    return Explorer(encoder, image_sae, image_index, corpus)


def rows_of(index, modality: str) -> np.ndarray:
    return np.flatnonzero((index.items["modality"] == modality).to_numpy())


def corpus_texts(encoder, corpus, index) -> torch.Tensor:
    """Fresh fp32 embeddings of the index's text rows, in row order."""
    positions = index.items["corpus_idx"].to_numpy()[rows_of(index, "text")]
    return encoder.encode_texts([corpus.items[int(p)].source for p in positions])


def direct_codes(sae, x_nd: torch.Tensor, k: int) -> list[list[int]]:
    """Each row's top-k latent ids, as the index stores them."""
    with torch.inference_mode():
        codes = top_codes(active_entries(sae.encode(x_nd)), k)
    bounds = np.concatenate([[0], np.cumsum(codes.counts_b)])
    return [codes.ids[lo:hi].tolist() for lo, hi in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------- the index
def test_index_texts_go_through_text_statistics(image_index, image_sae, encoder, corpus):
    stats = image_index.input_stats
    assert stats.image is None and stats.text is not None
    x_text = corpus_texts(encoder, corpus, image_index)
    want = stats_from_embeddings(image_sae, x_text)
    np.testing.assert_allclose(stats.text.stats.mean_d, want.mean_d, atol=1e-5)
    assert stats.text.stats.scaling_factor == pytest.approx(want.scaling_factor, rel=1e-5)

    text_sae = image_sae.with_input_stats(stats.text.stats)
    expected = direct_codes(text_sae, x_text, CFG.top_k)
    assert expected != direct_codes(image_sae, x_text, CFG.top_k)  # the two are told apart
    stored = [image_index.item_codes(int(r)).ids.tolist() for r in rows_of(image_index, "text")]
    assert stored == expected
    image_rows = rows_of(image_index, "image")
    positions = image_index.items["corpus_idx"].to_numpy()[image_rows]
    x_image = encoder.encode_images([corpus.load_image(int(p)) for p in positions])
    stored = [image_index.item_codes(int(r)).ids.tolist() for r in image_rows]
    assert stored == direct_codes(image_sae, x_image, CFG.top_k)  # the checkpoint's statistics


def test_manifest_and_files_record_the_statistics(image_index, image_sae, encoder, corpus):
    manifest = image_index.manifest
    text_source = f"corpus texts (n={N_SHAPES})"
    assert manifest["input_stats"] == {"image": "checkpoint", "text": text_source}
    assert INPUT_STATS_NAME in manifest["files"]
    old_key = cache_key(encoder.cache_id, image_sae.content_hash, corpus.manifest_hash, CFG)
    assert manifest["key"] != old_key  # an index encoded with image statistics is not reused


def test_names_score_words_through_text_statistics(image_index, image_sae, encoder):
    names = image_index.names
    assert names is not None and set(names.vocabulary) == set(world_vocabulary("shapes"))
    text_sae = image_index.input_stats.saes(image_sae).text
    x_vd = encoder.encode_texts(list(names.vocabulary))
    with torch.inference_mode():
        z_text_vl, z_image_vl = text_sae.encode(x_vd), image_sae.encode(x_vd)
    ids_ln = torch.as_tensor(names.word_ids_ln, dtype=torch.long)
    latent_ln = torch.arange(names.n_latents)[:, None].expand_as(ids_ln)
    np.testing.assert_allclose(names.activation_ln, z_text_vl[ids_ln, latent_ln], atol=1e-4)
    assert not np.allclose(names.activation_ln, z_image_vl[ids_ln, latent_ln], atol=1e-4)


def test_a_resumed_build_keeps_its_statistics(
    encoder, image_sae, corpus, image_index, tmp_path, monkeypatch
):
    with pytest.raises(InterruptedError):
        precompute(encoder, image_sae, corpus, tmp_path, CFG, stop_after_chunks=1)
    fail = lambda *a, **k: pytest.fail("recomputed the statistics on resume")  # noqa: E731
    monkeypatch.setattr(pc, "corpus_stats", fail)
    resumed = precompute(encoder, image_sae, corpus, tmp_path, CFG)
    assert_same_index(image_index, resumed)


def test_statistics_come_from_the_vocabulary_without_corpus_texts(encoder, image_sae, tmp_path):
    corpus = load_corpus(CORPUS + "&modality=image")
    index = precompute(encoder, image_sae, corpus, tmp_path, CFG)
    words = world_vocabulary("shapes")  # n_words=0: the built-in world's own words
    assert index.manifest["input_stats"]["text"] == f"vocabulary (n={len(words)})"
    want = stats_from_embeddings(image_sae, encoder.encode_texts(words))
    np.testing.assert_allclose(index.input_stats.text.stats.mean_d, want.mean_d, atol=1e-5)
    assert index.input_stats.text.stats.scaling_factor == pytest.approx(want.scaling_factor)
    explorer = Explorer(encoder, image_sae, index, corpus)
    query = explorer.text_query(TEXT)
    z_l = image_sae.with_input_stats(want).encode(torch.from_numpy(query.x_d)[None])[0]
    top = explorer.inspect(query).table
    np.testing.assert_allclose(top["activation"], z_l[top["latent"]].numpy(), atol=1e-3)
    other = PrecomputeConfig(**{**CFG.__dict__, "vocabulary": None, "n_words": 5})
    assert pc.corpus_key(encoder, image_sae, corpus, other).key != index.manifest["key"]


def test_a_text_trained_sae_gets_image_statistics_from_image_rows(tmp_path):
    sae = modality_sae(32, "text", seed=3)
    x = np.random.default_rng(0).standard_normal((40, 32)).astype(np.float32)
    x[::2] += 3.0  # the "images" sit apart, as in CLIP
    items = [CorpusItem(str(i), "image" if i % 2 == 0 else "text", str(i)) for i in range(40)]
    index = index_embeddings(sae, x, tmp_path / "index", CFG, items)
    assert index.manifest["input_stats"] == {"image": "corpus images (n=20)", "text": "checkpoint"}
    image_sae = sae.with_input_stats(stats_from_embeddings(sae, x[::2]))
    expected = direct_codes(image_sae, torch.from_numpy(x[::2]), CFG.top_k)
    assert [index.item_codes(i).ids.tolist() for i in range(0, 40, 2)] == expected
    expected = direct_codes(sae, torch.from_numpy(x[1::2]), CFG.top_k)
    assert [index.item_codes(i).ids.tolist() for i in range(1, 40, 2)] == expected
    bare = index_embeddings(sae, x, tmp_path / "bare", CFG)  # no items: modality unknown
    assert bare.manifest["input_stats"] == {"image": "checkpoint", "text": "checkpoint"}


# ---------------------------------------------------------------------- both / not said
@pytest.mark.parametrize("training_modality", ["both", None])
def test_an_sae_trained_on_both_or_unsaid_changes_nothing(
    encoder, corpus, training_modality, tmp_path
):
    sae = modality_sae(encoder.embed_dim, training_modality)
    index = precompute(encoder, sae, corpus, tmp_path / "cache", CFG)
    key = cache_key(encoder.cache_id, sae.content_hash, corpus.manifest_hash, CFG)
    assert index.manifest["key"] == key  # the key of indexes built before: still reused
    assert index.manifest["input_stats"] == {"image": "checkpoint", "text": "checkpoint"}
    assert not (index.dpath / INPUT_STATS_NAME).exists()
    explorer = Explorer(encoder, sae, index, corpus)
    assert explorer.saes.image is sae and explorer.saes.text is sae
    query = explorer.text_query(TEXT)
    z_l = sae.encode(torch.from_numpy(query.x_d)[None])[0]
    top = explorer.inspect(query).table
    assert top["activation"].tolist() == [round(float(z_l[i]), 4) for i in top["latent"]]

    x = np.random.default_rng(1).standard_normal((40, encoder.embed_dim)).astype(np.float32)
    items = [CorpusItem(str(i), ("image", "text")[i % 2], str(i)) for i in range(40)]
    emb_index = index_embeddings(sae, x, tmp_path / "emb", CFG, items)
    with torch.inference_mode():  # what the build did before: sae.encode, chunk by chunk
        parts = [sae.encode(torch.from_numpy(x[lo : lo + 8])) for lo in range(0, 40, 8)]
    codes = top_codes(active_entries(torch.cat(parts)), CFG.top_k)
    assert np.array_equal(np.asarray(emb_index.codes_ids), codes.ids)
    assert np.array_equal(np.asarray(emb_index.codes_values), codes.values)


# ---------------------------------------------------------------------- the explorer
def test_explorer_text_query_uses_text_statistics(image_explorer, image_index, image_sae):
    text_sae = image_sae.with_input_stats(image_index.input_stats.text.stats)
    query = image_explorer.text_query(TEXT)
    x_1d = torch.from_numpy(query.x_d)[None]
    result = image_explorer.inspect(query)
    out = text_sae.forward(x_1d)
    z_l = out.z_bl[0]
    top = result.table
    assert top["latent"].tolist() == z_l.argsort(descending=True)[: len(top)].tolist()
    np.testing.assert_allclose(top["activation"], z_l[top["latent"]].numpy(), atol=1e-4)
    cosine = float(torch.cosine_similarity(x_1d, out.x_hat_bd)[0])
    assert result.diagnostics.cosine == pytest.approx(cosine, abs=1e-4)
    assert result.diagnostics.input_statistics == f"text statistics: corpus texts (n={N_SHAPES})"
    latents = image_explorer.top_latents(query)
    np.testing.assert_allclose(latents["value"], z_l[latents["latent"]].numpy(), atol=1e-5)


def test_image_and_item_queries_use_their_own_modality(image_explorer, image_index, image_sae):
    image_row = int(rows_of(image_index, "image")[0])
    image_query = image_explorer.image_query(image_index.load_image(image_row))
    assert image_explorer.sae_for(image_query) is image_sae
    diagnostics = image_explorer.inspect(image_query).diagnostics
    assert diagnostics.input_statistics == "checkpoint (image) statistics"
    text_item = image_explorer.item_query(int(rows_of(image_index, "text")[0]))
    assert image_explorer.sae_for(text_item) is image_explorer.saes.text
    assert image_explorer.inspect(text_item).diagnostics.input_statistics.startswith("text")


def test_steering_a_text_decodes_with_text_statistics(image_explorer, image_index, image_sae):
    text_sae = image_sae.with_input_stats(image_index.input_stats.text.stats)
    query = image_explorer.text_query(TEXT)
    x_1d = torch.from_numpy(query.x_d)[None]
    z_1l = text_sae.encode(x_1d)
    latent = int(z_1l[0].argmax())
    result = image_explorer.steer(query, [Edit(latent, "scale", 3.0)])
    z_after = z_1l.clone()
    z_after[0, latent] *= 3.0
    x_after = x_1d + text_sae.decode(z_after) - text_sae.decode(z_1l)
    assert result.cosine_to_original == pytest.approx(
        float(torch.cosine_similarity(x_after, x_1d)[0]), abs=1e-4
    )
    assert result.edits["before"].tolist() == [round(float(z_1l[0, latent]), 4)]


def test_overview_encodes_each_modality_with_its_statistics(image_explorer, image_index, image_sae):
    saes = image_index.input_stats.saes(image_sae)
    x_nd = torch.from_numpy(np.asarray(image_index.embeddings, np.float32))
    sq_err = 0.0
    for modality in ("image", "text"):
        rows = torch.from_numpy(rows_of(image_index, modality))
        sq_err += float(((x_nd[rows] - saes.of(modality).forward(x_nd[rows]).x_hat_bd) ** 2).sum())
    total_var = float(((x_nd - x_nd.mean(0)) ** 2).sum())
    stats = image_explorer.overview().stats
    assert stats.fvu == pytest.approx(sq_err / total_var, rel=1e-4)
    assert stats.input_statistics == image_index.manifest["input_stats"]


def test_top_texts_of_a_latent_use_text_statistics(image_explorer, image_index, image_sae):
    text_sae = image_explorer.saes.text
    rows = rows_of(image_index, "text")
    x_nd = torch.from_numpy(np.asarray(image_index.embeddings[rows], np.float32))
    z_nl = text_sae.encode(x_nd)
    latent = int(z_nl.sum(0).argmax())
    top = image_explorer.top_items(latent, 3, "text")
    np.testing.assert_allclose(
        top["value"], z_nl[:, latent].sort(descending=True).values[:3], atol=1e-5
    )


# ---------------------------------------------------------------------- the pieces
def test_statistics_follow_the_sae_preprocessing():
    x = np.random.default_rng(2).standard_normal((50, 16)).astype(np.float32) + 4.0
    plain = build_sae(16, 24)  # mean all zeros, scaling factor 1
    stats = stats_from_embeddings(plain, x)
    assert not stats.mean_d.any() and stats.scaling_factor == 1.0
    msae = modality_sae(16, "image")
    stats = stats_from_embeddings(msae, x)
    np.testing.assert_allclose(stats.mean_d, x.mean(0), atol=1e-5)
    norms = np.linalg.norm((x - x.mean(0)) * stats.scaling_factor, axis=1)
    assert norms.mean() == pytest.approx(math.sqrt(16), rel=1e-5)


def test_plans_per_training_modality():
    words = lambda: ["red", "circle"]  # noqa: E731
    image, text = modality_sae(8, "image"), modality_sae(8, "text")
    both, unsaid = modality_sae(8, "both"), modality_sae(8, None)
    assert plan_stats(image, {"image", "text"}, words)[:2] == ("checkpoint", "corpus")
    assert plan_stats(image, {"image"}, words)[:2] == ("checkpoint", "vocabulary")
    assert plan_stats(image, {"image"}, None) == StatsPlan("checkpoint", "checkpoint")
    assert plan_stats(text, {"image", "text"}, words)[:2] == ("corpus", "checkpoint")
    assert plan_stats(text, {"text"}, words)[:2] == ("checkpoint", "checkpoint")  # no images
    for sae in (both, unsaid):
        plan = plan_stats(sae, {"image", "text"}, words)
        assert plan.checkpoint_only and plan.key_payload() is None


def test_a_mixed_batch_encodes_each_row_with_its_modality():
    sae = modality_sae(16, "image")
    text_sae = sae.with_input_stats(InputStats(torch.ones(16), 0.5))
    saes = ModalitySAEs(sae, text_sae)
    x = torch.randn(10, 16, generator=torch.Generator().manual_seed(0))
    is_image = np.array([True, False] * 5)
    z = saes.encode(x, is_image)
    torch.testing.assert_close(z[is_image], sae.encode(x[is_image]))
    torch.testing.assert_close(z[~is_image], text_sae.encode(x[~is_image]))


def test_statistics_round_trip_through_the_index_folder(tmp_path):
    stats = ModalityStats(text=OwnStats(InputStats(torch.arange(4.0), 2.5), "vocabulary (n=7)"))
    stats.save(tmp_path)
    loaded = ModalityStats.load(tmp_path)
    assert loaded.image is None and loaded.text.source == "vocabulary (n=7)"
    assert torch.equal(loaded.text.stats.mean_d, torch.arange(4.0))
    assert loaded.text.stats.scaling_factor == 2.5
    assert ModalityStats.load(tmp_path / "none") == ModalityStats()
    assert loaded.describe("image", "image") == "checkpoint (image) statistics"
    assert loaded.describe("text", "image") == "text statistics: vocabulary (n=7)"
    assert (
        loaded.describe("text", None) != loaded.describe("image", None) == "checkpoint statistics"
    )
    with pytest.raises(ValueError, match="unknown modality 'audio'"):
        loaded.own("audio")


def test_training_records_its_modality(tmp_path):
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    cfg = TrainConfig(n_latents=16, k=2, epochs=1, batch_size=32, training_modality="image")
    with torch.enable_grad():
        sae = train_sae(x, cfg).sae
    assert sae.training_modality == "image"
    assert load_sae(save_sae(sae, tmp_path / "sae")).training_modality == "image"
    with pytest.raises(ValueError, match="unknown training_modality 'audio'"):
        TrainConfig(training_modality="audio")
