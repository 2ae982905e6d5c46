"""Dead and dense latents in training: activity tracking, resampling, the AuxK loss, options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_train import planted_data

from sae_explorer import SAE, SAEConfig
from sae_explorer.dead_latents import LatentActivity, auxk_loss, resample_latents
from sae_explorer.train import TrainConfig, _init_sae, data_stats, train_sae


def test_activity_counts_steps_since_active_and_window_firing():
    activity = LatentActivity(4, torch.device("cpu"))
    code = torch.tensor([[1.0, 0.0, 0.0, 2.0], [1.0, 0.0, 0.0, 3.0]])
    activity.update(code)
    activity.update(torch.tensor([[0.0, 0.5, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]]))
    assert activity.steps_since_active_l.tolist() == [1, 0, 2, 0]
    assert activity.dead_mask(2).tolist() == [False, False, True, False]
    assert activity.window_dead_and_dense(None).tolist() == [False, False, True, False]
    # latent 3 fired on 4 of 4 samples, latent 0 on 2 of 4: dense above 60 %
    assert activity.window_dead_and_dense(0.6).tolist() == [False, False, True, True]
    activity.start_window()
    assert activity.window_dead_and_dense(None).all()


def _trained_sae_and_optimizer(tied: bool = False):
    torch.manual_seed(0)
    sae = SAE(
        SAEConfig(8, 16, "TopKReLU", k=2, tied=tied), generator=torch.Generator().manual_seed(0)
    )
    optimizer = torch.optim.AdamW(sae.parameters(), lr=1e-2)
    x_bd = torch.randn(64, 8)
    for _ in range(3):
        loss = (sae.level_forward(x_bd).recons[-1] - x_bd).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return sae, optimizer, x_bd


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_resampling_reinitialises_exactly_the_masked_latents(tied):
    sae, optimizer, x_bd = _trained_sae_and_optimizer(tied)
    before = {name: p.detach().clone() for name, p in sae.named_parameters()}
    moments_before = {
        name: {k: v.clone() for k, v in optimizer.state[p].items() if k != "step"}
        for name, p in sae.named_parameters()
    }
    mask_l = torch.zeros(16, dtype=torch.bool)
    mask_l[[2, 5, 11]] = True
    with torch.no_grad():
        residual_bd = x_bd - sae.level_forward(x_bd).recons[-1]
    n = resample_latents(sae, optimizer, mask_l, x_bd, torch.Generator().manual_seed(1))
    assert n == 3
    keep = ~mask_l
    assert torch.equal(sae.encoder[:, keep], before["encoder"][:, keep])
    assert not torch.isclose(sae.encoder[:, mask_l], before["encoder"][:, mask_l]).all(0).any()
    assert torch.equal(sae.latent_bias[keep], before["latent_bias"][keep])
    assert (sae.latent_bias[mask_l] == 0).all()
    assert torch.equal(sae.pre_bias, before["pre_bias"])
    # each new decoder row is the unit direction of one of the batch's residuals
    rows_kd = sae.W_dec[mask_l].detach()
    assert torch.allclose(rows_kd.norm(dim=-1), torch.ones(3), atol=1e-5)
    unit_residual_bd = residual_bd / residual_bd.norm(dim=-1, keepdim=True)
    assert torch.allclose((rows_kd @ unit_residual_bd.T).max(1).values, torch.ones(3), atol=1e-5)
    if not tied:
        assert torch.equal(sae.decoder[keep], before["decoder"][keep])
    for name, dim in (("encoder", 1), ("latent_bias", 0)):
        for key, moment in optimizer.state[getattr(sae, name)].items():
            if key == "step":
                continue
            assert (moment.index_select(dim, torch.nonzero(mask_l).flatten()) == 0).all()
            kept = torch.nonzero(keep).flatten()
            assert torch.equal(
                moment.index_select(dim, kept), moments_before[name][key].index_select(dim, kept)
            )


def test_resampling_nothing_changes_nothing():
    sae, optimizer, x_bd = _trained_sae_and_optimizer()
    before = [p.detach().clone() for p in sae.parameters()]
    mask_l = torch.zeros(16, dtype=torch.bool)
    assert resample_latents(sae, optimizer, mask_l, x_bd, torch.Generator()) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, sae.parameters(), strict=True))


def test_auxk_loss_is_the_normalised_mse_of_the_top_dead_latents_on_the_residual():
    sae, _, x_bd = _trained_sae_and_optimizer()
    with torch.no_grad():
        out = sae.level_forward(x_bd)
        dead_l = torch.zeros(16, dtype=torch.bool)
        dead_l[[0, 3, 7, 9]] = True
        loss = auxk_loss(sae, x_bd, out.recons[-1], out.pre_bl, dead_l, aux_k=2)
        # reference, by hand: keep the 2 largest pre-activations among latents 0, 3, 7, 9
        residual = x_bd - out.recons[-1]
        expected = []
        for b in range(len(x_bd)):
            ids = torch.tensor([0, 3, 7, 9])
            top = ids[out.pre_bl[b, ids].argsort(descending=True)[:2]]
            approx = (out.pre_bl[b, top].relu()[:, None] * sae.W_dec[top]).sum(0)
            expected.append((approx - residual[b]).pow(2).mean())
        reference = torch.stack(expected).mean() / residual.pow(2).mean()
        assert torch.isclose(loss, reference, rtol=1e-5)
        none_dead = torch.zeros(16, dtype=torch.bool)
        assert auxk_loss(sae, x_bd, out.recons[-1], out.pre_bl, none_dead, 2) == 0


def _never_active(sae: SAE, x_nd: np.ndarray) -> int:
    with torch.no_grad():
        xm_bd = sae.preprocess(torch.from_numpy(x_nd))
        code_bl = sae.sparse_codes(sae.pre_activations_model(xm_bd))
    return int(((code_bl != 0).sum(0) == 0).sum())


@pytest.fixture(scope="module")
def crowded():
    """24 planted directions in 16-d, two per sample; a 128-latent TopK(1) SAE leaves many dead."""
    return planted_data(n=4000, d=16, m=24, s=2)


def _crowded_cfg(**overrides) -> TrainConfig:
    base = dict(
        architecture="topk",
        n_latents=128,
        k=1,
        epochs=20.0,
        batch_size=256,
        lr=5e-4,
        num_threads=1,
        dead_steps=10,
    )
    return TrainConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def plain(crowded):
    return train_sae(crowded[0], _crowded_cfg())


def _dead_and_moved(result, x_nd: np.ndarray, cfg: TrainConfig) -> tuple[int, float]:
    """(latents never active at the end, mean distance their decoder rows moved from init)."""
    sae = result.sae
    init = _init_sae(
        cfg, x_nd.shape[1], data_stats(x_nd, np.arange(len(x_nd)), cfg), torch.device("cpu")
    )
    with torch.no_grad():
        xm_bd = sae.preprocess(torch.from_numpy(x_nd))
        never_l = (sae.sparse_codes(sae.pre_activations_model(xm_bd)) != 0).sum(0) == 0
        moved_l = (sae.W_dec - init.W_dec).norm(dim=-1)
    return int(never_l.sum()), float(moved_l[never_l].mean())


def test_auxk_revives_dead_latents_and_trains_the_rest(crowded):
    x_nd = crowded[0]
    plain_cfg = _crowded_cfg(epochs=5.0)
    auxk_cfg = _crowded_cfg(epochs=5.0, aux_loss="auxk", aux_coefficient=1.0)
    n_plain, moved_plain = _dead_and_moved(train_sae(x_nd, plain_cfg), x_nd, plain_cfg)
    n_auxk, moved_auxk = _dead_and_moved(train_sae(x_nd, auxk_cfg), x_nd, auxk_cfg)
    print(f"dead: plain {n_plain} (moved {moved_plain:.3f}), AuxK {n_auxk} ({moved_auxk:.3f})")
    assert n_plain >= 30
    assert n_auxk <= 0.75 * n_plain
    # without AuxK a dead latent gets no gradient: its decoder row stays where it started
    assert moved_plain < 0.03
    assert moved_auxk > 0.06


def test_resampling_revives_latents_plain_training_leaves_dead(crowded, plain):
    x_nd = crowded[0]
    resampled = train_sae(
        x_nd, _crowded_cfg(resample="dead", resample_every=20, resample_until=0.8)
    )
    n_plain, n_resampled = _never_active(plain.sae, x_nd), _never_active(resampled.sae, x_nd)
    print(f"never active: plain {n_plain}, resampled {n_resampled}")
    assert n_plain >= 40 and plain.metrics["resampled"] == 0
    assert n_resampled <= n_plain / 2 and resampled.metrics["resampled"] >= n_plain
    assert resampled.metrics["val"]["fvu"] < plain.metrics["val"]["fvu"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(aux_loss="ghost_grads"), "unknown aux_loss 'ghost_grads'.*'none', 'auxk'"),
        (dict(resample="dense"), "unknown resample 'dense'.*'dead_and_dense'"),
        (dict(aux_k=1000), "aux_k must be in"),
        (dict(dead_steps=0), "dead_steps must be >= 1"),
        (dict(dense_fraction=0.0), "dense_fraction must be in"),
        (dict(resample_until=1.5), "resample_until must be in"),
    ],
)
def test_dead_latent_options_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(n_latents=64, **overrides)
