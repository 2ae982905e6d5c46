"""Checkpoint formats: round trips, MSAE file names, Hub sources, safety, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sae_explorer import SAE, SAEConfig, checkpoints, load_sae, save_sae
from sae_explorer.checkpoints import UnsafeCheckpointError
from sae_explorer.checkpoints.msae import parse_msae_filename

D, N = 10, 40


def raw_weights(seed: int = 0, d: int = D, n: int = N, tied: bool = False) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "pre_bias": torch.randn(d, generator=gen) * 0.2,
        "encoder": torch.randn(d, n, generator=gen) * 0.4,
        "latent_bias": torch.randn(n, generator=gen) * 0.1,
        "decoder": None if tied else torch.randn(n, d, generator=gen) * 0.4,
    }


def x_batch(d: int = D, seed: int = 1) -> torch.Tensor:
    return torch.randn(6, d, generator=torch.Generator().manual_seed(seed))


def relu_sae_outputs(w: dict, x, mean=0.0, scale=1.0, k=None, latent_bias=None):
    """Reference ReLU/TopKReLU encode (full latents) and decode on raw weights."""
    xm = (x - mean) * scale
    pre = (xm - w["pre_bias"]) @ w["encoder"] + (
        w["latent_bias"] if latent_bias is None else latent_bias
    )
    z = torch.relu(pre)
    dec = w["encoder"].t() if w["decoder"] is None else w["decoder"]
    x_hat = (z @ dec + w["pre_bias"]) / scale + mean
    return z, x_hat


def assert_project_round_trip(sae: SAE, tmp_path: Path) -> SAE:
    """Save in the project format and load back: same hash, same outputs."""
    out = save_sae(sae, tmp_path / "converted", provenance={"clip_model": "ViT-B-32/openai"})
    again = load_sae(out)
    assert again.source_format == "sae-explorer"
    assert again.content_hash == sae.content_hash
    assert again.cfg == sae.cfg
    assert again.provenance["clip_model"] == "ViT-B-32/openai"
    x = x_batch(sae.n_inputs, seed=9)
    # Bit-identical when the source stored the same layout; OpenAI/auto_circuit files keep their
    # transposed matrices (no copy on load), and a matmul over another layout sums in another order.
    same_layout = all(t.is_contiguous() for t in sae.tensors().values())
    atol = 0 if same_layout else 1e-6
    torch.testing.assert_close(again.encode(x), sae.encode(x), atol=atol, rtol=0)
    torch.testing.assert_close(again(x).x_hat_codes_bd, sae(x).x_hat_codes_bd, atol=atol, rtol=0)
    return again


# --------------------------------------------------------------------------- project format
@pytest.mark.parametrize(
    "cfg",
    [
        SAEConfig.matryoshka(D, N, 4, soft_cap=3.0, scaling_factor=2.5),
        SAEConfig(D, N, activation="ReLU", tied=True, input_norm="layer_norm"),
        SAEConfig(D, N, activation="TopKabs", k=7),
    ],
    ids=["matryoshka", "relu-tied-normalized", "topkabs"],
)
def test_project_format_round_trip(cfg, tmp_path):
    torch.manual_seed(0)
    sae = SAE(cfg)
    with torch.no_grad():
        sae.mean.copy_(torch.randn(D))
        sae.latent_bias.normal_()
    again = assert_project_round_trip(sae, tmp_path)
    config = json.loads((tmp_path / "converted" / "config.json").read_text())
    assert config["schema"] == checkpoints.SCHEMA and config["architecture"] == cfg.architecture
    assert config["preprocessing"]["mean_centered"] is True
    assert torch.equal(again.mean, sae.mean)
    assert not list((tmp_path / "converted").glob("*.tmp"))


def test_builtin_source_resolves_through_the_world_registry(tmp_path, monkeypatch):
    from sae_explorer import builtin

    monkeypatch.setattr(builtin, "DATA_DPATH", tmp_path)
    toy = builtin.BuiltinWorld("toy", "sae_explorer.worlds.shapes", "none", n_words=0)
    monkeypatch.setitem(builtin.WORLDS, "toy", toy)
    sae = SAE(SAEConfig(D, N, activation="ReLU"))
    save_sae(sae, tmp_path / "toy" / "sae")
    loaded = load_sae("builtin:toy")
    assert loaded.content_hash == sae.content_hash and loaded.source == "builtin:toy"
    with pytest.raises(ValueError, match=r"unknown built-in world 'nope'.*'builtin:toy'"):
        load_sae("builtin:nope")
    monkeypatch.setitem(builtin.WORLDS, "empty", toy._replace(name="empty"))
    with pytest.raises(ValueError, match=r"built-in SAE 'builtin:empty' not found"):
        load_sae("builtin:empty")


def test_loaded_sae_is_cpu_fp32_eval(tmp_path):
    sae = SAE(SAEConfig(D, N, activation="ReLU")).double().train()
    loaded = load_sae(save_sae(sae, tmp_path / "s"))
    assert not loaded.training
    assert all(
        t.dtype == torch.float32 and t.device.type == "cpu" for t in loaded.state_dict().values()
    )


# --------------------------------------------------------------------------- MSAE .pth
MSAE_NAME = "40_10_TopKReLU_4_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth"


def write_msae(dpath: Path, fname: str, w: dict, mean=0.0, scale=1.0, target_norm=3.0) -> Path:
    state = {k: v for k, v in w.items() if v is not None}
    state["latents_activation_frequency"] = torch.zeros(w["encoder"].shape[1], dtype=torch.int64)
    fpath = dpath / fname
    torch.save(
        {"model": state, "mean_center": mean, "scaling_factor": scale, "target_norm": target_norm},
        fpath,
    )
    return fpath


@pytest.mark.parametrize(
    ("fname", "expected"),
    [
        (
            "6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth",
            dict(
                n_latents=6144,
                n_inputs=768,
                activation="TopKReLU",
                k=64,
                weighting="RW",
                tied=False,
                normalize=False,
                soft_cap=0.0,
                dataset="cc3m_ViT-L~14_train_image_2905936_768",
            ),
        ),
        (
            "3072_512_TopKReLU_32_UW_False_False_0.0_cc3m_ViT-B~16_train_image_2905936_512.pth",
            dict(activation="TopKReLU", k=32, weighting="UW"),
        ),
        (
            "24576_768_TopKReLU_128_False_False_0.0_cc3m.pth",
            dict(n_latents=24576, k=128, weighting=None, dataset="cc3m"),
        ),
        (
            "6144_768_ReLU_003_False_False_0.0_cc3m_ViT-L~14_train.pth",
            dict(activation="ReLU", k=None, l1_coefficient="003", weighting=None),
        ),
        (
            "512_64_TopKabs_8_True_True_30.0_x.pt",
            dict(activation="TopKabs", k=8, tied=True, normalize=True, soft_cap=30.0, dataset="x"),
        ),
        ("512_64_Identity_False_False_0.0.pth", dict(activation="Identity", k=None, dataset="")),
        (
            "512_64_TopKabsReLU_16_UW_False_True_10.5_d.pth",
            dict(activation="TopKabsReLU", weighting="UW", normalize=True, soft_cap=10.5),
        ),
    ],
)
def test_msae_filename_variants(fname, expected):
    parsed = parse_msae_filename(fname)._asdict()
    for key, value in expected.items():
        assert parsed[key] == value, key


@pytest.mark.parametrize(
    ("fname", "message"),
    [
        ("my_sae.pth", "integer n_latents"),
        ("6144_768_GELU_False_False_0.0.pth", "unknown activation 'GELU'"),
        ("6144_768_TopKReLU_RW_False_False_0.0.pth", "integer k, got 'RW'"),
        ("6144_768_TopKReLU_64_RW_maybe_False_0.0.pth", "True/False for tied"),
        ("6144_768_TopKReLU_64_False_False.pth", "ends before soft_cap"),
        ("6144_768_TopKReLU_64_False_False_big_x.pth", "float soft cap"),
    ],
)
def test_msae_filename_errors_name_the_problem(fname, message):
    with pytest.raises(ValueError, match=message):
        parse_msae_filename(fname)


def test_msae_matryoshka_round_trip(tmp_path):
    w = raw_weights()
    mean = torch.randn(D) * 0.1
    fpath = write_msae(tmp_path, MSAE_NAME, w, mean=mean, scale=1.7, target_norm=3.16)
    sae = load_sae(fpath)
    assert sae.source_format == "msae-pth"
    assert sae.cfg.activation == "TopKReLU" and sae.cfg.k == 4
    assert sae.nesting_list == (4, 8, 16, 32, 40)
    assert sae.cfg.relative_importance == (5.0, 4.0, 3.0, 2.0, 1.0)
    assert sae.provenance["msae_target_norm"] == pytest.approx(3.16)
    assert sae.provenance["msae_dataset"] == "cc3m_ViT-L~14_train_image_2905936_768"
    x = x_batch()
    z_ref, x_hat_ref = relu_sae_outputs(w, x, mean=mean, scale=1.7)
    torch.testing.assert_close(sae.encode(x), z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.decode(sae.encode(x)), x_hat_ref, atol=1e-5, rtol=0)
    assert_project_round_trip(sae, tmp_path)


def test_msae_tied_relu_with_l1_token(tmp_path):
    w = raw_weights(tied=True)
    fpath = write_msae(tmp_path, "40_10_ReLU_003_True_False_0.0_data.pth", w, scale=0.5)
    sae = load_sae(fpath)
    assert sae.cfg.tied and sae.cfg.activation == "ReLU"
    assert sae.provenance["msae_l1_coefficient"] == "003"
    x = x_batch()
    z_ref, x_hat_ref = relu_sae_outputs(w, x, scale=0.5)
    torch.testing.assert_close(sae.encode(x), z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.decode(z_ref), x_hat_ref, atol=1e-5, rtol=0)
    assert_project_round_trip(sae, tmp_path)


def test_msae_soft_cap_from_name(tmp_path):
    w = raw_weights()
    sae = load_sae(write_msae(tmp_path, "40_10_TopKReLU_4_False_False_0.5_d.pth", w))
    assert sae.cfg.soft_cap == 0.5 and sae.nesting_list is None
    z_ref, _ = relu_sae_outputs(w, x_batch())
    torch.testing.assert_close(
        sae.encode(x_batch()), 0.5 * torch.tanh(z_ref / 0.5), atol=1e-5, rtol=0
    )


def test_msae_renamed_file_falls_back_with_warning(tmp_path):
    w = raw_weights()
    fpath = write_msae(tmp_path, "my_favourite_sae.pth", w, scale=2.0)
    with pytest.warns(UserWarning, match="renamed"):
        sae = load_sae(fpath)
    assert sae.cfg.activation == "ReLU" and sae.cfg.soft_cap == 0.0 and not sae.cfg.normalize
    x = x_batch()
    torch.testing.assert_close(
        sae.encode(x), relu_sae_outputs(w, x, scale=2.0)[0], atol=1e-5, rtol=0
    )


def test_msae_name_with_wrong_dims_warns_and_uses_tensors(tmp_path):
    fpath = write_msae(tmp_path, "6144_768_TopKReLU_4_False_False_0.0_d.pth", raw_weights())
    with pytest.warns(UserWarning, match="using the weights"):
        sae = load_sae(fpath)
    assert (sae.n_inputs, sae.n_latents) == (D, N)


# --------------------------------------------------------------------------- SAELens
def write_saelens(dpath: Path, cfg: dict, w: dict) -> Path:
    dpath.mkdir(parents=True)
    (dpath / "cfg.json").write_text(json.dumps(cfg))
    save_file(
        {
            "W_enc": w["encoder"],
            "W_dec": w["decoder"],
            "b_enc": w["latent_bias"],
            "b_dec": w["pre_bias"],
        },
        str(dpath / "sae_weights.safetensors"),
    )
    return dpath


@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_saelens_standard_round_trip(tmp_path, apply_b_dec):
    w = raw_weights(seed=2)
    cfg = {
        "d_in": D,
        "d_sae": N,
        "architecture": "standard",
        "activation_fn_str": "relu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "model_name": "ViT-B-32",
        "hook_name": "embed",
    }
    sae = load_sae(write_saelens(tmp_path / "lens", cfg, w))
    assert sae.source_format == "saelens" and sae.cfg.activation == "ReLU"
    x = x_batch()
    # SAELens' own formula: relu((x - b_dec * apply) @ W_enc + b_enc) @ W_dec + b_dec
    z_ref = torch.relu((x - w["pre_bias"] * apply_b_dec) @ w["encoder"] + w["latent_bias"])
    torch.testing.assert_close(sae.encode(x), z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        sae.decode(z_ref), z_ref @ w["decoder"] + w["pre_bias"], atol=1e-5, rtol=0
    )
    assert sae.provenance["saelens_hook_name"] == "embed"
    assert_project_round_trip(sae, tmp_path)


@pytest.mark.parametrize("style", ["v6", "legacy"])
def test_saelens_topk_round_trip(tmp_path, style):
    w = raw_weights(seed=3)
    if style == "v6":
        cfg = {
            "d_in": D,
            "d_sae": N,
            "architecture": "topk",
            "k": 5,
            "metadata": {"model_name": "m"},
        }
    else:
        cfg = {"d_in": D, "d_sae": N, "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 5}}
    sae = load_sae(write_saelens(tmp_path / "lens", cfg, w) / "cfg.json")
    assert sae.cfg.activation == "TopKReLU" and sae.cfg.k == 5
    x = x_batch()
    pre = (x - w["pre_bias"]) @ w["encoder"] + w["latent_bias"]
    top = pre.topk(5, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    torch.testing.assert_close(sae(x).codes_bl, codes, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        sae(x).x_hat_codes_bd, codes @ w["decoder"] + w["pre_bias"], atol=1e-5, rtol=0
    )
    assert_project_round_trip(sae, tmp_path)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"architecture": "gated"}, "a Gated SAE"),
        ({"architecture": "batchtopk"}, "save_inference_model"),
        ({"architecture": "mystery"}, "architecture 'mystery' is not supported"),
        ({"normalize_activations": "whiten_everything"}, "normalize_activations"),
        ({"architecture": "topk"}, "integer k"),
        ({"d_in": 11}, r"cfg.json says d_in=11"),
    ],
)
def test_saelens_unsupported_configs_are_clear(tmp_path, cfg, message):
    base = {"d_in": D, "d_sae": N, **cfg}
    with pytest.raises(ValueError, match=message):
        load_sae(write_saelens(tmp_path / "lens", base, raw_weights()))


# --------------------------------------------------------------------------- OpenAI / auto_circuit
def test_auto_circuit_state_dict_round_trip(tmp_path):
    w = raw_weights(seed=4)
    state = {
        "encode_weight": w["encoder"].t().clone(),
        "decode_weight": w["decoder"].t().clone(),
        "bias": w["pre_bias"],
        "latent_bias": w["latent_bias"],
        "latent_total_act": torch.zeros(N),
    }
    torch.save(state, tmp_path / "ac.pt")
    sae = load_sae(tmp_path / "ac.pt")
    assert sae.source_format == "auto_circuit"
    x = x_batch()
    # auto_circuit: relu(einsum(x - bias, encode_weight)), latent outs = z_l * decode_weight[:, l]
    z_ref = torch.relu(
        torch.einsum("bd,ld->bl", x - state["bias"], state["encode_weight"]) + state["latent_bias"]
    )
    torch.testing.assert_close(sae.encode(x), z_ref, atol=1e-5, rtol=0)
    latent_outs = torch.einsum("bl,dl->bld", z_ref, state["decode_weight"])
    ids = [0, 3, 7]
    torch.testing.assert_close(
        sae.latent_contributions(z_ref, ids), latent_outs[:, ids], atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        sae.decode(z_ref), latent_outs.sum(1) + state["bias"], atol=1e-5, rtol=0
    )
    assert_project_round_trip(sae, tmp_path)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_openai_state_dict_relu_round_trip(tmp_path, suffix):
    w = raw_weights(seed=5)
    state = {
        "encoder.weight": w["encoder"].t().contiguous(),
        "decoder.weight": w["decoder"].t().contiguous(),
        "pre_bias": w["pre_bias"],
        "latent_bias": w["latent_bias"],
        "stats_last_nonzero": torch.zeros(N, dtype=torch.int64),
    }
    fpath = tmp_path / f"openai{suffix}"
    if suffix == ".pt":
        torch.save({**state, "activation": "ReLU", "normalize": False}, fpath)
    else:
        save_file(state, str(fpath))
    sae = load_sae(fpath)
    assert sae.source_format == "openai" and sae.cfg.activation == "ReLU"
    x = x_batch()
    z_ref, x_hat_ref = relu_sae_outputs(w, x)
    torch.testing.assert_close(sae.encode(x), z_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(sae.decode(z_ref), x_hat_ref, atol=1e-5, rtol=0)
    assert_project_round_trip(sae, tmp_path)


def test_openai_topk_normalized(tmp_path):
    w = raw_weights(seed=6)
    state = {
        "encoder.weight": w["encoder"].t().contiguous(),
        "decoder.weight": w["decoder"].t().contiguous(),
        "pre_bias": w["pre_bias"],
        "latent_bias": w["latent_bias"],
        "activation": "TopK",
        "activation_state_dict": {"k": 6, "postact_fn": "ReLU"},
    }
    torch.save(state, tmp_path / "oa.pt")
    sae = load_sae(tmp_path / "oa.pt")
    assert (sae.cfg.activation, sae.cfg.k, sae.cfg.normalize) == ("TopKReLU", 6, True)
    x = x_batch() * 3 + 1
    # OpenAI: LN(x) -> (x - pre_bias) W_enc^T + latent_bias -> TopK+ReLU -> W_dec + pre_bias -> un-LN
    mu = x.mean(-1, keepdim=True)
    std = (x - mu).std(-1, keepdim=True)
    xn = (x - mu) / (std + 1e-5)
    pre = (xn - w["pre_bias"]) @ w["encoder"] + w["latent_bias"]
    top = pre.topk(6, dim=-1)
    codes = torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
    recon = (codes @ w["decoder"] + w["pre_bias"]) * std + mu
    out = sae(x)
    torch.testing.assert_close(out.codes_bl, codes, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.x_hat_codes_bd, recon, atol=1e-5, rtol=0)
    assert_project_round_trip(sae, tmp_path)


# --------------------------------------------------------------------------- Hub sources
def test_hub_msae_file(fake_hub):
    root, calls = fake_hub
    (root / "WolodjaZ/MSAE").mkdir(parents=True)
    w = raw_weights()
    write_msae(root / "WolodjaZ/MSAE", MSAE_NAME, w)
    for source in (f"hf-hub:WolodjaZ/MSAE/{MSAE_NAME}", f"hf://WolodjaZ/MSAE@main/{MSAE_NAME}"):
        sae = load_sae(source)
        assert sae.source_format == "msae-pth" and sae.nesting_list == (4, 8, 16, 32, 40)
        assert sae.source == source
    assert calls == [("WolodjaZ/MSAE", MSAE_NAME, None), ("WolodjaZ/MSAE", MSAE_NAME, "main")]


def test_hub_project_folder_and_saelens_subfolder(fake_hub):
    root, calls = fake_hub
    sae = SAE(SAEConfig(D, N, activation="ReLU"))
    save_sae(sae, root / "org/proj")
    loaded = load_sae("hf-hub:org/proj")
    assert loaded.source_format == "sae-explorer" and loaded.content_hash == sae.content_hash
    write_saelens(root / "org/lens/blocks/0", {"d_in": D, "d_sae": N}, raw_weights())
    lens = load_sae("hf-hub:org/lens/blocks/0")
    assert lens.source_format == "saelens"
    assert ("org/lens", "blocks/0/config.json", None) in calls  # tried the project format first
    with pytest.raises(ValueError, match=r"neither config\.json"):
        load_sae("hf-hub:org/lens/blocks")
    with pytest.raises(ValueError, match="hf-hub:org/repo"):
        load_sae("hf-hub:justorg")


# --------------------------------------------------------------------------- safety and errors
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    fpath = tmp_path / "6144_768_TopKReLU_64_RW_False_False_0.0_x.pth"
    with open(fpath, "wb") as fh:
        pickle.dump({"model": _Evil()}, fh, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match="arbitrary pickled code"):
        load_sae(fpath)
    torch.save({"model": {"encoder": _Evil()}}, tmp_path / "evil2.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        load_sae(tmp_path / "evil2.pt")


def test_bad_files_give_clear_errors(tmp_path):
    w = raw_weights()
    good = {k: v for k, v in w.items() if v is not None}

    def msae_with(state, name="40_10_TopKReLU_4_False_False_0.0_d.pth", **extra):
        fpath = tmp_path / name
        torch.save({"model": state, "mean_center": 0.0, "scaling_factor": 1.0, **extra}, fpath)
        return fpath

    with pytest.raises(ValueError, match=r"missing \['latent_bias'\]"):
        load_sae(msae_with({k: v for k, v in good.items() if k != "latent_bias"}))
    with pytest.raises(ValueError, match=r"'decoder' has shape \(40, 9\), expected \(40, 10\)"):
        load_sae(msae_with({**good, "decoder": torch.zeros(N, D - 1)}))
    with pytest.raises(ValueError, match="'encoder' contains NaN"):
        load_sae(msae_with({**good, "encoder": good["encoder"].clone().fill_(float("nan"))}))
    with pytest.raises(ValueError, match="not an MSAE checkpoint"):
        torch.save({"model": [1, 2]}, tmp_path / "list.pt")
        load_sae(tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not an SAE checkpoint any supported format reads"):
        torch.save({"weights": torch.zeros(3)}, tmp_path / "odd.pt")
        load_sae(tmp_path / "odd.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pth") as err:
        load_sae(tmp_path / "junk.pth")
    assert "arbitrary" not in str(err.value) and "msae-pth (MSAE)" in str(err.value)
    (tmp_path / "notes.pt").write_text("these are my notes, not weights\n")
    with pytest.raises(ValueError, match=r"notes\.pt is not an SAE checkpoint") as err:
        load_sae(tmp_path / "notes.pt")
    assert not isinstance(err.value, UnsafeCheckpointError) and "arbitrary" not in str(err.value)
    with pytest.raises(ValueError, match="not an existing file or folder"):
        load_sae(tmp_path / "missing.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"(?s)empty is not an SAE checkpoint.*\n  - saelens"):
        load_sae(tmp_path / "empty")


def test_bad_project_configs_give_clear_errors(tmp_path):
    dpath = save_sae(SAE(SAEConfig(D, N, activation="ReLU")), tmp_path / "p")
    config = json.loads((dpath / "config.json").read_text())

    def with_config(**changes):
        (dpath / "config.json").write_text(json.dumps({**config, **changes}))
        return dpath

    with pytest.raises(ValueError, match="unknown activation 'Swish'"):
        load_sae(with_config(sae={**config["sae"], "activation": "Swish"}))
    with pytest.raises(ValueError, match="schema 99, newer"):
        load_sae(with_config(schema=99))
    with pytest.raises(ValueError, match="no integer 'schema'"):
        load_sae(with_config(schema="1"))
    with pytest.raises(ValueError, match=r"'encoder' has shape \(10, 40\), expected \(10, 41\)"):
        load_sae(with_config(sae={**config["sae"], "n_latents": 41}))
    with_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_sae(dpath)
    (dpath / "sae.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_sae(dpath)


# --------------------------------------------------------------------------- convert CLI
def test_convert_cli(tmp_path, capsys):
    from sae_explorer.__main__ import main as cli

    fpath = write_msae(tmp_path, MSAE_NAME, raw_weights())
    assert (
        cli(["convert", str(fpath), str(tmp_path / "out"), "--clip-model", "ViT-L-14/openai"]) == 0
    )
    printed = capsys.readouterr().out
    assert "detected msae-pth (matryoshka" in printed
    converted = load_sae(tmp_path / "out")
    assert converted.provenance["clip_model"] == "ViT-L-14/openai"
    assert converted.provenance["converted_from"] == "msae-pth"
    assert converted.content_hash == load_sae(fpath).content_hash
    assert cli(["convert", str(tmp_path / "nope"), str(tmp_path / "o2")]) == 1
    assert "error:" in capsys.readouterr().out
