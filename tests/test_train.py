"""Training: planted ground-truth recovery, the MSAE recipe's pieces, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sae_explorer import SAE, SAEConfig, load_sae
from sae_explorer.train import (
    TrainConfig,
    level_losses,
    project_decoder_grads,
    renormalize_decoder,
    train_sae,
)


def planted_data(n: int = 20_000, d: int = 32, m: int = 48, s: int = 3, seed: int = 0):
    """Sparse non-negative combinations of ``s`` of ``m`` known unit directions, plus noise."""
    rng = np.random.default_rng(seed)
    dirs_md = rng.normal(size=(m, d))
    dirs_md /= np.linalg.norm(dirs_md, axis=1, keepdims=True)
    chosen_ns = np.argsort(rng.random((n, m)), axis=1)[:, :s]
    coef_ns = rng.uniform(0.5, 1.5, size=(n, s))
    x_nd = np.einsum("ns,nsd->nd", coef_ns, dirs_md[chosen_ns]) + 0.01 * rng.normal(size=(n, d))
    return (x_nd + 0.3).astype(np.float32), dirs_md  # an offset, so mean centring matters


def tiny_cfg(**overrides) -> TrainConfig:
    base = dict(n_latents=64, batch_size=256, lr=3e-3, num_threads=1, epochs=1.0, k=3)
    base.update(overrides)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def planted():
    return planted_data()


@pytest.mark.parametrize(
    "overrides",
    [dict(architecture="matryoshka", k=2, epochs=8), dict(architecture="topk", k=3, epochs=5)],
    ids=["matryoshka", "topk"],
)
def test_planted_directions_are_recovered(planted, overrides):
    x_nd, dirs_md = planted
    result = train_sae(x_nd, tiny_cfg(**overrides))
    dictionary = result.sae.get_dictionary().numpy()
    max_cos = (dirs_md @ dictionary.T).max(axis=1)
    print(f"{overrides['architecture']}: mean max cosine {max_cos.mean():.3f}")
    assert max_cos.mean() >= 0.9
    val = result.metrics["val"]
    assert val["fvu"] < 0.1 and val["cosine"] > 0.95
    if overrides["architecture"] == "topk":
        assert val["l0"] <= 3
    else:
        fvus = [level["fvu"] for level in val["levels"]]
        assert [level["k"] for level in val["levels"]] == [2, 4, 8, 16, 32, 64]
        assert fvus[0] > fvus[-1]  # coarser levels reconstruct worse


def test_trained_sae_is_saved_with_provenance_and_unit_decoder(planted, tmp_path):
    from sae_explorer import save_sae

    x_nd, _ = planted
    x_nd = x_nd[:4000]
    result = train_sae(x_nd, tiny_cfg(architecture="matryoshka", k=4, clip_model="builtin:shapes"))
    sae = result.sae
    assert sae.nesting_list == (4, 8, 16, 32, 64)
    assert sae.cfg.relative_importance == (5.0, 4.0, 3.0, 2.0, 1.0)
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64))
    # mean centring + scaling: training rows have mean ~0 and mean norm sqrt(d) in model space
    xm = sae.preprocess(torch.from_numpy(x_nd))
    assert xm.mean(0).abs().max() < 0.05
    assert xm.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(32), rel=0.05)
    assert sae.provenance["clip_model"] == "builtin:shapes"
    assert len(sae.provenance["training_data_hash"]) == 64
    assert sae.provenance["msae_target_norm"] == pytest.approx(math.sqrt(32))
    loaded = load_sae(save_sae(sae, tmp_path / "trained"))
    assert loaded.content_hash == sae.content_hash
    assert loaded.provenance["training_data_hash"] == sae.provenance["training_data_hash"]
    # same data + seed -> same weights; different data -> different hash
    again = train_sae(x_nd, tiny_cfg(architecture="matryoshka", k=4, clip_model="builtin:shapes"))
    assert again.sae.content_hash == sae.content_hash
    other = train_sae(x_nd[:3000], tiny_cfg(architecture="matryoshka", k=4, epochs=0.1))
    assert other.sae.provenance["training_data_hash"] != sae.provenance["training_data_hash"]


def test_relu_l1_trades_sparsity_for_reconstruction(planted):
    x_nd = planted[0][:4000]
    weak = train_sae(x_nd, tiny_cfg(architecture="relu", l1_coefficient=1e-3, epochs=3))
    strong = train_sae(x_nd, tiny_cfg(architecture="relu", l1_coefficient=1e-1, epochs=3))
    assert weak.sae.cfg.activation == "ReLU"
    assert strong.metrics["val"]["l0"] < weak.metrics["val"]["l0"]
    assert strong.metrics["val"]["fvu"] > weak.metrics["val"]["fvu"]


def test_loss_is_importance_weighted_mean_of_level_mses():
    torch.manual_seed(0)
    cfg = SAEConfig.matryoshka(8, 32, 4, weighting="RW")
    sae = SAE(cfg)
    xm = torch.randn(16, 8)
    mse, _ = level_losses(sae, xm)
    manual = [
        ((z @ sae.W_dec + sae.pre_bias - xm) ** 2).mean()
        for z in sae.level_codes(sae.pre_activations_model(xm))
    ]
    torch.testing.assert_close(mse, torch.stack(manual), atol=1e-5, rtol=0)
    # RW = (4, 3, 2, 1) normalised
    from sae_explorer.train import _level_weights

    torch.testing.assert_close(
        _level_weights(cfg, torch.device("cpu")), torch.tensor([0.4, 0.3, 0.2, 0.1])
    )


@pytest.mark.parametrize("tied", [False, True])
def test_decoder_gradient_projection_and_renormalisation(tied):
    torch.manual_seed(1)
    sae = SAE(SAEConfig(8, 24, activation="ReLU", tied=tied))
    xm = torch.randn(32, 8)
    mse, _ = level_losses(sae, xm)
    mse.sum().backward()
    project_decoder_grads(sae)
    w_ld = sae.W_dec.detach()
    grad_ld = sae.encoder.grad.t() if tied else sae.decoder.grad
    torch.testing.assert_close((grad_ld * w_ld).sum(-1), torch.zeros(24), atol=1e-6, rtol=0)
    if tied:
        return
    # renormalising rows that drifted keeps the function (ReLU is positively homogeneous)
    with torch.no_grad():
        sae.decoder.mul_(torch.rand(24, 1) + 0.5)
    before = sae.level_forward(xm).recons[-1]
    renormalize_decoder(sae)
    torch.testing.assert_close(sae.decoder.norm(dim=-1), torch.ones(24))
    torch.testing.assert_close(sae.level_forward(xm).recons[-1], before, atol=1e-5, rtol=0)


def test_train_cli_on_memmapped_npy(planted, tmp_path, capsys):
    from sae_explorer.__main__ import main as cli

    data = tmp_path / "emb.npy"
    np.save(data, planted[0][:3000])
    out = tmp_path / "sae"
    argv = [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--n-latents",
        "48",
        "--architecture",
        "topk",
        "--k",
        "3",
        "--batch-size",
        "256",
        "--epochs",
        "1",
        "--num-threads",
        "1",
        "--clip-model",
        "ViT-B-32/openai",
        "--no-mean-center",
    ]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "held-out (150 rows): FVU" in printed and "dead latents" in printed
    sae = load_sae(out)
    assert sae.cfg.architecture == "topk" and sae.n_latents == 48 and sae.cfg.k == 3
    assert sae.provenance["clip_model"] == "ViT-B-32/openai"
    assert sae.provenance["train_config"]["mean_center"] is False
    assert torch.count_nonzero(sae.mean) == 0
    assert cli(["train", "--data", str(tmp_path / "missing.npy"), "--out", str(out)]) == 1


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        (np.zeros(10, dtype=np.float32), {}, "2-d array"),
        (np.zeros((10, 4), dtype=np.int64), {}, "floating point"),
        (np.full((10, 4), np.nan, dtype=np.float32), {}, "NaN/inf .first at row 0"),
        (np.zeros((10, 4), dtype=np.float32), {}, "zero norm"),
    ],
)
def test_bad_training_data_is_a_value_error(data, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_sae(data, tiny_cfg(n_latents=8, **overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(architecture="gated"), "unknown architecture 'gated'"),
        (dict(activation="ReLU"), "not a TopK one"),
        (dict(weighting="XW"), "unknown weighting"),
        (dict(k=100), "k must be in"),
        (dict(epochs=0), "epochs must be > 0"),
    ],
)
def test_train_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_cfg(**overrides)
