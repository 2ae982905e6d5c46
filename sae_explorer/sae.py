"""Sparse autoencoders (plain and Matryoshka) with MSAE's exact inference semantics.

One module, :class:`SAE`, covers every architecture the explorer reads: ReLU / Identity / TopK
variants, tied or untied decoders, optional soft capping and per-sample normalisation, and a
Matryoshka nesting list. It holds the checkpoint's preprocessing too, so the public methods take
and return vectors in the *input* (CLIP embedding) space, like the reference ``SAE`` wrapper of
MSAE; the ``*_model`` methods work in the SAE's internal *model* space (after preprocessing) and
are what training uses.

Model space (MSAE ``Autoencoder``)::

    pre    = (x - pre_bias) @ encoder + latent_bias          encoder [n_inputs, n_latents]
    codes  = cap(act(pre))                                    cap(z) = c * tanh(z / c), off if c == 0
    recon  = codes @ decoder + pre_bias                       decoder [n_latents, n_inputs] or encoder.T

Input space (MSAE ``SAE`` wrapper): ``x_model = (x - mean) * scaling_factor`` on the way in and
``x = x_model / scaling_factor + mean`` on the way out.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn


class ActivationSpec(NamedTuple):
    """How an activation name behaves: TopK selection, selection on |pre|, ReLU on the kept values."""

    top_k: bool
    use_abs: bool
    relu: bool


ACTIVATIONS: dict[str, ActivationSpec] = {
    "ReLU": ActivationSpec(top_k=False, use_abs=False, relu=True),
    "Identity": ActivationSpec(top_k=False, use_abs=False, relu=False),
    "TopK": ActivationSpec(top_k=True, use_abs=False, relu=False),
    "TopKReLU": ActivationSpec(top_k=True, use_abs=False, relu=True),
    "TopKabs": ActivationSpec(top_k=True, use_abs=True, relu=False),
    "TopKabsReLU": ActivationSpec(top_k=True, use_abs=True, relu=True),
}

WEIGHTINGS = ("RW", "UW")
NORM_EPS = 1e-5  # MSAE's normalize_data eps


def doubling_nesting_list(k: int, n_latents: int) -> tuple[int, ...]:
    """MSAE's nesting list: ``k, 2k, 4k, ...`` while below ``n_latents``, then ``n_latents``."""
    if not 1 <= k <= n_latents:
        raise ValueError(f"start k must be in [1, n_latents={n_latents}], got {k}")
    levels = []
    while k < n_latents:
        levels.append(k)
        k *= 2
    return (*levels, n_latents)


def relative_importance(weighting: str, n_levels: int) -> tuple[float, ...]:
    """Per-level loss weights: ``RW`` = reversed ranks ``(L, ..., 1)``, ``UW`` = uniform."""
    if weighting == "RW":
        return tuple(float(n_levels - i) for i in range(n_levels))
    if weighting == "UW":
        return (1.0,) * n_levels
    raise ValueError(f"unknown Matryoshka weighting {weighting!r}; choose one of {WEIGHTINGS}")


@dataclass(frozen=True)
class SAEConfig:
    """Architecture and preprocessing of one SAE; everything needed to rebuild it from weights."""

    n_inputs: int
    """Input dimension (the CLIP embedding width)."""
    n_latents: int
    """Number of latents (dictionary size)."""
    activation: str = "TopKReLU"
    """One of ReLU, Identity, TopK, TopKReLU, TopKabs, TopKabsReLU (MSAE names)."""
    k: int | None = None
    """Latents kept by the TopK activations; for a Matryoshka SAE the first nesting level."""
    nesting_list: tuple[int, ...] | None = None
    """Matryoshka levels (sorted k values sharing one encoder/decoder); None for a plain SAE."""
    relative_importance: tuple[float, ...] | None = None
    """Matryoshka per-level loss weights (training only); defaults to uniform."""
    tied: bool = False
    """Decoder is the encoder's transpose."""
    normalize: bool = False
    """Per-sample normalisation inside the model (subtract mean, divide by std + 1e-5)."""
    soft_cap: float = 0.0
    """Soft cap ``c * tanh(z / c)`` on latent values; 0 turns it off."""
    scaling_factor: float = 1.0
    """Input preprocessing: ``x_model = (x - mean) * scaling_factor`` (mean lives with the weights)."""

    def __post_init__(self) -> None:
        for name in ("n_inputs", "n_latents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        spec = ACTIVATIONS[self.activation]
        nesting = self.nesting_list
        if nesting is not None:
            nesting = tuple(int(n) for n in nesting)
            if not spec.top_k:
                raise ValueError(
                    f"a Matryoshka nesting list needs a TopK activation, got {self.activation!r}"
                )
            if not nesting or list(nesting) != sorted(set(nesting)):
                raise ValueError(f"nesting_list must be strictly increasing, got {nesting}")
            if nesting[0] < 1 or nesting[-1] > self.n_latents:
                raise ValueError(
                    f"nesting_list values must be in [1, n_latents={self.n_latents}], got {nesting}"
                )
            object.__setattr__(self, "nesting_list", nesting)
            if self.k is None:
                object.__setattr__(self, "k", nesting[0])
            elif self.k != nesting[0]:
                raise ValueError(f"k={self.k} must equal the first nesting level {nesting[0]}")
            if self.relative_importance is not None:
                weights = tuple(float(w) for w in self.relative_importance)
                if len(weights) != len(nesting) or any(not w >= 0 for w in weights):
                    raise ValueError(
                        f"relative_importance needs {len(nesting)} non-negative weights, got {weights}"
                    )
                object.__setattr__(self, "relative_importance", weights)
        elif self.relative_importance is not None:
            raise ValueError("relative_importance is only meaningful with a nesting_list")
        if spec.top_k:
            if self.k is None or isinstance(self.k, bool) or not 1 <= int(self.k) <= self.n_latents:
                raise ValueError(
                    f"activation {self.activation} needs k in [1, n_latents={self.n_latents}], "
                    f"got {self.k!r}"
                )
            object.__setattr__(self, "k", int(self.k))
        elif self.k is not None:
            raise ValueError(f"activation {self.activation} takes no k (got k={self.k})")
        if not (math.isfinite(self.soft_cap) and self.soft_cap >= 0):
            raise ValueError(f"soft_cap must be finite and >= 0 (0 = off), got {self.soft_cap}")
        if not (math.isfinite(self.scaling_factor) and self.scaling_factor > 0):
            raise ValueError(f"scaling_factor must be finite and > 0, got {self.scaling_factor}")
        object.__setattr__(self, "soft_cap", float(self.soft_cap))
        object.__setattr__(self, "scaling_factor", float(self.scaling_factor))

    @classmethod
    def matryoshka(
        cls, n_inputs: int, n_latents: int, k: int, weighting: str = "RW", **kwargs
    ) -> SAEConfig:
        """MSAE's Matryoshka config: nesting list doubling from ``k``; ``RW`` or ``UW`` weights."""
        nesting = doubling_nesting_list(k, n_latents)
        return cls(
            n_inputs=n_inputs,
            n_latents=n_latents,
            activation=kwargs.pop("activation", "TopKReLU"),
            nesting_list=nesting,
            relative_importance=relative_importance(weighting, len(nesting)),
            **kwargs,
        )

    @property
    def architecture(self) -> str:
        """Short family name: ``matryoshka``, ``topk`` or ``relu`` (also ``identity``)."""
        if self.nesting_list is not None:
            return "matryoshka"
        return "topk" if ACTIVATIONS[self.activation].top_k else self.activation.lower()

    @property
    def levels(self) -> tuple[int, ...]:
        """k of each sparse level used in training: the nesting list, ``(k,)``, or ``(n_latents,)``."""
        if self.nesting_list is not None:
            return self.nesting_list
        return (self.k,) if self.k is not None else (self.n_latents,)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists)."""
        out = asdict(self)
        for key in ("nesting_list", "relative_importance"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SAEConfig:
        """Inverse of :meth:`to_dict`; unknown keys are a ``ValueError`` naming them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SAE config keys {unknown}; allowed: {sorted(known)}")
        missing = sorted({"n_inputs", "n_latents"} - set(data))
        if missing:
            raise ValueError(f"SAE config is missing {missing}")
        return cls(**data)


class NormStats(NamedTuple):
    """Per-sample statistics of the model-space input when ``cfg.normalize`` is on."""

    mu_b1: Tensor
    std_b1: Tensor


class InputStats(NamedTuple):
    """The input preprocessing ``x_model = (x - mean_d) * scaling_factor`` (MSAE's ``SAE`` wrapper).

    A checkpoint carries the statistics of the data it was trained on; MSAE's own extraction
    recomputes them on the other modality's embeddings before encoding those (CLIP's image and
    text embeddings sit far apart), which :meth:`SAE.with_input_stats` makes possible.
    """

    mean_d: Tensor
    scaling_factor: float


class SAEOutput(NamedTuple):
    """Result of :meth:`SAE.forward`, all in the input (CLIP) space except latents.

    ``z_bl``/``x_hat_bd`` follow the reference wrapper's ``forward`` (full latents and their
    decoding); ``codes_bl``/``x_hat_codes_bd`` are the model's own sparse codes (TopK with k, the
    largest Matryoshka level, or the ReLU) and the reconstruction it was trained to make.
    """

    z_bl: Tensor
    x_hat_bd: Tensor
    codes_bl: Tensor
    x_hat_codes_bd: Tensor


class LevelOutput(NamedTuple):
    """Model-space forward pass per sparse level (what training optimises).

    Codes are kept compact: the capped top values/indices of the largest partial level (sorted,
    so level ``k`` is their first ``k`` columns) and, when a level keeps every latent (ReLU /
    Identity SAEs, or a nesting list ending at ``n_latents``), the capped full latents.
    """

    pre_bl: Tensor
    recons: list[Tensor]  # one [b, n_inputs] per level, smallest k first (model space)
    top_values_bk: Tensor | None
    top_indices_bk: Tensor | None
    full_bl: Tensor | None


class OvercompleteEncoding(NamedTuple):
    pre_codes: Tensor
    codes: Tensor


class OvercompleteOutput(NamedTuple):
    pre_codes: Tensor
    codes: Tensor
    x_hat: Tensor


class SAE(nn.Module):
    """A (Matryoshka) sparse autoencoder with its input preprocessing.

    ``SAE(cfg)`` is randomly initialised (unit-norm decoder rows, encoder = decoder transpose);
    checkpoints come through :func:`sae_explorer.load_sae`.
    """

    pre_bias: nn.Parameter
    encoder: nn.Parameter
    latent_bias: nn.Parameter
    decoder: nn.Parameter | None
    mean: Tensor

    def __init__(self, cfg: SAEConfig, *, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        d, n = cfg.n_inputs, cfg.n_latents
        w_ld = torch.randn(n, d, generator=generator)
        w_ld /= w_ld.norm(dim=-1, keepdim=True)
        self.pre_bias = nn.Parameter(torch.zeros(d))
        self.encoder = nn.Parameter(w_ld.t().contiguous())
        self.latent_bias = nn.Parameter(torch.zeros(n))
        if cfg.tied:
            self.register_parameter("decoder", None)
        else:
            self.decoder = nn.Parameter(w_ld.clone())
        self.register_buffer("mean", torch.zeros(d))
        self.source_format: str = "random"
        self.source: str = ""
        self.provenance: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tensors(
        cls,
        cfg: SAEConfig,
        tensors: dict[str, Tensor],
        *,
        source_format: str = "sae-explorer",
        source: str = "",
        provenance: dict | None = None,
    ) -> SAE:
        """Build from named tensors (``pre_bias``, ``encoder``, ``latent_bias``, ``decoder``
        unless tied, optional ``mean``), checking names, shapes and finiteness."""
        d, n = cfg.n_inputs, cfg.n_latents
        expected = {"pre_bias": (d,), "encoder": (d, n), "latent_bias": (n,)}
        if not cfg.tied:
            expected["decoder"] = (n, d)
        missing = sorted(set(expected) - set(tensors))
        if missing:
            raise ValueError(f"SAE weights are missing {missing} (have {sorted(tensors)})")
        if cfg.tied and "decoder" in tensors:
            raise ValueError("config says tied=True but the weights contain a separate decoder")
        mean = tensors.get("mean", torch.zeros(()))
        mean = torch.as_tensor(mean, dtype=torch.float32)
        if mean.ndim == 0:
            mean = mean.expand(d)
        expected_all = {**expected, "mean": (d,)}
        values = {**{k: tensors[k] for k in expected}, "mean": mean}
        for name, shape in expected_all.items():
            tensor = values[name]
            if not isinstance(tensor, Tensor):
                raise ValueError(f"weight {name!r} is a {type(tensor).__name__}, not a tensor")
            if tuple(tensor.shape) != shape:
                raise ValueError(
                    f"weight {name!r} has shape {tuple(tensor.shape)}, expected {shape} "
                    f"for n_inputs={d}, n_latents={n}"
                )
            if not tensor.is_floating_point():
                raise ValueError(f"weight {name!r} has dtype {tensor.dtype}, expected a float type")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"weight {name!r} contains NaN or infinite values")
        sae = cls(cfg)
        with torch.no_grad():
            for name in expected_all:
                getattr(sae, name).copy_(values[name].to(torch.float32))
        sae.source_format = source_format
        sae.source = source
        sae.provenance = dict(provenance or {})
        return sae.eval()

    def tensors(self) -> dict[str, Tensor]:
        """The weights as a flat dict (what the project format stores)."""
        out = {
            "pre_bias": self.pre_bias,
            "encoder": self.encoder,
            "latent_bias": self.latent_bias,
            "mean": self.mean,
        }
        if self.decoder is not None:
            out["decoder"] = self.decoder
        return {k: v.detach() for k, v in out.items()}

    # ------------------------------------------------------------------ properties
    @property
    def n_inputs(self) -> int:
        return self.cfg.n_inputs

    @property
    def n_latents(self) -> int:
        return self.cfg.n_latents

    @property
    def nesting_list(self) -> tuple[int, ...] | None:
        return self.cfg.nesting_list

    @property
    def W_dec(self) -> Tensor:
        """Decoder matrix [n_latents, n_inputs] (the encoder's transpose when tied)."""
        return self.encoder.t() if self.decoder is None else self.decoder

    @property
    def content_hash(self) -> str:
        """sha256 of config and weights; identical for the same SAE in any format or device."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.cfg.to_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.tensors().items()):
            digest.update(name.encode())
            digest.update(tensor.to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def input_stats(self) -> InputStats:
        """The checkpoint's own input statistics (mean and scaling factor)."""
        return InputStats(self.mean.detach(), self.cfg.scaling_factor)

    @property
    def training_modality(self) -> str | None:
        """``"image"``, ``"text"`` or ``"both"`` when the checkpoint says what it was trained on."""
        value = self.provenance.get("training_modality")
        return value if value in ("image", "text", "both") else None

    def with_input_stats(self, stats: InputStats) -> SAE:
        """The same SAE (weights shared, not copied) preprocessing inputs with ``stats`` instead
        of its own: how MSAE encodes the other modality's embeddings."""
        mean_d = torch.as_tensor(stats.mean_d).to(self.mean.device, self.mean.dtype)
        if tuple(mean_d.shape) != (self.n_inputs,):
            raise ValueError(
                f"input statistics need a mean of shape ({self.n_inputs},), got {tuple(mean_d.shape)}"
            )
        view = copy.copy(self)
        view._parameters = dict(self._parameters)
        view._buffers = dict(self._buffers)
        view._modules = dict(self._modules)
        view.cfg = replace(self.cfg, scaling_factor=float(stats.scaling_factor))
        view.mean = mean_d
        view.provenance = dict(self.provenance)
        return view

    # ------------------------------------------------------------------ model space
    def preprocess(self, x_bd: Tensor) -> Tensor:
        """Input space -> model space: ``(x - mean) * scaling_factor``."""
        return (x_bd - self.mean) * self.cfg.scaling_factor

    def postprocess(self, x_bd: Tensor) -> Tensor:
        """Model space -> input space: ``x / scaling_factor + mean``."""
        return x_bd / self.cfg.scaling_factor + self.mean

    def normalization_stats(self, xm_bd: Tensor) -> NormStats | None:
        """Per-sample mean/std of a model-space batch when ``cfg.normalize``; else None."""
        if not self.cfg.normalize:
            return None
        mu_b1 = xm_bd.mean(dim=-1, keepdim=True)
        std_b1 = (xm_bd - mu_b1).std(dim=-1, keepdim=True)
        return NormStats(mu_b1, std_b1)

    def normalize_model(self, xm_bd: Tensor, stats: NormStats | None) -> Tensor:
        """Per-sample normalisation (MSAE ``normalize_data``) of a model-space batch, given its
        :meth:`normalization_stats`; the identity when the SAE does not normalise (stats None)."""
        if stats is None:
            return xm_bd
        return (xm_bd - stats.mu_b1) / (stats.std_b1 + NORM_EPS)

    def pre_activations_model(self, xm_bd: Tensor, stats: NormStats | None = None) -> Tensor:
        """``(x - pre_bias) @ encoder + latent_bias`` on a (normalised) model-space batch."""
        xc_bd = self.normalize_model(xm_bd, stats) - self.pre_bias
        if xc_bd.ndim == 2:  # bias folded into the matmul: one pass over the [b, n_latents] output
            return torch.addmm(self.latent_bias, xc_bd, self.encoder)
        return xc_bd @ self.encoder + self.latent_bias

    def full_latents(self, pre_bl: Tensor, inplace: bool = False) -> Tensor:
        """Activation without TopK selection (MSAE ``forward_eval``), not yet capped.
        ``inplace`` overwrites ``pre_bl`` (for callers that do not need it afterwards)."""
        spec = ACTIVATIONS[self.cfg.activation]
        if inplace and not pre_bl.requires_grad:
            if spec.use_abs:
                pre_bl.abs_()
            return pre_bl.relu_() if spec.relu else pre_bl
        z_bl = pre_bl.abs() if spec.use_abs else pre_bl
        return torch.relu(z_bl) if spec.relu else z_bl

    def cap(self, z_bl: Tensor) -> Tensor:
        """Soft cap ``c * tanh(z / c)``; identity when ``soft_cap == 0``."""
        c = self.cfg.soft_cap
        return c * torch.tanh(z_bl / c) if c > 0 else z_bl

    def _top_codes(self, pre_bl: Tensor) -> tuple[Tensor, Tensor] | None:
        """Capped values and indices of the largest partial TopK level (sorted descending)."""
        spec = ACTIVATIONS[self.cfg.activation]
        partial = [k for k in self.cfg.levels if k < self.n_latents] if spec.top_k else []
        if not partial:
            return None
        scores_bl = pre_bl.abs() if spec.use_abs else pre_bl
        values_bk, indices_bk = scores_bl.topk(max(partial), dim=-1, sorted=True)
        if spec.relu:
            values_bk = torch.relu(values_bk)
        return self.cap(values_bk), indices_bk

    def _has_full_level(self) -> bool:
        return not ACTIVATIONS[self.cfg.activation].top_k or self.cfg.levels[-1] == self.n_latents

    def level_codes(self, pre_bl: Tensor) -> list[Tensor]:
        """Dense capped codes [b, n_latents] per level (TopK of each nesting k, smallest first;
        one level for plain SAEs). A level with ``k == n_latents`` is the full activation."""
        codes = []
        top = self._top_codes(pre_bl)
        if top is not None:
            values_bk, indices_bk = top
            for k in self.cfg.levels:
                if k < self.n_latents:
                    zeros_bl = torch.zeros_like(pre_bl)
                    codes.append(zeros_bl.scatter(-1, indices_bk[:, :k], values_bk[:, :k]))
        if self._has_full_level():
            codes.append(self.cap(self.full_latents(pre_bl)))
        return codes

    def sparse_codes(self, pre_bl: Tensor) -> Tensor:
        """Dense capped codes of the last (largest) level: the model's own sparse code."""
        if self._has_full_level():
            return self.cap(self.full_latents(pre_bl))
        return self.level_codes(pre_bl)[-1]

    def decode_model(self, z_bl: Tensor, stats: NormStats | None = None) -> Tensor:
        """Latents -> model space, undoing per-sample normalisation when stats are given."""
        xm_bd = z_bl @ self.W_dec + self.pre_bias
        if stats is not None:
            xm_bd = xm_bd * stats.std_b1 + stats.mu_b1
        return xm_bd

    def level_forward(self, xm_bd: Tensor, sparse_decode_max_k: int | None = None) -> LevelOutput:
        """Training forward pass on a model-space batch: reconstruction per level.

        Levels with ``k <= sparse_decode_max_k`` (default ``n_latents // 32``) are decoded
        incrementally from their top-k indices (``embedding_bag``), larger ones by dense matmul;
        both give the same numbers as decoding :meth:`level_codes`.
        """
        stats = self.normalization_stats(xm_bd)
        pre_bl = self.pre_activations_model(xm_bd, stats)
        limit = self.n_latents // 32 if sparse_decode_max_k is None else sparse_decode_max_k
        top = self._top_codes(pre_bl)
        recons: list[Tensor] = []
        values_bk = indices_bk = full_bl = None
        if top is not None:
            values_bk, indices_bk = top
            partial = [k for k in self.cfg.levels if k < self.n_latents]
            w_ld = self.W_dec if self.decoder is not None else self.W_dec.contiguous()
            running_bd, done = None, 0
            for k in partial:
                if k <= limit:
                    part_bd = nn.functional.embedding_bag(
                        indices_bk[:, done:k],
                        w_ld,
                        per_sample_weights=values_bk[:, done:k],
                        mode="sum",
                    )
                    running_bd = part_bd if running_bd is None else running_bd + part_bd
                    done = k
                    recon_bd = running_bd + self.pre_bias
                    if stats is not None:
                        recon_bd = recon_bd * stats.std_b1 + stats.mu_b1
                else:
                    z_bl = torch.zeros_like(pre_bl).scatter(-1, indices_bk[:, :k], values_bk[:, :k])
                    recon_bd = self.decode_model(z_bl, stats)
                recons.append(recon_bd)
        if self._has_full_level():
            full_bl = self.cap(self.full_latents(pre_bl))
            recons.append(self.decode_model(full_bl, stats))
        return LevelOutput(pre_bl, recons, values_bk, indices_bk, full_bl)

    # ------------------------------------------------------------------ input (CLIP) space
    def encode(self, x_bd: Tensor, topk: int | None = None) -> Tensor:
        """Full latents [b, n_latents] of CLIP-space inputs [b, n_inputs] (reference
        ``SAE.encode(x, topk)[1]``): activation without TopK selection, soft-capped; with
        ``topk`` only the k largest are kept (None, or <= 0 like the reference's -1: keep all)."""
        self._check_inputs(x_bd)
        xm_bd = self.preprocess(x_bd)
        pre_bl = self.pre_activations_model(xm_bd, self.normalization_stats(xm_bd))
        z_bl = self.full_latents(pre_bl, inplace=True)  # pre_bl is not used again
        if topk is not None and 0 < topk < self.n_latents:
            z_bl = keep_topk(z_bl, topk)
        return self.cap(z_bl)

    def decode(self, z_bl: Tensor, stats: NormStats | None = None) -> Tensor:
        """Latents [b, n_latents] -> CLIP space [b, n_inputs].

        With ``cfg.normalize`` the per-sample statistics of the original input are needed to
        undo the normalisation; without ``stats`` the result keeps the normalised scale (zero
        mean, unit std per sample in model space). :meth:`forward` passes them.
        """
        if z_bl.shape[-1] != self.n_latents:
            raise ValueError(f"expected latents of width {self.n_latents}, got {tuple(z_bl.shape)}")
        return self.postprocess(self.decode_model(z_bl, stats))

    def forward(self, x_bd: Tensor, topk: int | None = None) -> SAEOutput:
        """Encode and decode (reference wrapper ``forward``), plus the model's sparse codes."""
        self._check_inputs(x_bd)
        xm_bd = self.preprocess(x_bd)
        stats = self.normalization_stats(xm_bd)
        pre_bl = self.pre_activations_model(xm_bd, stats)
        z_bl = self.full_latents(pre_bl)
        if topk is not None and 0 < topk < self.n_latents:
            z_bl = keep_topk(z_bl, topk)
        z_bl = self.cap(z_bl)
        codes_bl = self.sparse_codes(pre_bl)
        return SAEOutput(
            z_bl=z_bl,
            x_hat_bd=self.postprocess(self.decode_model(z_bl, stats)),
            codes_bl=codes_bl,
            x_hat_codes_bd=self.postprocess(self.decode_model(codes_bl, stats)),
        )

    def _check_inputs(self, x_bd: Tensor) -> None:
        if x_bd.ndim < 1 or x_bd.shape[-1] != self.n_inputs:
            raise ValueError(
                f"SAE expects inputs of width {self.n_inputs}, got shape {tuple(x_bd.shape)}"
            )

    # ------------------------------------------------------------------ analysis helpers
    def get_dictionary(self) -> Tensor:
        """Unit-norm decoder directions [n_latents, n_inputs] (model space)."""
        w_ld = self.W_dec.detach()
        return w_ld / w_ld.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def latent_contributions(
        self, z_bl: Tensor, latent_ids: Sequence[int] | Tensor, stats: NormStats | None = None
    ) -> Tensor:
        """Each chosen latent's additive share of the CLIP-space reconstruction [b, m, n_inputs].

        ``decode(z) == decode(0) + latent_contributions(z, all ids).sum(1)`` (the ``decode(0)``
        offset being the decoded biases). ``stats`` as in :meth:`decode`.
        """
        ids = torch.as_tensor(latent_ids, dtype=torch.long, device=z_bl.device)
        if ids.ndim != 1 or (ids.numel() and (ids.min() < 0 or ids.max() >= self.n_latents)):
            raise ValueError(f"latent_ids must be a 1-d list of ids in [0, {self.n_latents})")
        share_bmd = z_bl[:, ids, None] * self.W_dec[ids][None] / self.cfg.scaling_factor
        if stats is not None:
            share_bmd = share_bmd * stats.std_b1[:, :, None]
        return share_bmd

    def latent_levels(self, z_bl: Tensor) -> Tensor:
        """int64 [b, n_latents]: for each input, the index of the first Matryoshka level whose
        TopK keeps the latent (rank among the input's latents < that level's k, value non-zero);
        -1 if no level keeps it, and everywhere -1 without a nesting list."""
        levels_bl = torch.full(z_bl.shape, -1, dtype=torch.int64, device=z_bl.device)
        if self.nesting_list is None:
            return levels_bl
        order_bl = z_bl.argsort(dim=-1, descending=True, stable=True)
        rank_bl = torch.empty_like(order_bl)
        positions = torch.arange(z_bl.shape[-1], device=z_bl.device).expand_as(order_bl)
        rank_bl.scatter_(-1, order_bl, positions)
        ks = torch.tensor(self.nesting_list, device=z_bl.device)
        first_bl = torch.searchsorted(ks, rank_bl, right=True)  # first level with k > rank
        kept_bl = (first_bl < len(ks)) & (z_bl != 0)
        return torch.where(kept_bl, first_bl, levels_bl)

    def prune_latents(self, latent_ids: Sequence[int] | Tensor) -> SAE:
        """A new SAE keeping only ``latent_ids`` (in that order). TopK k and nesting levels are
        clipped to the new width (duplicates dropped)."""
        ids = torch.as_tensor(latent_ids, dtype=torch.long)
        if ids.ndim != 1 or ids.numel() == 0:
            raise ValueError("latent_ids must be a non-empty 1-d list of latent indices")
        if ids.min() < 0 or ids.max() >= self.n_latents or ids.unique().numel() != ids.numel():
            raise ValueError(f"latent_ids must be distinct ids in [0, {self.n_latents})")
        n = ids.numel()
        cfg = self.cfg
        changes: dict = {"n_latents": n}
        if cfg.nesting_list is not None:
            nesting = tuple(sorted({min(k, n) for k in cfg.nesting_list}))
            weights = cfg.relative_importance
            if weights is not None:
                weights = relative_importance_for_pruned(cfg.nesting_list, weights, n)
            changes.update(nesting_list=nesting, relative_importance=weights, k=nesting[0])
        elif cfg.k is not None:
            changes["k"] = min(cfg.k, n)
        new_cfg = replace(cfg, **changes)
        tensors = self.tensors()
        tensors["encoder"] = tensors["encoder"][:, ids]
        tensors["latent_bias"] = tensors["latent_bias"][ids]
        if "decoder" in tensors:
            tensors["decoder"] = tensors["decoder"][ids]
        provenance = {
            **self.provenance,
            "pruned_from": self.content_hash,
            "kept_latents": ids.tolist(),
        }
        return SAE.from_tensors(
            new_cfg,
            tensors,
            source_format=self.source_format,
            source=self.source,
            provenance=provenance,
        )

    def overcomplete(self) -> OvercompleteView:
        """An ``overcomplete``-style view (encode -> (pre_codes, codes), forward -> triple)."""
        return OvercompleteView(self)


def relative_importance_for_pruned(
    nesting: tuple[int, ...], weights: tuple[float, ...], n: int
) -> tuple[float, ...]:
    """Weights of levels that survive clipping to ``n`` (the first clipped level keeps its weight)."""
    kept: dict[int, float] = {}
    for k, w in zip(nesting, weights):
        kept.setdefault(min(k, n), w)
    return tuple(kept[k] for k in sorted(kept))


def keep_topk(z_bl: Tensor, k: int) -> Tensor:
    """Zero all but the k largest values per row."""
    values, indices = z_bl.topk(k, dim=-1)
    return torch.zeros_like(z_bl).scatter(-1, indices, values)


class OvercompleteView(nn.Module):
    """The ``overcomplete`` SAE API on top of an :class:`SAE` (CLIP space in and out).

    ``pre_codes`` are the pre-activations, ``codes`` the model's sparse codes (TopK with k, the
    largest Matryoshka level, or the ReLU), as overcomplete's TopKSAE returns them.
    """

    def __init__(self, sae: SAE) -> None:
        super().__init__()
        self.sae = sae

    def encode(self, x_bd: Tensor) -> OvercompleteEncoding:
        self.sae._check_inputs(x_bd)
        xm_bd = self.sae.preprocess(x_bd)
        pre_bl = self.sae.pre_activations_model(xm_bd, self.sae.normalization_stats(xm_bd))
        return OvercompleteEncoding(pre_bl, self.sae.sparse_codes(pre_bl))

    def decode(self, z_bl: Tensor) -> Tensor:
        return self.sae.decode(z_bl)

    def forward(self, x_bd: Tensor) -> OvercompleteOutput:
        xm_bd = self.sae.preprocess(x_bd)
        stats = self.sae.normalization_stats(xm_bd)
        pre_codes, codes = self.encode(x_bd)
        return OvercompleteOutput(pre_codes, codes, self.sae.decode(codes, stats))

    def get_dictionary(self) -> Tensor:
        return self.sae.get_dictionary()
