"""Two SAEs compared (``sae_explorer.latent_matching``): latents matched one-to-one by decoder
cosine (Hungarian), checked against brute force and against a permuted copy of the same SAE;
activation correlations against numpy's; rectangular matching; the size limit; an SAE trained on
one modality encoding the other through its own statistics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from sae_explorer.latent_matching import (
    CompareConfig,
    activation_correlation,
    compare_saes,
    match_latents,
    modality_saes,
)
from sae_explorer.sae import SAE, SAEConfig

D, N_LATENTS, N_ITEMS = 16, 48, 300


def random_sae(seed: int, n_latents: int = N_LATENTS) -> SAE:
    sae = SAE(SAEConfig.matryoshka(D, n_latents, 4), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # biases that leave some latents silent on some inputs
        sae.latent_bias.copy_(torch.linspace(-1.0, 0.2, n_latents))
    return sae.eval()


@pytest.fixture(scope="module")
def x_nd() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N_ITEMS, D)).astype(np.float32)


@pytest.fixture(scope="module")
def is_image_n() -> np.ndarray:
    return np.arange(N_ITEMS) % 3 != 0


def test_a_permuted_copy_matches_itself_perfectly(x_nd, is_image_n):
    sae = random_sae(0)
    perm = torch.randperm(N_LATENTS, generator=torch.Generator().manual_seed(1))
    copy = sae.prune_latents(perm)  # the copy's latent j is the original's perm[j]
    result = compare_saes(
        modality_saes(sae, x_nd, is_image_n),
        modality_saes(copy, x_nd, is_image_n),
        x_nd,
        is_image_n,
        CompareConfig(batch_size=64),
    )
    expected_b_of_a = np.argsort(perm.numpy())
    np.testing.assert_array_equal(result.matching.b_of_a, expected_b_of_a)
    np.testing.assert_array_equal(result.matching.a_of_b, perm.numpy())
    np.testing.assert_allclose(result.matching.cosine_a, 1.0, atol=1e-5)
    active = np.isfinite(result.correlation_a)
    assert active.sum() > N_LATENTS // 2  # most latents fire on some inputs, not all on all
    np.testing.assert_allclose(result.correlation_a[active], 1.0, atol=1e-6)
    s = result.summary
    assert (s.n_matched, s.n_unmatched_a, s.n_unmatched_b) == (N_LATENTS, 0, 0)
    assert s.mean_cosine == pytest.approx(1.0, abs=1e-5)
    assert s.share_above_a == s.share_above_b == 1.0
    assert s.mean_correlation == pytest.approx(1.0, abs=1e-6) and s.n_items == N_ITEMS
    table = result.table()
    assert list(table.columns) == ["latent", "match", "cosine", "correlation"]
    assert (table["match"].to_numpy() == expected_b_of_a[table["latent"].to_numpy()]).all()


def test_hungarian_matches_brute_force_on_small_dictionaries():
    gen = torch.Generator().manual_seed(3)
    for trial in range(5):
        a_ld = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1)
        b_ld = torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1)
        cos = (a_ld @ b_ld.T).double().numpy()
        best = max(itertools.permutations(range(6)), key=lambda p: cos[range(6), p].sum())
        matching = match_latents(a_ld, b_ld)
        np.testing.assert_array_equal(matching.b_of_a, best, err_msg=f"trial {trial}")
        np.testing.assert_allclose(matching.cosine_a, cos[range(6), best], atol=1e-6)


@pytest.mark.parametrize("a_is_wider", [True, False])
def test_different_widths_leave_the_wider_dictionarys_extra_latents_unmatched(a_is_wider):
    wide = random_sae(4)
    keep = torch.randperm(N_LATENTS, generator=torch.Generator().manual_seed(5))[:20]
    narrow = wide.prune_latents(keep)
    a, b = (wide, narrow) if a_is_wider else (narrow, wide)
    matching = match_latents(a.get_dictionary(), b.get_dictionary())
    wide_of_narrow = matching.a_of_b if a_is_wider else matching.b_of_a
    np.testing.assert_array_equal(wide_of_narrow, keep.numpy())
    narrow_of_wide = matching.b_of_a if a_is_wider else matching.a_of_b
    assert set(np.flatnonzero(narrow_of_wide < 0)) == set(range(N_LATENTS)) - set(keep.tolist())
    x_nd = np.random.default_rng(6).normal(size=(50, D)).astype(np.float32)
    flags = np.ones(50, dtype=bool)
    s = compare_saes(modality_saes(a, x_nd, flags), modality_saes(b, x_nd, flags), x_nd, flags)
    assert s.summary.n_matched == 20
    assert (s.summary.n_unmatched_a, s.summary.n_unmatched_b) == (
        (N_LATENTS - 20, 0) if a_is_wider else (0, N_LATENTS - 20)
    )
    assert s.summary.share_above_a == pytest.approx(1.0 if not a_is_wider else 20 / N_LATENTS)
    assert s.summary.share_above_b == pytest.approx(1.0 if a_is_wider else 20 / N_LATENTS)
    assert np.isnan(s.correlation_a[s.unmatched_a]).all()


def test_correlations_are_numpys_and_nan_for_a_silent_latent(x_nd, is_image_n):
    a, b = random_sae(7), random_sae(8)
    with torch.no_grad():
        a.latent_bias[0] = -1e6  # never fires
    saes_a, saes_b = modality_saes(a, x_nd, is_image_n), modality_saes(b, x_nd, is_image_n)
    pairs_a, pairs_b = np.arange(N_LATENTS), np.roll(np.arange(N_LATENTS), 5)
    corr = activation_correlation(saes_a, saes_b, x_nd, is_image_n, pairs_a, pairs_b, 37)
    with torch.no_grad():
        z_a = a.encode(torch.from_numpy(x_nd)).double().numpy()
        z_b = b.encode(torch.from_numpy(x_nd)).double().numpy()
    assert np.isnan(corr[0])
    for i in range(1, N_LATENTS):
        if z_a[:, i].std() > 0 and z_b[:, pairs_b[i]].std() > 0:
            expected = np.corrcoef(z_a[:, i], z_b[:, pairs_b[i]])[0, 1]
            assert corr[i] == pytest.approx(expected, abs=1e-9), i


def test_dictionaries_above_the_cell_limit_are_refused_naming_it():
    a_ld = torch.nn.functional.normalize(torch.randn(40, D), dim=1)
    with pytest.raises(ValueError, match=r"40 x 40 latents .* above the limit of 1,000 cells"):
        match_latents(a_ld, a_ld, max_cells=1000)
    assert (match_latents(a_ld, a_ld, max_cells=1600).b_of_a == np.arange(40)).all()


def test_saes_of_different_clip_widths_are_refused(x_nd, is_image_n):
    other = SAE(SAEConfig.matryoshka(D + 1, N_LATENTS, 4))
    with pytest.raises(ValueError, match="different widths \\(16 and 17\\)"):
        compare_saes(
            modality_saes(random_sae(0), x_nd, is_image_n),
            _shared(other),
            x_nd,
            is_image_n,
        )


def _shared(sae: SAE):
    from sae_explorer.modality_stats import ModalityStats

    return ModalityStats().saes(sae)


def test_an_image_trained_sae_encodes_texts_through_their_own_statistics(x_nd, is_image_n):
    sae = random_sae(9)
    sae.provenance = {"training_modality": "image"}
    sae.mean = torch.full((D,), 0.1)  # mean-centred, so other statistics have a mean of their own
    x_nd = x_nd.copy()
    x_nd[~is_image_n] += 3.0  # a modality gap
    views = modality_saes(sae, x_nd, is_image_n)
    assert views.image is sae and views.text is not sae
    text_mean = x_nd[~is_image_n].mean(0)
    np.testing.assert_allclose(views.text.mean.numpy(), text_mean, atol=1e-5)
    both = random_sae(9)
    assert modality_saes(both, x_nd, is_image_n).shared  # says nothing: its own statistics


def test_correlations_over_at_most_max_items_spread_evenly(x_nd, is_image_n):
    a, b = random_sae(10), random_sae(11)
    views = [modality_saes(sae, x_nd, is_image_n) for sae in (a, b)]
    result = compare_saes(*views, x_nd, is_image_n, CompareConfig(max_items=50))
    assert result.summary.n_items == 50
    rows = np.unique(np.linspace(0, N_ITEMS - 1, 50).round().astype(int))
    pairs_a = np.arange(N_LATENTS)
    expected = activation_correlation(
        *views, x_nd[rows], is_image_n[rows], pairs_a, result.matching.b_of_a
    )
    np.testing.assert_array_equal(result.correlation_a, expected)
    everything = compare_saes(*views, x_nd, is_image_n, CompareConfig(max_items=None))
    assert everything.summary.n_items == N_ITEMS
