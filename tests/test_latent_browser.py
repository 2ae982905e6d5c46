"""The latent browser's library (every latent in one table; filter, sort, pages), the decoder map
(projection, cache), label purity and mix, and the cross-modal agreement: known answers on
constructed arrays, and the table held against the index latent by latent."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from _explorer_helpers import small_explorer

from sae_explorer.explorer import agreement, decoder_map, label_mix, latent_table
from sae_explorer.explorer.latent_table import COLUMNS, LatentFilter


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"))


def unlabelled(explorer):
    """The same explorer over items without labels (its cached tables dropped)."""
    bare = copy.copy(explorer)
    bare.__dict__.pop("label_codes", None)
    bare.__dict__.pop("latent_table", None)
    bare.items = explorer.index.items.assign(label=None)  # a DataFrame serves as the table
    return bare


# ------------------------------------------------------------------------------ purity
def test_purity_of_constructed_top_lists():
    codes = label_mix.LabelCodes(
        np.array([0, 0, 1, 1, 2, -1], dtype=np.int64), np.array(["cat", "dog", "cow"], object)
    )
    top_idx_lm = np.array(
        [
            [0, 1, 2, -1],  # cat, cat, dog: 2/3 cat
            [2, 3, 4, 5],  # dog, dog, cow, (none): 2/3 dog, the unlabelled item left out
            [5, -1, -1, -1],  # only an unlabelled item: no purity
            [
                4,
                2,
                -1,
                -1,
            ],  # cow, dog: a tie, the label seen first in the corpus wins (cat<dog<cow)
            [-1, -1, -1, -1],  # dead
        ]
    )
    purity, top_code = label_mix.purity_l(top_idx_lm, codes)
    np.testing.assert_allclose(purity, [2 / 3, 2 / 3, np.nan, 0.5, np.nan])
    assert top_code.tolist() == [0, 1, -1, 1, -1]


def test_the_table_holds_every_latent_as_the_index_does(explorer):
    table = explorer.latent_table.frame
    assert tuple(table.columns) == COLUMNS and len(table) == explorer.n_latents
    np.testing.assert_array_equal(table["frequency"], explorer.index.frequency)
    np.testing.assert_array_equal(table["level"], explorer.index.levels)
    assert (table["dead"] == (explorer.index.n_active == 0)).all()
    for latent_id in (0, 3, 77, explorer.n_latents - 1):
        row = table.iloc[latent_id]
        assert row["name"] == explorer.names.label(latent_id)
        best = explorer.names.top(latent_id)[0]
        assert row["name_score"] == pytest.approx(
            best.auroc if explorer.names.scored else best.cosine
        )
        # purity by brute force: the index's top examples' labels counted
        labels = explorer.items["label"].iloc[explorer.index.top_examples(latent_id)["item_idx"]]
        counts = labels.dropna().value_counts()
        assert row["label_purity"] == pytest.approx(counts.iloc[0] / counts.sum())
        assert counts[row["top_label"]] == counts.iloc[0]
        assert explorer.label_mix(latent_id).purity.purity == pytest.approx(row["label_purity"])


def test_without_labels_purity_is_missing_not_zero(explorer):
    bare = unlabelled(explorer)
    table = bare.latent_table.frame
    assert table["label_purity"].isna().all() and (table["top_label"] == "").all()
    mix = bare.label_mix(3)
    assert mix.table.empty and np.isnan(mix.purity.purity) and mix.purity.top_label is None


def test_the_label_mix_counts_every_group(explorer):
    mix = explorer.label_mix(3)
    top = mix.table[mix.table["group"] == label_mix.TOP_GROUP]
    assert top["count"].sum() == mix.purity.n_labelled == len(explorer.index.top_examples(3))
    assert top["share"].max() == pytest.approx(mix.purity.purity, abs=1e-4)
    bins = [g for g in dict.fromkeys(mix.table["group"]) if g != label_mix.TOP_GROUP]
    assert bins[0].endswith("(strongest)") and bins[-1].endswith("(weakest)")
    n_sampled = int((explorer.index._sample_idx[3] >= 0).sum())
    assert mix.table["count"].sum() - top["count"].sum() == n_sampled  # every sampled item
    assert {t.name for t in mix.figure.data} == set(mix.table["label"])


# ------------------------------------------------------------------------------ filter, sort, pages
def test_filters_keep_what_pandas_keeps(explorer):
    table = explorer.latent_table.frame
    flt = LatentFilter(min_frequency=0.2, max_frequency=0.5, levels=(1, 3), dense="only")
    expected = table[
        table["frequency"].between(0.2, 0.5) & table["level"].isin([1, 3]) & table["dense"]
    ]
    shown = explorer.browse_latents(flt, "latent", descending=False, page_size=1000)
    assert shown.rows["latent"].tolist() == expected["latent"].tolist()
    assert shown.total == len(expected) > 0
    shares = explorer.browse_latents(LatentFilter(min_image_share=0.6), page_size=1000).rows
    assert (shares["image_share"] >= 0.6).all()
    named = explorer.browse_latents(LatentFilter(name="BLUE"), page_size=1000).rows
    assert len(named) and all(
        any("blue" in c.name for c in explorer.names.top(i)) for i in named["latent"]
    )


def test_pages_cover_the_sorted_result_once(explorer):
    pages, page = [], 1
    while True:
        shown = explorer.browse_latents(LatentFilter(), "max_act", True, page, page_size=30)
        pages.append(shown.rows)
        if page == shown.n_pages:
            break
        page += 1
    joined = pd.concat(pages, ignore_index=True)
    assert shown.n_pages == -(-explorer.n_latents // 30) and len(pages[-1]) <= 30
    expected = explorer.latent_table.frame.sort_values("max_act", ascending=False, kind="stable")
    assert joined["latent"].tolist() == expected["latent"].tolist()


def test_missing_values_sort_last_both_ways(explorer):
    bare = unlabelled(explorer)
    bare.latent_table.frame.loc[[5, 9], "label_purity"] = [0.2, 0.9]
    for descending, first in ((True, 9), (False, 5)):
        rows = bare.browse_latents(LatentFilter(), "label_purity", descending, 1, 3).rows
        assert rows["latent"].tolist()[0] == first and rows["label_purity"].isna().sum() == 1


def test_bad_requests_are_named(explorer):
    with pytest.raises(ValueError, match="cannot sort by 'nope'"):
        explorer.browse_latents(LatentFilter(), "nope")
    with pytest.raises(ValueError, match="page 99 does not exist"):
        explorer.browse_latents(LatentFilter(), page=99)
    with pytest.raises(ValueError, match="swap them"):
        LatentFilter(min_frequency=0.5, max_frequency=0.1)
    with pytest.raises(ValueError, match="dead must be one of"):
        LatentFilter(dead="sometimes")
    empty = explorer.browse_latents(LatentFilter(name="no such name"))
    assert empty.total == 0 and empty.n_pages == 1 and empty.rows.empty


# ------------------------------------------------------------------------------ map
def test_pca_separates_two_bundles_of_directions():
    rng = np.random.default_rng(0)
    centres = np.eye(16)[:2] * 5
    w_ld = np.concatenate(
        [centres[0] + rng.normal(0, 0.3, (20, 16)), centres[1] + rng.normal(0, 0.3, (20, 16))]
    )
    xy = decoder_map.project(w_ld, "pca")
    assert xy.shape == (40, 2)
    first, second = xy[:20, 0], xy[20:, 0]
    assert first.max() < second.min() or second.max() < first.min()  # the first axis splits them
    with pytest.raises(ValueError, match="unknown map method 'tsne'"):
        decoder_map.project(w_ld, "tsne")


def test_the_map_is_cached_per_sae_and_recomputed_when_corrupt(explorer):
    first = explorer.decoder_map("pca")
    assert first.fpath.is_file() and first.fpath.parent.name == "maps"
    assert explorer.sae_hash[:32] in first.fpath.name
    np.save(first.fpath, np.full((explorer.n_latents, 2), 7.0, dtype=np.float32))
    assert (explorer.decoder_map("pca").xy_l2 == 7.0).all()  # read back, not recomputed
    np.save(first.fpath, np.zeros((3, 2), dtype=np.float32))  # a wrong shape: recomputed
    np.testing.assert_allclose(explorer.decoder_map("pca").xy_l2, first.xy_l2, atol=1e-5)
    fig = explorer.map_figure("pca", "level", np.array([3, 4, 5]))
    assert sorted(np.concatenate([t.customdata for t in fig.data]).tolist()) == [3, 4, 5]
    with pytest.raises(ValueError, match="cannot colour the map by 'size'"):
        explorer.map_figure("pca", "size")


@pytest.mark.slow
def test_umap_keeps_bundles_apart():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    w_ld = np.concatenate([c + rng.normal(0, 0.05, (30, 16)) for c in centres])
    xy = decoder_map.project(w_ld, "umap")
    labels = np.repeat(np.arange(3), 30)
    nearest = np.argsort(((xy[:, None] - xy[None]) ** 2).sum(-1), axis=1)[:, 1]
    assert (labels[nearest] == labels).mean() > 0.95


# ------------------------------------------------------------------------------ agreement
def test_retrieval_precision_on_constructed_embeddings():
    rng = np.random.default_rng(0)
    image_nd = rng.normal(size=(50, 8))
    targets = np.array([3, 7, 11, 20])
    # texts pointing at the centre of the targets retrieve exactly them
    near_td = image_nd[targets].mean(0, keepdims=True) + np.zeros((2, 8))
    image_nd[targets] += 20 * near_td[0] / np.linalg.norm(near_td[0])
    precision = agreement.retrieval_precision(near_td, image_nd, targets)
    np.testing.assert_allclose(precision, [1.0, 1.0])
    # a text along e0: images 0, 1 (targets) lie on it, 4, 5 (not targets) next to it, 2, 3
    # (targets) opposite, the rest orthogonal: its top 4 are 0, 1, 4, 5, half of them targets
    e_8 = np.eye(8)
    image2 = np.concatenate([rng.normal(size=(50, 6)) * 0, rng.normal(size=(50, 2))], axis=1)
    image2 = np.roll(image2, 6, axis=1)  # the rest point into dimensions 4 and 5 only
    image2[[0, 1]] = e_8[0]
    image2[[2, 3]] = -e_8[0]
    image2[[4, 5]] = e_8[0] + 0.1 * e_8[1]
    got = agreement.retrieval_precision(e_8[:1], image2, np.array([0, 1, 2, 3]))
    assert got[0] == pytest.approx(0.5)
    assert agreement.retrieval_precision(-e_8[:1], image2, np.array([2, 3]))[0] == 1.0


def test_agreement_on_the_world(explorer):
    page = explorer.latent_page(3)
    direct = explorer.cross_modal_agreement(3)
    assert page.agreement.score == pytest.approx(direct.score)
    assert page.agreement.chance == pytest.approx(12 / len(explorer.modality_rows["image"]))
    assert 0.0 <= direct.score <= 1.0 and direct.k == 12 and direct.n_texts == 10
    # averaged over many latents, a latent's texts find its images far more often than chance
    scores = [explorer.cross_modal_agreement(i) for i in range(0, explorer.n_latents, 16)]
    live = [a for a in scores if not np.isnan(a.score)]
    assert np.mean([a.score for a in live]) > 2 * np.mean([a.chance for a in live])


def test_label_purity_ignores_a_shuffled_label_order(explorer):
    """A property of purity_l: relabelling the codes changes nothing but the label names."""
    codes = explorer.label_codes
    perm = np.random.default_rng(1).permutation(len(codes.labels))
    shuffled = label_mix.LabelCodes(
        np.where(codes.code_n >= 0, perm[codes.code_n], -1), codes.labels[np.argsort(perm)]
    )
    a, _ = label_mix.purity_l(explorer.index._top_idx, codes)
    b, _ = label_mix.purity_l(explorer.index._top_idx, shuffled)
    np.testing.assert_allclose(a, b)
    assert latent_table.NAME_SCORE_COLUMN in COLUMNS
