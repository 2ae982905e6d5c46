"""The Compare tab and the Latent tab's Matryoshka family, called as handlers without a server
over the small explorer: a permuted copy of the loaded SAE, read back from disk, matches
perfectly; bad sources are refused; parents and children come from the index's codes and the
descendant tree links to each latent."""

from __future__ import annotations

import re

import gradio as gr
import numpy as np
import pytest
import torch
from _explorer_helpers import small_explorer

from explorer_ui import compare_tab, latent_tab
from sae_explorer.checkpoints import save_sae
from sae_explorer.explorer.hierarchy import FAMILY_COLUMNS
from sae_explorer.sae import SAE, SAEConfig


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def permuted(explorer, tmp_path_factory):
    """A permuted copy of the explorer's SAE saved in the project format, and the permutation."""
    perm = torch.randperm(explorer.n_latents, generator=torch.Generator().manual_seed(0))
    dpath = save_sae(explorer.sae.prune_latents(perm), tmp_path_factory.mktemp("sae") / "copy")
    return dpath, perm.numpy()


def test_compare_view_of_a_permuted_copy_matches_every_latent(explorer, permuted):
    dpath, perm = permuted
    view = compare_tab.compare_view(explorer, f"  {dpath}  ")
    n = explorer.n_latents
    assert "**Mean matched cosine** 1.000" in view.summary
    assert "100.0% of A, 100.0% of B" in view.summary
    assert "**mean activation correlation** 1.000" in view.summary
    assert f"over {explorer.index.n_items:,} items" in view.summary
    assert "**Unmatched** in A: 0 · in B: 0" in view.summary
    table = view.table
    assert list(table.columns) == ["latent", "names", "match", "cosine", "correlation"]
    assert len(table) == n
    np.testing.assert_array_equal(table["match"], np.argsort(perm)[table["latent"]])
    assert (table["cosine"] >= 0.9999).all()
    assert table["names"].iloc[0] == explorer.names_text(int(table["latent"].iloc[0]), 2)
    row = table.iloc[3]  # a click on a row opens that latent, the rows however sorted
    assert latent_tab.clicked_latent(table, list(row)) == int(row["latent"])


def test_compare_view_lists_unmatched_latents_of_a_narrower_sae(explorer, tmp_path):
    keep = np.arange(0, explorer.n_latents, 2)
    dpath = save_sae(explorer.sae.prune_latents(keep), tmp_path / "half")
    view = compare_tab.compare_view(explorer, str(dpath))
    n_half = explorer.n_latents // 2
    assert f"**Unmatched** in A: {n_half:,} (1, 3, 5," in view.summary
    assert f"39, … ({n_half - compare_tab.MAX_LISTED} more)) · in B: 0" in view.summary
    matched = view.table[view.table["match"] >= 0]
    np.testing.assert_array_equal(keep[matched["match"]], matched["latent"])


def test_compare_view_refuses_what_it_cannot_compare(explorer, tmp_path):
    with pytest.raises(ValueError, match="give the second SAE"):
        compare_tab.compare_view(explorer, "  ")
    with pytest.raises(ValueError, match="is not an existing file or folder"):
        compare_tab.compare_view(explorer, str(tmp_path / "nothing"))
    wider = save_sae(SAE(SAEConfig.matryoshka(explorer.sae.n_inputs + 4, 32, 4)), tmp_path / "w")
    with pytest.raises(ValueError, match=r"different widths \(64 and 68\)"):
        compare_tab.compare_view(explorer, str(wider))


def test_coactivations_count_the_indexs_codes(explorer):
    co = explorer.coactivations
    expected = np.bincount(np.asarray(explorer.index.codes_ids), minlength=explorer.n_latents)
    np.testing.assert_array_equal(co.count_l, expected)
    latent = int(np.argmax(co.count_l))
    rows = [i for i in range(explorer.index.n_items) if latent in explorer.index.item_codes(i).ids]
    both = np.zeros(explorer.n_latents, np.int64)
    for i in rows:
        both[explorer.index.item_codes(i).ids] += 1
    np.testing.assert_array_equal(co.coactive(latent), both)


def latent_with_children(explorer) -> int:
    for latent in np.argsort(explorer.levels_l, kind="stable"):
        if len(explorer.coactivations.family(int(latent)).children.latent_ids) >= 2:
            return int(latent)
    pytest.skip("no latent of the small explorer has two children")


def test_latent_view_shows_parents_children_and_the_descendant_tree(explorer):
    latent = latent_with_children(explorer)
    view = latent_tab.latent_view(explorer, latent)
    family = explorer.coactivations.family(latent)
    assert list(view.family.columns) == list(FAMILY_COLUMNS)
    children = view.family[view.family["relation"] == "child"]
    assert children["latent"].tolist() == family.children.latent_ids.tolist()
    assert (children["level"] > explorer.levels_l[latent]).all()
    assert (children["p_parent"] >= 0.8).all()
    parents = view.family[view.family["relation"] == "parent"]
    assert parents["latent"].tolist() == family.parents.latent_ids.tolist()
    assert view.tree.startswith(f"**Descendants of latent {latent}**")
    first_generation = [
        int(m) for m in re.findall(r"^- \[(\d+)\]\(\?tab=latent&latent=\1\)", view.tree, re.M)
    ]
    assert first_generation == family.children.latent_ids[:5].tolist()
    row = view.family.iloc[0]  # a click on a family row opens that latent
    assert latent_tab.clicked_latent(view.family, list(row)) == int(row["latent"])


def test_a_latent_without_relatives_says_so(explorer):
    co = explorer.coactivations
    lonely = next(
        (
            latent
            for latent in range(explorer.n_latents)
            if len(co.descendants(latent, max_depth=1)) == 1
        ),
        None,
    )
    if lonely is None:
        pytest.skip("every latent of the small explorer has children")
    view = latent_tab.latent_view(explorer, lonely)
    assert view.tree.startswith("**Descendants:** none")


def test_rows_of_the_compare_and_family_tables_open_their_latent(explorer):
    from explorer_ui import build_demo

    demo = build_demo(explorer)
    selected = {
        block_id for fn in demo.fns.values() for block_id, event in fn.targets if event == "select"
    }
    tables = {
        block.label.split(" (")[0]: block_id
        for block_id, block in demo.blocks.items()
        if isinstance(block, gr.Dataframe) and block.label
    }
    assert tables["Each latent of A, its match in B"] in selected
    assert tables["Matryoshka parents and children"] in selected


def test_a_latent_export_carries_its_family(explorer, tmp_path):
    import json

    latent = latent_with_children(explorer)
    payload = json.loads(explorer.export_latent(latent, tmp_path, "json").read_text())
    expected = explorer.family_table(latent)
    assert [row["latent"] for row in payload["family"]] == expected["latent"].tolist()
    assert [row["relation"] for row in payload["family"]] == expected["relation"].tolist()
