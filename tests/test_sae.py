"""SAE core: numerical equality with an independent re-implementation of MSAE's formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sae_explorer.sae import (
    ACTIVATIONS,
    SAE,
    SAEConfig,
    doubling_nesting_list,
    relative_importance,
)

ATOL = 1e-5


# --------------------------------------------------------------------------- reference
# A deliberately literal transcription of MSAE's sae.py (Autoencoder, MatryoshkaAutoencoder, TopK,
# SoftCapping, normalize_data and the SAE wrapper), written from the formulas, sharing no code with
# sae_explorer.


def ref_normalize(x, eps=1e-5):
    mu = x.mean(dim=-1, keepdim=True)
    x = x - mu
    std = x.std(dim=-1, keepdim=True)
    return x / (std + eps), mu, std


def ref_act(name, x, k=None, eval_mode=False):
    """MSAE activations; eval_mode is TopK.forward_eval (no selection)."""
    use_abs = "abs" in name
    post = torch.relu if name.endswith("ReLU") else (lambda v: v)
    if not name.startswith("TopK"):
        return post(x)
    if use_abs:
        x = torch.abs(x)
    if eval_mode:
        return post(x)
    _, idx = torch.topk(x, k=k, dim=-1)
    vals = post(torch.gather(x, -1, idx))
    out = torch.zeros_like(x)
    out.scatter_(-1, idx, vals)
    return out


def ref_cap(x, cap):
    return cap * torch.tanh(x / cap) if cap > 0 else x


class Ref:
    """Seed semantics on raw weights w = dict(pre_bias, encoder, latent_bias, decoder|None)."""

    def __init__(self, w, activation, k, normalize, cap, mean, scale, nesting=None):
        self.w, self.act, self.k, self.norm, self.cap = w, activation, k, normalize, cap
        self.mean, self.scale, self.nesting = mean, scale, nesting

    def dec_matrix(self):
        return self.w["encoder"].t() if self.w["decoder"] is None else self.w["decoder"]

    def model_pre(self, x):
        info = {}
        if self.norm:
            x, mu, std = ref_normalize(x)
            info = {"mu": mu, "std": std}
        return (x - self.w["pre_bias"]) @ self.w["encoder"] + self.w["latent_bias"], info

    def model_decode(self, z, info):
        ret = z @ self.dec_matrix() + self.w["pre_bias"]
        if self.norm:
            ret = ret * info["std"] + info["mu"]
        return ret

    def wrapper_encode(self, x, topk=-1):
        """SAE.encode(x, topk)[1]."""
        x = (x - self.mean) * self.scale
        pre, _ = self.model_pre(x)
        full = ref_act(self.act, pre, self.k, eval_mode=True)
        if 0 < topk < pre.shape[-1]:
            _, idx = torch.topk(full, k=topk, dim=-1)
            vals = torch.gather(full, -1, idx)
            full = torch.zeros_like(full)
            full.scatter_(-1, idx, vals)
        return ref_cap(full, self.cap)

    def wrapper_decode(self, z):
        assert not self.norm  # the reference asserts here too
        return self.model_decode(z, {}) / self.scale + self.mean

    def autoencoder_forward(self, x_clip):
        """Autoencoder.forward on the wrapper's preprocessed input: (recons, latents, all_recons, all_latents)."""
        x = (x_clip - self.mean) * self.scale
        pre, info = self.model_pre(x)
        lat = ref_cap(ref_act(self.act, pre, self.k), self.cap)
        all_lat = ref_cap(ref_act(self.act, pre, self.k, eval_mode=True), self.cap)
        return (
            self.model_decode(lat, info),
            lat,
            self.model_decode(all_lat, info),
            all_lat,
        )

    def matryoshka_forward(self, x_model):
        """MatryoshkaAutoencoder.forward: per-level (recons, latents) in model space."""
        pre, info = self.model_pre(x_model)
        lats = [ref_cap(ref_act(self.act, pre, k), self.cap) for k in sorted(self.nesting)]
        return [self.model_decode(z, info) for z in lats], lats


def build_cfg(**overrides) -> SAEConfig:
    base = dict(n_inputs=12, n_latents=48, activation="TopKReLU", k=5)
    base.update(overrides)
    return SAEConfig(**base)


def random_sae(cfg: SAEConfig, seed: int = 0) -> tuple[SAE, Ref]:
    gen = torch.Generator().manual_seed(seed)
    d, n = cfg.n_inputs, cfg.n_latents
    w = {
        "pre_bias": torch.randn(d, generator=gen) * 0.3,
        "encoder": torch.randn(d, n, generator=gen) * 0.5,
        "latent_bias": torch.randn(n, generator=gen) * 0.2,
        "decoder": None if cfg.tied else torch.randn(n, d, generator=gen) * 0.5,
        "mean": torch.randn(d, generator=gen) * 0.1,
    }
    sae = SAE.from_tensors(cfg, {k: v for k, v in w.items() if v is not None})
    ref = Ref(
        w,
        cfg.activation,
        cfg.k,
        cfg.normalize,
        cfg.soft_cap,
        w["mean"],
        cfg.scaling_factor,
        cfg.nesting_list,
    )
    return sae, ref


def inputs(cfg: SAEConfig, n: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, cfg.n_inputs, generator=torch.Generator().manual_seed(seed)) * 2.0


# --------------------------------------------------------------------------- equality with the seed
VARIANTS = [
    dict(activation="TopKReLU", k=5),
    dict(activation="TopK", k=3),
    dict(activation="TopKabs", k=4),
    dict(activation="TopKabsReLU", k=6, soft_cap=2.0),
    dict(activation="ReLU", k=None, soft_cap=5.0),
    dict(activation="Identity", k=None),
    dict(activation="TopKReLU", k=5, tied=True, scaling_factor=3.5),
    dict(activation="TopKReLU", k=5, soft_cap=1.5, scaling_factor=0.7),
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
@pytest.mark.parametrize("topk", [None, 3])
def test_encode_decode_match_reference(variant, topk):
    cfg = build_cfg(**variant)
    sae, ref = random_sae(cfg)
    x = inputs(cfg)
    z = sae.encode(x, topk=topk)
    torch.testing.assert_close(
        z, ref.wrapper_encode(x, -1 if topk is None else topk), atol=ATOL, rtol=0
    )
    torch.testing.assert_close(sae.decode(z), ref.wrapper_decode(z), atol=ATOL, rtol=0)
    out = sae(x, topk=topk)
    torch.testing.assert_close(out.x_hat_bd, ref.wrapper_decode(z), atol=ATOL, rtol=0)


@pytest.mark.parametrize("variant", [*VARIANTS[:4], dict(activation="TopKReLU", k=5, soft_cap=3.0)])
def test_normalized_forward_matches_reference_autoencoder(variant):
    cfg = build_cfg(input_norm="layer_norm", **variant)
    sae, ref = random_sae(cfg, seed=3)
    x = inputs(cfg, seed=4)
    recons, lat, all_recons, all_lat = ref.autoencoder_forward(x)
    out = sae(x)
    torch.testing.assert_close(out.z_bl, all_lat, atol=ATOL, rtol=0)
    torch.testing.assert_close(sae.preprocess(out.x_hat_bd), all_recons, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.codes_bl, lat, atol=ATOL, rtol=0)
    torch.testing.assert_close(sae.preprocess(out.x_hat_codes_bd), recons, atol=ATOL, rtol=0)
    torch.testing.assert_close(sae.encode(x), all_lat, atol=ATOL, rtol=0)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("activation", ["TopKReLU", "TopKabs"])
def test_matryoshka_levels_match_reference(normalize, activation):
    cfg = SAEConfig.matryoshka(
        10,
        40,
        3,
        activation=activation,
        input_norm="layer_norm" if normalize else "none",
        soft_cap=4.0,
    )
    assert cfg.nesting_list == (3, 6, 12, 24, 40)
    sae, ref = random_sae(cfg, seed=5)
    xm = sae.preprocess(inputs(cfg, seed=6))
    ref_recons, ref_lats = ref.matryoshka_forward(xm)
    codes = sae.level_codes(sae.pre_activations_model(xm, sae.normalization_stats(xm)))
    assert len(codes) == len(ref_lats) == 5
    for ours, theirs in zip(codes, ref_lats):
        torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)
    for sparse_limit in (0, 12, 40):  # dense, mixed and embedding_bag decoding of the levels
        out = sae.level_forward(xm, sparse_decode_max_k=sparse_limit)
        assert len(out.recons) == 5
        for ours, theirs in zip(out.recons, ref_recons):
            torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_plain_topk_level_matches_reference_sparse_forward():
    cfg = build_cfg(activation="TopKReLU", k=4, soft_cap=2.0)
    sae, ref = random_sae(cfg, seed=8)
    x = inputs(cfg)
    recons, lat, _, _ = ref.autoencoder_forward(x)
    out = sae.level_forward(sae.preprocess(x))
    (codes,) = sae.level_codes(out.pre_bl)
    torch.testing.assert_close(codes, lat, atol=ATOL, rtol=0)
    torch.testing.assert_close(out.recons[0], recons, atol=ATOL, rtol=0)
    assert out.top_values_bk.shape == (x.shape[0], 4) and out.full_bl is None
    assert ((codes != 0).sum(-1) <= 4).all()


# --------------------------------------------------------------------------- invariants
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n_ids=st.integers(1, 48))
def test_latent_contributions_sum_to_reconstruction(seed, n_ids):
    cfg = build_cfg(scaling_factor=2.0)
    sae, _ = random_sae(cfg, seed=seed % 7)
    x = inputs(cfg, seed=seed)
    z = sae.encode(x)
    shares = sae.latent_contributions(z, list(range(cfg.n_latents)))
    assert shares.shape == (x.shape[0], cfg.n_latents, cfg.n_inputs)
    base = sae.decode(torch.zeros_like(z))
    torch.testing.assert_close(base + shares.sum(1), sae.decode(z), atol=1e-4, rtol=0)
    ids = torch.randperm(cfg.n_latents, generator=torch.Generator().manual_seed(seed))[:n_ids]
    part = sae.latent_contributions(z, ids)
    torch.testing.assert_close(part, shares[:, ids], atol=1e-6, rtol=0)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), topk=st.integers(1, 47))
def test_encode_topk_keeps_the_k_largest(seed, topk):
    cfg = build_cfg()
    sae, _ = random_sae(cfg, seed=seed % 5)
    x = inputs(cfg, seed=seed)
    full = sae.encode(x)
    kept = sae.encode(x, topk=topk)
    assert ((kept != 0).sum(-1) <= topk).all()
    nonzero = kept != 0
    torch.testing.assert_close(kept[nonzero], full[nonzero])
    # every value not kept is <= the k-th largest
    kth = full.topk(topk, dim=-1).values[:, -1:]
    assert (full.masked_fill(nonzero, float("-inf")) <= kth).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 20))
def test_latent_levels_agree_with_per_level_topk(seed, k):
    cfg = SAEConfig.matryoshka(8, 40, k)
    sae, _ = random_sae(cfg, seed=seed % 9)
    x = inputs(cfg, seed=seed)
    z = sae.encode(x)
    levels = sae.latent_levels(z)
    assert levels.dtype == torch.int64 and levels.shape == z.shape
    pre = sae.pre_activations_model(sae.preprocess(x))
    level_codes = sae.level_codes(pre)
    # first level keeping a latent == first level whose TopK codes are non-zero there
    expected = torch.full_like(levels, -1)
    for i in reversed(range(len(level_codes))):
        expected = torch.where(level_codes[i] != 0, torch.full_like(levels, i), expected)
    assert torch.equal(levels, expected)
    # level i keeps at most nesting_list[i] latents in total
    for i, k_i in enumerate(cfg.nesting_list):
        assert (((levels >= 0) & (levels <= i)).sum(-1) <= k_i).all()


def test_latent_levels_without_nesting_are_minus_one():
    sae, _ = random_sae(build_cfg())
    z = sae.encode(inputs(build_cfg()))
    assert (sae.latent_levels(z) == -1).all()


def test_dictionary_rows_are_unit_norm_and_match_decoder_direction():
    sae, ref = random_sae(build_cfg())
    dictionary = sae.get_dictionary()
    assert dictionary.shape == (48, 12)
    torch.testing.assert_close(dictionary.norm(dim=-1), torch.ones(48))
    cos = torch.nn.functional.cosine_similarity(dictionary, ref.dec_matrix(), dim=-1)
    torch.testing.assert_close(cos, torch.ones(48))


def test_random_init_has_unit_decoder_rows_and_tied_encoder():
    torch.manual_seed(0)
    sae = SAE(build_cfg())
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(48))
    torch.testing.assert_close(sae.encoder.t(), sae.W_dec)
    assert sae.encode(torch.randn(3, 12)).count_nonzero() > 0


def test_content_hash_tracks_weights_and_config():
    sae, _ = random_sae(build_cfg())
    same, _ = random_sae(build_cfg())
    other_cfg, _ = random_sae(build_cfg(soft_cap=3.0))
    assert sae.content_hash == same.content_hash
    assert sae.content_hash != other_cfg.content_hash
    with torch.no_grad():
        same.latent_bias[0] += 1e-3
    assert sae.content_hash != same.content_hash


# --------------------------------------------------------------------------- other APIs
def test_overcomplete_view_matches_topk_codes():
    cfg = build_cfg(activation="TopKReLU", k=4)
    sae, ref = random_sae(cfg)
    x = inputs(cfg)
    view = sae.overcomplete()
    pre_codes, codes = view.encode(x)
    ref_pre, _ = ref.model_pre(sae.preprocess(x))
    torch.testing.assert_close(pre_codes, ref_pre, atol=ATOL, rtol=0)
    _, ref_lat, _, _ = ref.autoencoder_forward(x)
    torch.testing.assert_close(codes, ref_lat, atol=ATOL, rtol=0)
    pre2, codes2, x_hat = view(x)
    torch.testing.assert_close(x_hat, ref.wrapper_decode(codes), atol=ATOL, rtol=0)
    assert torch.equal(codes2, codes) and torch.equal(pre2, pre_codes)
    torch.testing.assert_close(view.decode(codes), x_hat)
    assert (view.nb_concepts, view.top_k, view.input_shape) == (cfg.n_latents, 4, cfg.n_inputs)


@pytest.mark.parametrize("matryoshka", [False, True])
def test_prune_latents_keeps_chosen_latents(matryoshka):
    cfg = SAEConfig.matryoshka(12, 48, 4) if matryoshka else build_cfg(activation="ReLU", k=None)
    sae, _ = random_sae(cfg)
    x = inputs(cfg)
    keep = [5, 0, 17, 40, 33]
    pruned = sae.prune_latents(keep)
    assert pruned.n_latents == 5 and pruned.provenance["pruned_from"] == sae.content_hash
    torch.testing.assert_close(pruned.encode(x), sae.encode(x)[:, keep], atol=ATOL, rtol=0)
    z = sae.encode(x)
    torch.testing.assert_close(
        pruned.decode(z[:, keep]),
        sae.decode(z * torch.isin(torch.arange(48), torch.tensor(keep))),
        atol=ATOL,
        rtol=0,
    )
    if matryoshka:
        assert pruned.nesting_list == (4, 5)
    with pytest.raises(ValueError, match="distinct"):
        sae.prune_latents([1, 1])


def test_helpers_follow_msae_recipe():
    assert doubling_nesting_list(64, 6144) == (64, 128, 256, 512, 1024, 2048, 4096, 6144)
    assert doubling_nesting_list(32, 256) == (32, 64, 128, 256)
    assert relative_importance("RW", 4) == (4.0, 3.0, 2.0, 1.0)
    assert relative_importance("UW", 3) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(activation="GELU"), "unknown activation 'GELU'"),
        (dict(activation="TopKReLU", k=None), "needs k"),
        (dict(activation="TopKReLU", k=49), "needs k"),
        (dict(activation="ReLU", k=4), "takes no k"),
        (dict(activation="ReLU", k=None, nesting_list=(4, 8)), "needs a TopK"),
        (dict(nesting_list=(8, 4)), "strictly increasing"),
        (dict(nesting_list=(5, 60)), r"\[1, n_latents=48\]"),
        (dict(k=5, nesting_list=(4, 8)), "first nesting level"),
        (dict(soft_cap=-1.0), "soft_cap"),
        (dict(scaling_factor=0.0), "scaling_factor"),
        (dict(n_latents=0), "n_latents"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        build_cfg(**overrides)


def test_config_dict_round_trip_and_unknown_keys():
    cfg = SAEConfig.matryoshka(12, 48, 3, weighting="UW", soft_cap=2.0)
    assert SAEConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown SAE config keys"):
        SAEConfig.from_dict({**cfg.to_dict(), "colour": 1})
    assert set(ACTIVATIONS) == {
        *("ReLU", "Identity", "TopK", "TopKReLU", "TopKabs", "TopKabsReLU"),
        *("AbsTopK", "JumpReLU"),
    }
    legacy = {k: v for k, v in cfg.to_dict().items() if k != "input_norm"}
    assert SAEConfig.from_dict({**legacy, "normalize": True}).input_norm == "layer_norm"
    assert SAEConfig.from_dict({**legacy, "normalize": False}) == cfg


def test_wrong_input_width_is_a_value_error():
    sae, _ = random_sae(build_cfg())
    with pytest.raises(ValueError, match="width 12"):
        sae.encode(torch.zeros(2, 11))
    with pytest.raises(ValueError, match="width 48"):
        sae.decode(torch.zeros(2, 47))


@pytest.mark.parametrize("input_norm", ["none", "layer_norm", "constant_norm_rescale"])
def test_to_model_space_is_what_the_encoder_reads(input_norm):
    cfg = build_cfg(activation="ReLU", k=None, input_norm=input_norm, scaling_factor=2.5)
    sae, _ = random_sae(cfg)
    with torch.no_grad():
        sae.mean.normal_(0, 1)
        sae.pre_bias.normal_(0, 0.3)
    x = inputs(cfg)
    z = torch.relu(sae.to_model_space(x) @ sae.encoder + sae.latent_bias)
    torch.testing.assert_close(sae.encode(x), z, atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(
        sae.latent_activations(x, [3, 7]), z[:, [3, 7]], atol=1e-5, rtol=1e-6
    )
