"""The Matryoshka hierarchy from co-activations (``sae_explorer.coactivation``): parents and
children on a constructed case whose family tree is known, against a dense brute force on random
codes, the top-K cut, and the descendant tree."""

from __future__ import annotations

import numpy as np
import pytest

from sae_explorer.coactivation import Coactivations, HierarchyConfig, first_codes


def codes_of(active_nl: np.ndarray, values_nl: np.ndarray | None = None):
    """The index's CSR (indptr, ids) of a boolean [n_items, n_latents] matrix, each row's ids
    ordered by ``values_nl`` descending (by id without values)."""
    indptr, ids = [0], []
    for i, row in enumerate(active_nl):
        latents = np.flatnonzero(row)
        if values_nl is not None:
            latents = latents[np.argsort(-values_nl[i, latents], kind="stable")]
        ids.extend(latents)
        indptr.append(len(ids))
    return np.array(indptr, np.int64), np.array(ids, np.int32)


def known_family() -> Coactivations:
    """200 items, 8 latents. Level 0: ANIMAL (0) on items 0-99, VEHICLE (1) on 100-179. Level 1:
    DOG (2) on 0-39, CAT (3) on 40-69 and 190-192 (3 stray items: P(ANIMAL | CAT) = 30/33), CAR
    (4) on 100-139, NOISE (5) on every 4th item. Level 2: PUPPY (6) on 0-9. Latent 7 is never
    kept by a level (-1) though active on 0-99."""
    active = np.zeros((200, 8), dtype=bool)
    active[0:100, 0] = active[100:180, 1] = True
    active[0:40, 2] = active[40:70, 3] = active[190:193, 3] = True
    active[100:140, 4] = active[::4, 5] = active[0:10, 6] = active[0:100, 7] = True
    levels = np.array([0, 0, 1, 1, 1, 1, 2, -1])
    return Coactivations(*codes_of(active), 8, levels)


def test_known_parents_and_children():
    co = known_family()
    dog = co.family(2)
    assert dog.level == 1 and dog.n_active == 40
    assert dog.parents.latent_ids.tolist() == [0]  # ANIMAL; not latent 7 (no level), not NOISE
    assert dog.parents.p_parent.tolist() == [1.0] and dog.parents.p_child.tolist() == [0.4]
    assert dog.children.latent_ids.tolist() == [6]  # PUPPY
    cat = co.family(3)
    assert cat.parents.latent_ids.tolist() == [0]
    assert cat.parents.p_parent[0] == pytest.approx(30 / 33) and cat.parents.n_both[0] == 30
    animal = co.family(0)
    assert animal.parents.latent_ids.tolist() == []  # nothing coarser than level 0
    assert animal.children.latent_ids.tolist() == [2, 6, 3]  # by P(ANIMAL | child), then count
    assert co.family(1).children.latent_ids.tolist() == [4]
    assert co.family(6).parents.latent_ids.tolist() == [0, 2]  # both coarser, both certain
    assert co.family(5).parents.latent_ids.tolist() == []  # NOISE: P(ANIMAL | NOISE) = 0.5
    unkept = co.family(7)
    assert (
        unkept.level == -1
        and len(unkept.parents.latent_ids) == len(unkept.children.latent_ids) == 0
    )
    strict = co.family(3, HierarchyConfig(min_p_parent=0.95))
    assert strict.parents.latent_ids.tolist() == []  # 30/33 < 0.95


def test_rare_latents_are_left_out_of_families():
    co = known_family()
    assert co.family(6, HierarchyConfig(min_count=11)).parents.latent_ids.tolist() == []
    assert 6 not in co.family(0, HierarchyConfig(min_count=11)).children.latent_ids


def test_families_match_a_dense_brute_force_on_random_codes():
    rng = np.random.default_rng(0)
    n_items, n_latents = 400, 30
    rate_l = rng.uniform(0.02, 0.6, n_latents)
    active = rng.random((n_items, n_latents)) < rate_l
    active[:, 10:20] &= active[:, [0] * 10]  # latents 10-19 only ever fire with latent 0
    levels = rng.integers(-1, 4, n_latents)
    levels[0], levels[10:20] = 0, 2
    co = Coactivations(*codes_of(active), n_latents, levels)
    config = HierarchyConfig(min_p_parent=0.7, min_count=3, max_relatives=n_latents)
    a = active.astype(np.int64)
    both_ll = a.T @ a
    count_l = a.sum(0)
    for child in range(n_latents):
        expected = [
            p
            for p in range(n_latents)
            if 0 <= levels[p] < levels[child]
            and count_l[child] >= 3
            and both_ll[p, child] >= 0.7 * count_l[child]
        ]
        family = co.family(child, config)
        assert sorted(family.parents.latent_ids.tolist()) == expected, child
        np.testing.assert_allclose(
            family.parents.p_parent, both_ll[family.parents.latent_ids, child] / count_l[child]
        )
        for parent in expected:  # a parent lists the child among its children
            assert child in co.family(parent, config).children.latent_ids
    assert set(range(10, 20)) <= set(co.family(0, config).children.latent_ids.tolist())


def test_top_k_keeps_each_items_largest_codes():
    rng = np.random.default_rng(1)
    active = rng.random((50, 12)) < 0.5
    values = rng.random((50, 12))
    indptr, ids = codes_of(active, values)
    cut_indptr, cut_ids = first_codes(indptr, ids, 3)
    for i in range(50):
        row = np.flatnonzero(active[i])
        largest = row[np.argsort(-values[i, row])][:3]
        assert cut_ids[cut_indptr[i] : cut_indptr[i + 1]].tolist() == largest.tolist()
    co = Coactivations(indptr, ids, 12, np.zeros(12, np.int64), top_k=3)
    assert co.count_l.sum() == np.minimum(active.sum(1), 3).sum()


def test_descendant_tree_depth_first_with_repeats_marked():
    co = known_family()
    tree = co.descendants(0, max_depth=2)
    assert [(n.latent, n.depth) for n in tree] == [(0, 0), (2, 1), (6, 2), (6, 1), (3, 1)]
    assert [n.repeated for n in tree] == [False, False, False, True, False]
    assert np.isnan(tree[0].p_parent) and tree[1].p_parent == 1.0
    assert [n.latent for n in co.descendants(0, max_depth=1, max_children=1)] == [0, 2]
    assert [n.latent for n in co.descendants(0, max_depth=0)] == [0]


def test_bad_latents_and_settings_are_refused():
    co = known_family()
    with pytest.raises(ValueError, match=r"latent must be in \[0, 8\), got 8"):
        co.family(8)
    with pytest.raises(ValueError, match="min_p_parent must be in"):
        HierarchyConfig(min_p_parent=0.0)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        first_codes(np.array([0, 1]), np.array([0], np.int32), 0)
