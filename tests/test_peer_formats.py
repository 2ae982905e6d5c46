"""Every checkpoint format against its own library: SAEs written by the peers' own code (SAELens,
saev, overcomplete from PyPI) load here with the same ``encode``, ``decode`` and dictionary (atol
1e-4, fp32). OpenAI's ``sparse_autoencoder`` is not on PyPI and auto_circuit's module imports need
transformer_lens < 3: those two are held against faithful transcriptions of their code below."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sae_explorer import SAE, SAEConfig, load_sae

ATOL = 1e-4
D, N = 16, 48


def randomize(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            scale = 0.05 if "threshold" in name else 0.3
            param.copy_(torch.randn(param.shape, generator=gen) * scale)


def inputs(seed: int = 1, n: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, D, generator=gen) * 2 + 0.5


def assert_same_sae(ours: SAE, encode, decode, x: torch.Tensor) -> None:
    """encode, decode of the peer's codes and of random codes, and the dictionary."""
    z_ref = encode(x)
    torch.testing.assert_close(ours.encode(x), z_ref, atol=ATOL, rtol=0)
    gen = torch.Generator().manual_seed(7)
    z_rand = torch.relu(torch.randn(x.shape[0], ours.n_latents, generator=gen))
    if ours.cfg.input_norm != "none":  # decoding needs the input's statistics: see forward
        return
    for z in (z_ref, z_rand):
        torch.testing.assert_close(ours.decode(z), decode(z), atol=ATOL, rtol=0)
    ref_dict = decode(torch.eye(ours.n_latents)) - decode(torch.zeros(1, ours.n_latents))
    torch.testing.assert_close(ours.overcomplete().get_dictionary(), ref_dict, atol=ATOL, rtol=0)


# --------------------------------------------------------------------------- SAELens
sae_lens = pytest.importorskip("sae_lens")


def saelens_case(architecture: str, **cfg):
    from sae_lens.saes.abstopk_sae import AbsTopKSAE, AbsTopKSAEConfig

    classes = {
        "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig),
        "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig),
        "abstopk": (AbsTopKSAE, AbsTopKSAEConfig),
        "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig),
    }
    sae_cls, cfg_cls = classes[architecture]
    return sae_cls(cfg_cls(d_in=D, d_sae=N, **cfg))


SAELENS_CASES = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("standard", {"normalize_activations": "layer_norm"}),
    ("standard", {"normalize_activations": "constant_norm_rescale"}),
    ("standard", {"normalize_activations": "expected_average_only_in"}),
    ("topk", {"k": 5}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True, "apply_b_dec_to_input": False}),
    ("topk", {"k": 7, "normalize_activations": "layer_norm"}),
    ("abstopk", {"k": 6}),
    ("abstopk", {"k": 6, "rescale_acts_by_decoder_norm": True}),
    ("jumprelu", {}),
    ("jumprelu", {"apply_b_dec_to_input": False, "normalize_activations": "layer_norm"}),
]


@pytest.mark.parametrize(("architecture", "cfg"), SAELENS_CASES)
def test_saelens_saves_reproduce_saelens(tmp_path, architecture, cfg):
    ref = saelens_case(architecture, **cfg)
    randomize(ref, seed=len(str(cfg)))
    ref.save_model(tmp_path / "lens")
    ref = sae_lens.SAE.load_from_disk(tmp_path / "lens")  # what SAELens itself reads back
    ours = load_sae(tmp_path / "lens")
    assert ours.source_format == "saelens"
    x = inputs()
    with torch.no_grad():
        assert_same_sae(ours, ref.encode, ref.decode, x)
        torch.testing.assert_close(ours(x).x_hat_bd, ref(x), atol=ATOL, rtol=0)
    if architecture in ("topk", "abstopk"):
        assert ours.cfg.inference == "topk"
        assert int((ours.encode(x) != 0).sum(-1).max()) <= cfg["k"]


@pytest.mark.parametrize("training", ["batchtopk", "matryoshka_batchtopk"])
def test_saelens_batchtopk_and_matryoshka_final_saves(tmp_path, training):
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.saes.matryoshka_batchtopk_sae import (
        MatryoshkaBatchTopKTrainingSAE,
        MatryoshkaBatchTopKTrainingSAEConfig,
    )

    if training == "batchtopk":
        ref = BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=D, d_sae=N, k=5))
    else:
        cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=D, d_sae=N, k=5, matryoshka_widths=[8, 24, N]
        )
        ref = MatryoshkaBatchTopKTrainingSAE(cfg)
    randomize(ref, seed=3)
    ref.topk_threshold = torch.tensor(0.4)
    ref.save_inference_model(tmp_path / "final")
    assert json.loads((tmp_path / "final/cfg.json").read_text())["architecture"] == "jumprelu"
    ref = sae_lens.SAE.load_from_disk(tmp_path / "final")
    ours = load_sae(tmp_path / "final")
    assert ours.cfg.activation == "JumpReLU"
    with torch.no_grad():
        assert_same_sae(ours, ref.encode, ref.decode, inputs())
    if training == "matryoshka_batchtopk":
        assert ours.cfg.nesting_by == "width" and ours.nesting_list == (8, 24, N)
        z = torch.ones(1, N)
        assert ours.latent_levels(z)[0].tolist() == [0] * 8 + [1] * 16 + [2] * 24
    else:
        assert ours.nesting_list is None


@pytest.mark.parametrize(
    ("legacy", "expected_norm"),
    [
        ({"normalize_activations": True}, "none"),  # SAELens: expected_average_only_in, a no-op
        ({"normalize_activations": False}, "none"),
        ({"normalize_activations": None}, "none"),
        ({"normalize_activations": "layer_norm"}, "layer_norm"),
        ({"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}}, "none"),
    ],
)
def test_saelens_pre_6_configs_read_as_saelens_reads_them(tmp_path, legacy, expected_norm):
    ref = saelens_case("standard")
    randomize(ref, seed=11)
    ref.save_model(tmp_path / "old")
    cfg = {"d_in": D, "d_sae": N, "hook_point": "blocks.3.hook_resid_post", "dtype": "float32"}
    (tmp_path / "old/cfg.json").write_text(json.dumps({**cfg, **legacy}))
    ref = sae_lens.SAE.load_from_disk(tmp_path / "old")
    ours = load_sae(tmp_path / "old")
    assert ours.cfg.input_norm == expected_norm
    assert ours.provenance["saelens_hook_name"] == "blocks.3.hook_resid_post"
    with torch.no_grad():
        assert_same_sae(ours, ref.encode, ref.decode, inputs())


def test_saelens_half_precision_weights(tmp_path):
    ref = saelens_case("topk", k=5, dtype="bfloat16")
    randomize(ref, seed=5)
    ref.save_model(tmp_path / "bf16")
    ref = sae_lens.SAE.load_from_disk(tmp_path / "bf16", dtype="float32")
    ours = load_sae(tmp_path / "bf16")
    assert ours.dtype == torch.float32
    with torch.no_grad():
        assert_same_sae(ours, ref.encode, ref.decode, inputs())
    half = load_sae(tmp_path / "bf16", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and half.encode(inputs()).dtype == torch.bfloat16


def test_saelens_refusals_name_what_was_trained(tmp_path):
    gated = sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=D, d_sae=N))
    gated.save_model(tmp_path / "gated")
    with pytest.raises(ValueError, match="a Gated SAE"):
        load_sae(tmp_path / "gated")


# --------------------------------------------------------------------------- saev
def saev_reference(seed: int = 0):
    saev_config = pytest.importorskip("saev.config")
    saev_nn = pytest.importorskip("saev.nn")
    cfg = saev_config.SparseAutoencoder(d_vit=D, exp_factor=3, n_reinit_samples=0)
    ref = saev_nn.SparseAutoencoder(cfg)
    randomize(ref, seed)
    return saev_nn, ref


def test_saev_dump_reproduces_saev(tmp_path):
    saev_nn, ref = saev_reference()
    fpath = tmp_path / "sae.pt"
    saev_nn.dump(str(fpath), ref)
    ours = load_sae(fpath)
    assert ours.source_format == "saev"
    x = inputs()
    with torch.no_grad():
        x_hat, f_x, _ = ref(x)
        torch.testing.assert_close(ours.encode(x), f_x, atol=ATOL, rtol=0)
        torch.testing.assert_close(ours(x).x_hat_bd, x_hat, atol=ATOL, rtol=0)
        assert_same_sae(ours, lambda x: ref(x)[1], ref.decode, x)
    torch.save(ref.state_dict(), tmp_path / "plain.pt")  # a plain state dict reads the same
    torch.testing.assert_close(load_sae(tmp_path / "plain.pt").encode(x), f_x, atol=ATOL, rtol=0)


@pytest.mark.parametrize("activation", ["Relu", "TopK", "BatchTopK"])
def test_saev_schema_2_headers(tmp_path, activation):
    """Later saev (schema 2, not on PyPI): ``act(x @ W_enc + b_enc)``; TopK keeps the k largest
    pre-activations with their signed values (transcribed from saev's ``nn/modeling.py``)."""
    _, ref = saev_reference(seed=2)
    state = {k: v.detach() for k, v in ref.state_dict().items()}
    params = {} if activation == "Relu" else {"top_k": 4}
    cfg = {"d_vit": D, "exp_factor": 3, "activation": {"cls": activation, "params": params}}
    fpath = tmp_path / "sae2.pt"
    with open(fpath, "wb") as fh:
        fh.write((json.dumps({"schema": 2, "cfg": cfg}) + "\n").encode())
        torch.save(state, fh)
    x = inputs()
    h_pre = x @ state["W_enc"] + state["b_enc"]
    if activation == "Relu":
        f_x = torch.relu(h_pre)
    else:
        idx = h_pre.topk(4, dim=-1).indices
        f_x = torch.zeros_like(h_pre).scatter(-1, idx, torch.ones_like(h_pre)) * h_pre
    ours = load_sae(fpath)
    torch.testing.assert_close(ours.encode(x), f_x, atol=ATOL, rtol=0)
    torch.testing.assert_close(
        ours.decode(f_x), f_x @ state["W_dec"] + state["b_dec"], atol=ATOL, rtol=0
    )


# --------------------------------------------------------------------------- OpenAI (transcribed)
def openai_reference(state: dict):
    """OpenAI ``Autoencoder.from_state_dict`` + ``encode``/``decode``, transcribed from
    ``sparse_autoencoder/model.py``: ReLU when no activation is stored, layer norm exactly for
    TopK, TopK applies its post-activation to the kept values, tied decoders share the encoder."""
    name = state.get("activation", "ReLU")
    params = state.get("activation_state_dict", {})
    normalize = name == "TopK"
    w_enc, pre_bias, latent_bias = state["encoder.weight"], state["pre_bias"], state["latent_bias"]
    w_dec = state.get("decoder.weight")
    if w_dec is None:
        w_dec = state["decoder.linear.weight"].t()

    def ln(x):
        mu = x.mean(dim=-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        return (x - mu) / (std + 1e-5), mu, std

    def encode(x):
        info = None
        if normalize:
            x, mu, std = ln(x)
            info = (mu, std)
        pre = torch.nn.functional.linear(x - pre_bias, w_enc, latent_bias)
        if name == "ReLU":
            return torch.relu(pre), info
        if name == "Identity":
            return pre, info
        top = torch.topk(pre, k=params["k"], dim=-1)
        values = torch.relu(top.values) if params["postact_fn"] == "ReLU" else top.values
        return torch.zeros_like(pre).scatter(-1, top.indices, values), info

    def decode(z, info=None):
        ret = torch.nn.functional.linear(z, w_dec) + pre_bias
        if normalize:
            ret = ret * info[1] + info[0]
        return ret

    return encode, decode


OPENAI_CASES = [
    {},
    {"activation": "Identity"},
    {"activation": "TopK", "activation_state_dict": {"k": 6, "postact_fn": "ReLU"}},
    {"activation": "TopK", "activation_state_dict": {"k": 6, "postact_fn": "Identity"}},
]


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("extra", OPENAI_CASES)
def test_openai_state_dicts_reproduce_openai(tmp_path, extra, tied):
    gen = torch.Generator().manual_seed(4)
    w_enc = torch.randn(N, D, generator=gen) * 0.3
    state = {
        "encoder.weight": w_enc,
        "pre_bias": torch.randn(D, generator=gen) * 0.3,
        "latent_bias": torch.randn(N, generator=gen) * 0.3,
        "stats_last_nonzero": torch.zeros(N, dtype=torch.long),
        **extra,
    }
    if tied:
        state["decoder.linear.weight"] = w_enc
    else:
        state["decoder.weight"] = torch.randn(D, N, generator=gen) * 0.3
    torch.save(state, tmp_path / "oa.pt")
    ours = load_sae(tmp_path / "oa.pt")
    assert ours.cfg.tied == tied and ours.cfg.normalize == (extra.get("activation") == "TopK")
    encode, decode = openai_reference(state)
    x = inputs() * 3
    z_ref, info = encode(x)
    torch.testing.assert_close(ours.encode(x), z_ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours(x).x_hat_bd, decode(z_ref, info), atol=ATOL, rtol=0)
    if not ours.cfg.normalize:
        assert_same_sae(ours, lambda x: encode(x)[0], decode, x)


def test_openai_refusals(tmp_path):
    base = {"encoder.weight": torch.zeros(N, D), "decoder.weight": torch.zeros(D, N)}
    base |= {"pre_bias": torch.zeros(D), "latent_bias": torch.zeros(N)}
    cases = [
        ({"activation": "GELU"}, "silently read it as ReLU"),
        ({"activation": "TopK", "activation_state_dict": {"k": 3}}, "postact_fn"),
        ({"activation": "ReLU", "normalize": True}, "exactly the TopK"),
        ({"mystery": torch.zeros(2)}, r"keys \['mystery'\]"),
    ]
    for extra, message in cases:
        torch.save({**base, **extra}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=message):
            load_sae(tmp_path / "bad.pt")


# --------------------------------------------------------------------------- overcomplete
overcomplete = pytest.importorskip("overcomplete")


def test_overcomplete_topksae_decodes_like_the_view():
    """overcomplete's own TopKSAE, given this SAE's encoder and dictionary, encodes and decodes
    the same (its decode adds no bias; the view's ``bias`` is the difference)."""
    cfg = SAEConfig(D, N, activation="TopKReLU", k=5, inference="topk")
    sae = SAE(cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sae.pre_bias.normal_(0, 0.3)
        sae.latent_bias.normal_(0, 0.3)
    view = sae.overcomplete()
    ref = overcomplete.sae.TopKSAE(D, N, top_k=5, encoder_module="linear")
    linear = next(m for m in ref.encoder.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        linear.weight.copy_(sae.encoder.t())
        linear.bias.copy_(sae.latent_bias - sae.pre_bias @ sae.encoder)
        ref.dictionary._weights.copy_(view.get_dictionary())
    ref.eval()
    x = inputs()
    with torch.no_grad():
        _, codes_ref = ref.encode(x)
        _, codes = view.encode(x)
        torch.testing.assert_close(codes, codes_ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(
            view.decode(codes) - view.bias, ref.decode(codes), atol=ATOL, rtol=0
        )
    assert (view.nb_concepts, view.top_k) == (ref.nb_concepts, ref.top_k)


def _format_saes(tmp_path: Path) -> list[SAE]:
    """One SAE per loader path, with scaling factors, means and non-unit decoder rows."""
    saes = []
    ref = saelens_case("topk", k=5, rescale_acts_by_decoder_norm=True)
    randomize(ref, seed=1)
    ref.save_model(tmp_path / "lens")
    saes.append(load_sae(tmp_path / "lens"))
    cfg = SAEConfig.matryoshka(D, N, 4, scaling_factor=3.5)
    sae = SAE(cfg, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sae.decoder.mul_(torch.rand(N, 1) * 4 + 0.1)
        sae.mean.normal_(0, 1)
    saes.append(sae)
    return saes


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.0, 10.0))
def test_overcomplete_invariant_decode_is_codes_times_dictionary(tmp_path_factory, seed, scale):
    saes = _format_saes(tmp_path_factory.mktemp("ocv"))
    gen = torch.Generator().manual_seed(seed)
    for sae in saes:
        view = sae.overcomplete()
        z = torch.relu(torch.randn(4, sae.n_latents, generator=gen)) * scale
        torch.testing.assert_close(
            view.decode(z), z @ view.get_dictionary() + view.bias, atol=1e-4, rtol=1e-5
        )
