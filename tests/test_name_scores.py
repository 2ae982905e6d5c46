"""Names scored against the data: the rank AUROC against sklearn, the scores stored with an index's
names, the ranking and the floor as the pages show them, and the built-in world's attribute values
named by their best latents."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse
from _explorer_helpers import small_explorer
from sklearn.metrics import roc_auc_score

from sae_explorer import name_scores
from sae_explorer.explorer_startup import world_explorer
from sae_explorer.name_scores import AUROC_FLOOR, UNNAMED, active_matrix, detection_auroc
from sae_explorer.naming import LatentNames
from sae_explorer.worlds import quality, shapes


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("world"))


def unit(x_nd: np.ndarray) -> np.ndarray:
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_auroc_is_sklearns_with_ties_and_any_chunking(seed):
    rng = np.random.default_rng(seed)
    n, n_latents, n_words, d, k = 120, 30, 12, 6, 4
    x_nd = rng.normal(size=(n, d)).astype(np.float32)
    x_nd[10:20] = x_nd[0]  # tied cosines, as repeated captions give
    t_vd = rng.normal(size=(n_words, d)).astype(np.float32)
    active_nl = rng.random((n, n_latents)) < rng.uniform(0.02, 0.5, n_latents)
    active_nl[:, 0], active_nl[:, 1] = False, True  # never and always active: no AUROC
    word_ids_lk = rng.integers(0, n_words, size=(n_latents, k))
    cos_nv = unit(x_nd) @ unit(t_vd).T
    want = np.full((n_latents, k), np.nan)
    for latent in range(2, n_latents):
        for j in range(k):
            want[latent, j] = roc_auc_score(active_nl[:, latent], cos_nv[:, word_ids_lk[latent, j]])
    for max_bytes in (8 * n, 8 * n * 5, 2**30):  # one word per chunk, five, all at once
        got = detection_auroc(
            x_nd, t_vd, scipy.sparse.csc_matrix(active_nl), word_ids_lk, max_bytes
        )
        np.testing.assert_allclose(got, want, atol=1e-12, equal_nan=True)


def test_auroc_checks_its_shapes():
    with pytest.raises(ValueError, match="3 item embeddings"):
        detection_auroc(
            np.ones((3, 2)), np.ones((2, 2)), scipy.sparse.csc_matrix((4, 5)), np.zeros((5, 1))
        )


def test_active_matrix_is_the_index_codes(world):
    index = world.index
    rows_n = np.flatnonzero((index.items["modality"] == "image").to_numpy())
    active_nl = active_matrix(index, rows_n).toarray()
    assert active_nl.shape == (len(rows_n), index.n_latents)
    for r, item in enumerate(rows_n):
        ids, values = index.item_codes(int(item))
        assert set(np.flatnonzero(active_nl[r])) == set(ids[values > 0].tolist())


def test_world_names_carry_their_auroc_ranked_best_first(world):
    names, index = world.names, world.index
    assert names is not None and names.scored and names.scored_on == "image"
    images = np.flatnonzero((index.items["modality"] == "image").to_numpy())
    x_nd = np.asarray(index.embeddings[images], np.float32)
    t_vd = world.encoder.encode_texts(list(names.vocabulary)).numpy()
    cos_nv = unit(x_nd - x_nd.mean(0)) @ unit(t_vd - t_vd.mean(0)).T
    active_nl = np.zeros((len(images), names.n_latents), dtype=bool)
    for r, item in enumerate(images):
        ids, values = index.item_codes(int(item))
        active_nl[r, ids[values > 0]] = True
    checked = 0
    for latent in range(names.n_latents):
        top = names.top(latent)
        aurocs = [c.auroc for c in top]
        assert aurocs == sorted(aurocs, key=lambda a: -np.nan_to_num(a, nan=-1))
        positives = int(active_nl[:, latent].sum())
        if 0 < positives < len(images):
            word = names.vocabulary.index(top[0].name)
            want = roc_auc_score(active_nl[:, latent], cos_nv[:, word])
            assert top[0].auroc == pytest.approx(want, abs=1e-5)
            checked += 1
        else:
            assert np.isnan(aurocs).all()
        named = top[0].auroc >= AUROC_FLOOR
        assert names.named_l[latent] == named
        assert (names.label(latent) == UNNAMED) == (not named)
        text = world.names_text(latent, 2)
        assert text == UNNAMED if not named else text.startswith(f"{top[0].name} ({aurocs[0]:.2f})")
    assert checked > names.n_latents // 2
    assert 0 < names.named_l.sum() < names.n_latents  # the floor both keeps and drops names


def test_the_latent_page_and_search_show_the_scores(world):
    named = int(np.flatnonzero(world.names.named_l)[0])
    table = world.latent_page(named).names
    assert list(table.columns) == ["name", "AUROC", "named", "cosine"]
    assert table["named"].iloc[0] and table["AUROC"].iloc[0] >= AUROC_FLOOR
    assert table["named"].tolist() == (table["AUROC"] >= AUROC_FLOOR).tolist()
    assert world.latent_page(named).summary.names == world.names_text(named, 5)
    unnamed = int(np.flatnonzero(~world.names.named_l)[0])
    assert world.latent_page(unnamed).summary.names == UNNAMED
    word = world.names.label(named)
    hits = world.search_latents(word)
    assert world.names_text(int(hits["latent"].iloc[0])).startswith(word)


def test_names_below_the_floor_are_no_names(tmp_path):
    vocabulary = ("red", "blue", "circle")
    word_ids_ln = np.array([[0, 1], [2, 0]], dtype=np.int32)
    cosine_ln = np.array([[0.9, 0.5], [0.8, 0.1]], dtype=np.float32)
    plain = LatentNames(vocabulary, word_ids_ln, cosine_ln, cosine_ln, np.zeros(2, np.float32))
    assert plain.matches("circle").tolist() == [False, True]
    scores = name_scores.NameScores(np.array([[0.6, 0.8], [0.7, np.nan]], np.float32), "image", 9)
    scored = plain.with_scores(scores)
    assert [c.name for c in scored.top(0)] == ["blue", "red"]  # ranked by AUROC, not cosine
    assert scored.top(0)[0].cosine == pytest.approx(0.5)
    assert scored.label(0) == "blue" and scored.label(1) == UNNAMED
    assert [c.name for c in scored.named(0)] == ["blue"] and scored.named(1) == []
    assert scored.matches("red").tolist() == [False, False]  # red (0.6) is below the floor
    assert scored.matches("blue").tolist() == [True, False]
    scored.save(tmp_path)
    loaded = LatentNames.load(tmp_path)
    assert loaded.scored_on == "image"
    np.testing.assert_array_equal(loaded.auroc_ln, scored.auroc_ln)
    np.testing.assert_array_equal(loaded.word_ids_ln, scored.word_ids_ln)
    plain.save(tmp_path)
    assert not LatentNames.load(tmp_path).scored


def test_names_stored_before_scores_are_scored_once(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = world_explorer(cache, 40)
    dpath = first.index.dpath
    stale = LatentNames.load(dpath)
    unscored = LatentNames(
        stale.vocabulary, stale.word_ids_ln, stale.cosine_ln, stale.activation_ln, stale.center_d
    )
    unscored.save(dpath)
    assert not LatentNames.load(dpath).scored
    again = world_explorer(cache, 40)
    assert again.index.dpath == dpath and again.names.scored
    np.testing.assert_allclose(again.names.auroc_ln, first.names.auroc_ln)
    monkeypatch.setattr(
        name_scores, "score_candidates", lambda *a, **k: pytest.fail("scored the names again")
    )
    assert world_explorer(cache, 40).names.scored


def test_the_worlds_best_latents_are_named_by_their_values(tmp_path):
    """The number the README reports (benchmarks/name_scores_world.py), on a smaller world."""
    explorer = world_explorer(tmp_path, 600)
    report = quality.world_report(explorer.encoder, explorer.sae, n_items=600)
    pairs = [(a, v) for a, values in shapes.ATTRIBUTES.items() for v in values]
    word_of = dict(zip(pairs, shapes.vocabulary()))
    named_right = [
        m.value
        for m in report.matches
        if explorer.names.label(m.latent) == word_of[(m.attribute, m.value)]
    ]
    assert len(named_right) >= 10, named_right
    assert {"red", "orange", "blue", "purple"} <= set(named_right)
