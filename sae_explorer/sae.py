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
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

Activation = Literal[
    "ReLU", "Identity", "TopK", "TopKReLU", "TopKabs", "TopKabsReLU", "AbsTopK", "JumpReLU"
]
Inference = Literal["full", "topk"]
InputNorm = Literal["none", "layer_norm", "constant_norm_rescale"]
NestingBy = Literal["k", "width"]


class ActivationSpec(NamedTuple):
    """How an activation name behaves: TopK selection, selection on |pre|, ReLU on the kept values,
    signed values kept (selection on |pre| but the value is ``pre``), a per-latent threshold."""

    top_k: bool
    use_abs: bool
    relu: bool
    signed: bool = False
    jump: bool = False


ACTIVATIONS: dict[str, ActivationSpec] = {
    "ReLU": ActivationSpec(top_k=False, use_abs=False, relu=True),
    "Identity": ActivationSpec(top_k=False, use_abs=False, relu=False),
    "TopK": ActivationSpec(top_k=True, use_abs=False, relu=False),
    "TopKReLU": ActivationSpec(top_k=True, use_abs=False, relu=True),
    "TopKabs": ActivationSpec(top_k=True, use_abs=True, relu=False),
    "TopKabsReLU": ActivationSpec(top_k=True, use_abs=True, relu=True),
    # SAELens ``abstopk``: the k largest |pre|, keeping their signed values.
    "AbsTopK": ActivationSpec(top_k=True, use_abs=True, relu=False, signed=True),
    # SAELens ``jumprelu``: relu(pre) where pre > threshold (a tensor, one value per latent).
    "JumpReLU": ActivationSpec(top_k=False, use_abs=False, relu=True, jump=True),
}
INFERENCES = ("full", "topk")
INPUT_NORMS = ("none", "layer_norm", "constant_norm_rescale")
NESTINGS = ("k", "width")

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
    activation: Activation = "TopKReLU"
    """MSAE's names (ReLU, Identity, TopK, TopKReLU, TopKabs, TopKabsReLU) plus SAELens' AbsTopK
    and JumpReLU (a per-latent ``threshold`` tensor)."""
    k: int | None = None
    """Latents kept by the TopK activations; for a k-nested Matryoshka SAE the first level."""
    nesting_list: tuple[int, ...] | None = None
    """Matryoshka levels: sorted k values (MSAE, ``nesting_by="k"``) or dictionary-width prefixes
    (SAELens, ``nesting_by="width"``) sharing one encoder/decoder; None for a plain SAE."""
    relative_importance: tuple[float, ...] | None = None
    """Matryoshka per-level loss weights (training only); defaults to uniform."""
    tied: bool = False
    """Decoder is the encoder's transpose."""
    input_norm: InputNorm = "none"
    """Per-sample normalisation inside the model: ``layer_norm`` (MSAE/OpenAI/SAELens: subtract
    the mean, divide by std + 1e-5, undone on decode) or ``constant_norm_rescale`` (SAELens: scale
    to norm sqrt(n_inputs), undone on decode)."""
    inference: Inference = "full"
    """What ``encode`` returns for TopK activations: ``full`` latents without the TopK selection
    (MSAE's inference convention) or the ``topk`` codes the activation keeps (SAELens, OpenAI,
    saev). Other activations have one answer and take ``full``."""
    nesting_by: NestingBy = "k"
    """How ``nesting_list`` nests: by number of active latents (MSAE) or by dictionary width
    (SAELens Matryoshka: level j is latents ``[0, nesting_list[j])``)."""
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
        for name, allowed in (
            ("inference", INFERENCES),
            ("input_norm", INPUT_NORMS),
            ("nesting_by", NESTINGS),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {allowed}")
        if self.inference == "topk" and not spec.top_k:
            raise ValueError(
                f"inference='topk' needs a TopK activation, got {self.activation!r} (use 'full')"
            )
        nesting = self.nesting_list
        if nesting is not None and self.nesting_by == "width":
            self._check_width_nesting(tuple(int(n) for n in nesting))
        elif nesting is not None:
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
        elif self.nesting_by != "k":
            raise ValueError("nesting_by='width' needs a nesting_list of dictionary widths")
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

    def _check_width_nesting(self, widths: tuple[int, ...]) -> None:
        if not widths or list(widths) != sorted(set(widths)) or widths[0] < 1:
            raise ValueError(f"Matryoshka widths must be strictly increasing, got {widths}")
        if widths[-1] != self.n_latents:
            raise ValueError(
                f"the last Matryoshka width must be n_latents={self.n_latents}, got {widths}"
            )
        if self.relative_importance is not None:
            raise ValueError("relative_importance is only used with nesting_by='k'")
        object.__setattr__(self, "nesting_list", widths)

    @property
    def normalize(self) -> bool:
        """Per-sample layer norm inside the model (MSAE's ``normalize`` flag)."""
        return self.input_norm == "layer_norm"

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
        """k of each sparse level used in training: the nesting list, ``(k,)``, or ``(n_latents,)``;
        for width nesting, the dictionary widths."""
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
        """Inverse of :meth:`to_dict`; unknown keys are a ``ValueError`` naming them. The boolean
        ``normalize`` of schema-1 configs reads as ``input_norm``."""
        if "normalize" in data:
            data = dict(data)
            legacy = data.pop("normalize")
            if not isinstance(legacy, bool) or "input_norm" in data:
                raise ValueError(
                    f"legacy 'normalize' must be a bool without 'input_norm': {legacy!r}"
                )
            data["input_norm"] = "layer_norm" if legacy else "none"
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SAE config keys {unknown}; allowed: {sorted(known)}")
        missing = sorted({"n_inputs", "n_latents"} - set(data))
        if missing:
            raise ValueError(f"SAE config is missing {missing}")
        return cls(**data)


class NormStats(NamedTuple):
    """Per-sample statistics of the model-space input under ``cfg.input_norm``: the model sees
    ``(x - mu) / (std + eps)`` and decodes ``y * std + mu``."""

    mu_b1: Tensor
    std_b1: Tensor
    eps: float = NORM_EPS


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
        if ACTIVATIONS[cfg.activation].jump:
            self.threshold = nn.Parameter(torch.zeros(n))
        else:
            self.register_parameter("threshold", None)
        self.register_buffer("mean", torch.zeros(d))
        self.source_format: str = "random"
        self.source: str = ""
        self.provenance: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def _bare(cls, cfg: SAEConfig) -> SAE:
        """An SAE of ``cfg`` with every weight slot empty (None), to be filled by the caller."""
        sae = cls.__new__(cls)
        nn.Module.__init__(sae)
        sae.cfg = cfg
        for name in ("pre_bias", "encoder", "latent_bias", "decoder", "threshold"):
            sae.register_parameter(name, None)
        sae.register_buffer("mean", None)
        sae.source_format, sae.source, sae.provenance = "random", "", {}
        return sae

    @classmethod
    def weight_shapes(cls, cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        """The named tensors an SAE of ``cfg`` is made of, with their shapes."""
        d, n = cfg.n_inputs, cfg.n_latents
        shapes = {"pre_bias": (d,), "encoder": (d, n), "latent_bias": (n,), "mean": (d,)}
        if not cfg.tied:
            shapes["decoder"] = (n, d)
        if ACTIVATIONS[cfg.activation].jump:
            shapes["threshold"] = (n,)
        return shapes

    @classmethod
    def from_tensors(
        cls,
        cfg: SAEConfig,
        tensors: dict[str, Tensor],
        *,
        source_format: str = "sae-explorer",
        source: str = "",
        provenance: dict | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> SAE:
        """Build from named tensors (``pre_bias``, ``encoder``, ``latent_bias``, ``decoder``
        unless tied, ``threshold`` for JumpReLU, optional ``mean``), checking names, shapes and
        finiteness. The tensors are moved to ``device``/``dtype`` (default: where they are, fp32)
        and used as they are: no random initialisation is built and thrown away, and a tensor
        already on the right device and dtype is not copied."""
        shapes = cls.weight_shapes(cfg)
        required = [name for name in shapes if name != "mean"]
        missing = sorted(set(required) - set(tensors))
        if missing:
            raise ValueError(f"SAE weights are missing {missing} (have {sorted(tensors)})")
        if cfg.tied and "decoder" in tensors:
            raise ValueError("config says tied=True but the weights contain a separate decoder")
        dtype = torch.float32 if dtype is None else dtype
        if not dtype.is_floating_point:
            raise ValueError(f"SAE dtype must be a float type, got {dtype}")
        values = {name: tensors[name] for name in required}
        mean = tensors.get("mean", torch.zeros(()))
        mean = torch.as_tensor(mean)
        values["mean"] = mean.expand(cfg.n_inputs) if mean.ndim == 0 else mean
        for name, shape in shapes.items():
            _check_weight(name, values[name], shape, cfg)
        sae = cls._bare(cfg)
        for name, tensor in values.items():
            # Kept in the file's layout (OpenAI's transposed matrices too): making them contiguous
            # would double a load's peak memory; matmuls read either layout.
            tensor = tensor.to(device=device, dtype=dtype)
            if name == "mean":
                sae.mean = tensor
            else:
                setattr(sae, name, nn.Parameter(tensor, requires_grad=False))
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
        if self.threshold is not None:
            out["threshold"] = self.threshold
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
            array = tensor.to("cpu", torch.float32).contiguous().numpy()
            digest.update(memoryview(array).cast("B"))  # no bytes copy of a large matrix
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
        """Per-sample statistics of a model-space batch under ``cfg.input_norm``; else None.

        ``layer_norm``: mean and (unbiased) std, eps 1e-5 (MSAE, OpenAI, SAELens);
        ``constant_norm_rescale``: no shift, scale ``|x| / sqrt(n_inputs)`` (SAELens)."""
        if self.cfg.input_norm == "layer_norm":
            mu_b1 = xm_bd.mean(dim=-1, keepdim=True)
            std_b1 = (xm_bd - mu_b1).std(dim=-1, keepdim=True)
            return NormStats(mu_b1, std_b1)
        if self.cfg.input_norm == "constant_norm_rescale":
            scale_b1 = xm_bd.norm(dim=-1, keepdim=True) / math.sqrt(self.n_inputs)
            return NormStats(torch.zeros_like(scale_b1), scale_b1, 0.0)
        return None

    def normalize_model(self, xm_bd: Tensor, stats: NormStats | None) -> Tensor:
        """Per-sample normalisation (MSAE ``normalize_data``) of a model-space batch, given its
        :meth:`normalization_stats`; the identity when the SAE does not normalise (stats None)."""
        if stats is None:
            return xm_bd
        return (xm_bd - stats.mu_b1) / (stats.std_b1 + stats.eps)

    def pre_activations_model(self, xm_bd: Tensor, stats: NormStats | None = None) -> Tensor:
        """``(x - pre_bias) @ encoder + latent_bias`` on a (normalised) model-space batch."""
        xc_bd = self.normalize_model(xm_bd, stats) - self.pre_bias
        if xc_bd.ndim == 2:  # bias folded into the matmul: one pass over the [b, n_latents] output
            return torch.addmm(self.latent_bias, xc_bd, self.encoder)
        return xc_bd @ self.encoder + self.latent_bias

    def full_latents(
        self, pre_bl: Tensor, inplace: bool = False, latent_ids: Tensor | None = None
    ) -> Tensor:
        """Activation without TopK selection (MSAE ``forward_eval``), not yet capped.
        ``inplace`` overwrites ``pre_bl`` (for callers that do not need it afterwards);
        ``latent_ids`` names the latents of ``pre_bl``'s columns when it holds only some of them
        (JumpReLU thresholds are per latent)."""
        spec = ACTIVATIONS[self.cfg.activation]
        mask_bl = None
        if spec.jump:
            threshold = self.threshold if latent_ids is None else self.threshold[latent_ids]
            mask_bl = pre_bl > threshold
        inplace = inplace and not pre_bl.requires_grad
        z_bl = pre_bl
        if spec.use_abs and not spec.signed:
            z_bl = z_bl.abs_() if inplace else z_bl.abs()
        if spec.relu:
            z_bl = z_bl.relu_() if inplace else torch.relu(z_bl)
        if mask_bl is not None:
            z_bl = z_bl.mul_(mask_bl) if inplace else z_bl * mask_bl
        return z_bl

    def cap(self, z_bl: Tensor) -> Tensor:
        """Soft cap ``c * tanh(z / c)``; identity when ``soft_cap == 0``."""
        c = self.cfg.soft_cap
        return c * torch.tanh(z_bl / c) if c > 0 else z_bl

    def _topk_ks(self) -> tuple[int, ...]:
        """The k of each TopK selection the model makes: MSAE's nesting list, else ``(k,)``."""
        if not ACTIVATIONS[self.cfg.activation].top_k:
            return ()
        if self.cfg.nesting_list is not None and self.cfg.nesting_by == "k":
            return self.cfg.nesting_list
        return (self.cfg.k,)

    def _top_codes(self, pre_bl: Tensor) -> tuple[Tensor, Tensor] | None:
        """Capped values and indices of the largest partial TopK level (sorted descending)."""
        spec = ACTIVATIONS[self.cfg.activation]
        partial = [k for k in self._topk_ks() if k < self.n_latents]
        if not partial:
            return None
        scores_bl = pre_bl.abs() if spec.use_abs else pre_bl
        values_bk, indices_bk = scores_bl.topk(max(partial), dim=-1, sorted=True)
        if spec.signed:
            values_bk = pre_bl.gather(-1, indices_bk)
        if spec.relu:
            values_bk = torch.relu(values_bk)
        return self.cap(values_bk), indices_bk

    def _has_full_level(self) -> bool:
        ks = self._topk_ks()
        return not ks or ks[-1] == self.n_latents

    def inference_is_last_level(self) -> bool:
        """Whether :meth:`encode` (what the explorer shows) gives the last Matryoshka level's codes,
        so that level's reconstruction is the inference-time one and needs no pass of its own."""
        if self.cfg.inference == "topk":  # the model's own sparse codes: the last level's
            return True
        return self._has_full_level()  # full latents: a level only when one keeps every latent

    def level_codes(self, pre_bl: Tensor) -> list[Tensor]:
        """Dense capped codes [b, n_latents] per level (TopK of each nesting k, smallest first;
        one level for plain SAEs). A level with ``k == n_latents`` is the full activation. For
        width nesting, the model's code restricted to each width prefix."""
        if self.cfg.nesting_by == "width" and self.cfg.nesting_list is not None:
            codes_bl = self.sparse_codes(pre_bl)
            ids_l = torch.arange(self.n_latents, device=pre_bl.device)
            return [codes_bl * (ids_l < w) for w in self.cfg.nesting_list]
        codes = []
        top = self._top_codes(pre_bl)
        if top is not None:
            values_bk, indices_bk = top
            for k in self._topk_ks():
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
        values_bk, indices_bk = self._top_codes(pre_bl)
        k = self._topk_ks()[-1]
        return torch.zeros_like(pre_bl).scatter(-1, indices_bk[:, :k], values_bk[:, :k])

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
        if self.cfg.nesting_by == "width" and self.cfg.nesting_list is not None:
            recons = [self.decode_model(z_bl, stats) for z_bl in self.level_codes(pre_bl)]
            return LevelOutput(pre_bl, recons, None, None, None)
        limit = self.n_latents // 32 if sparse_decode_max_k is None else sparse_decode_max_k
        top = self._top_codes(pre_bl)
        recons: list[Tensor] = []
        values_bk = indices_bk = full_bl = None
        if top is not None:
            values_bk, indices_bk = top
            partial = [k for k in self._topk_ks() if k < self.n_latents]
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
    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.dtype

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def _model_inputs(self, x_bd: Tensor) -> tuple[Tensor, NormStats | None]:
        """Checked, cast to the SAE's dtype (as SAELens casts), preprocessed; with norm stats."""
        self._check_inputs(x_bd)
        xm_bd = self.preprocess(x_bd.to(self.dtype))
        return xm_bd, self.normalization_stats(xm_bd)

    def to_model_space(self, x_bd: Tensor) -> Tensor:
        """CLIP-space inputs [b, n_inputs] -> the space the encoder reads and the decoder's
        directions live in: input preprocessing, the SAE's per-sample normalisation (same eps as
        encoding), minus the pre-bias. ``encode`` is ``act(to_model_space(x) @ encoder + b)``."""
        xm_bd, stats = self._model_inputs(x_bd)
        return self.normalize_model(xm_bd, stats) - self.pre_bias

    def encode(self, x_bd: Tensor, topk: int | None = None) -> Tensor:
        """Latents [b, n_latents] of CLIP-space inputs [b, n_inputs], as the checkpoint's own
        library encodes them: with ``cfg.inference == "full"`` (MSAE: reference
        ``SAE.encode(x, topk)[1]``) the activation without TopK selection, soft-capped; with
        ``"topk"`` (SAELens, OpenAI, saev TopK) the k-sparse codes. With ``topk`` only the k
        largest are kept (None, or <= 0 like the reference's -1: keep all)."""
        xm_bd, stats = self._model_inputs(x_bd)
        pre_bl = self.pre_activations_model(xm_bd, stats)
        if self.cfg.inference == "topk":
            z_bl = self.sparse_codes(pre_bl)
        else:
            z_bl = self.cap(self.full_latents(pre_bl, inplace=True))  # pre_bl is not used again
        if topk is not None and 0 < topk < self.n_latents:
            z_bl = keep_topk(z_bl, topk)
        return z_bl

    def encode_full(self, x_bd: Tensor) -> Tensor:
        """The full latents [b, n_latents] (activation without TopK selection, capped) whatever
        ``cfg.inference`` says: what MSAE shows at inference, and a TopK SAE's pre-selection view."""
        xm_bd, stats = self._model_inputs(x_bd)
        return self.cap(self.full_latents(self.pre_activations_model(xm_bd, stats), inplace=True))

    def latent_activations(self, x_bd: Tensor, latent_ids: Sequence[int] | Tensor) -> Tensor:
        """``encode(x_bd)[:, latent_ids]`` [b, m], computing only those latents when the
        activation allows it (no TopK selection at inference)."""
        ids = torch.as_tensor(latent_ids, dtype=torch.long, device=self.device)
        if self.cfg.inference == "topk":
            return self.encode(x_bd)[:, ids]
        pre_bm = self.to_model_space(x_bd) @ self.encoder[:, ids] + self.latent_bias[ids]
        return self.cap(self.full_latents(pre_bm, inplace=True, latent_ids=ids))

    def decode(self, z_bl: Tensor, stats: NormStats | None = None) -> Tensor:
        """Latents [b, n_latents] -> CLIP space [b, n_inputs].

        With ``cfg.input_norm`` the per-sample statistics of the original input are needed to
        undo the normalisation; without ``stats`` the result keeps the normalised scale (zero
        mean, unit std per sample in model space). :meth:`forward` passes them.
        """
        if z_bl.shape[-1] != self.n_latents:
            raise ValueError(f"expected latents of width {self.n_latents}, got {tuple(z_bl.shape)}")
        return self.postprocess(self.decode_model(z_bl.to(self.dtype), stats))

    def forward(self, x_bd: Tensor, topk: int | None = None) -> SAEOutput:
        """Encode and decode (reference wrapper ``forward``), plus the model's sparse codes."""
        xm_bd, stats = self._model_inputs(x_bd)
        pre_bl = self.pre_activations_model(xm_bd, stats)
        codes_bl = self.sparse_codes(pre_bl)
        z_bl = codes_bl if self.cfg.inference == "topk" else self.cap(self.full_latents(pre_bl))
        if topk is not None and 0 < topk < self.n_latents:
            z_bl = keep_topk(z_bl, topk)
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
        -1 if no level keeps it, and everywhere -1 without a nesting list. With width nesting
        (SAELens Matryoshka) the level is the first width prefix holding the latent."""
        levels_bl = torch.full(z_bl.shape, -1, dtype=torch.int64, device=z_bl.device)
        if self.nesting_list is None:
            return levels_bl
        if self.cfg.nesting_by == "width":  # level j holds latents [widths[j-1], widths[j])
            widths = torch.tensor(self.nesting_list, device=z_bl.device)
            ids_l = torch.arange(self.n_latents, device=z_bl.device)
            level_l = torch.searchsorted(widths, ids_l, right=True)
            return torch.where(z_bl != 0, level_l.expand_as(levels_bl), levels_bl)
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
        if cfg.nesting_list is not None and cfg.nesting_by == "width":
            # width prefixes do not survive an arbitrary selection of latents
            changes.update(nesting_list=None, nesting_by="k")
            if cfg.k is not None:
                changes["k"] = min(cfg.k, n)
        elif cfg.nesting_list is not None:
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
        if "threshold" in tensors:
            tensors["threshold"] = tensors["threshold"][ids]
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
            device=self.device,
            dtype=self.dtype,
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


def _check_weight(name: str, tensor: object, shape: tuple[int, ...], cfg: SAEConfig) -> None:
    """ValueError unless ``tensor`` is a finite float tensor of ``shape`` (checked in blocks, so a
    large matrix costs no full-size temporary)."""
    if not isinstance(tensor, Tensor):
        raise ValueError(f"weight {name!r} is a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != shape:
        raise ValueError(
            f"weight {name!r} has shape {tuple(tensor.shape)}, expected {shape} "
            f"for n_inputs={cfg.n_inputs}, n_latents={cfg.n_latents}"
        )
    if not tensor.is_floating_point():
        raise ValueError(f"weight {name!r} has dtype {tensor.dtype}, expected a float type")
    flat = tensor.reshape(-1) if tensor.is_contiguous() else tensor.t().reshape(-1)
    block = 1 << 20
    for start in range(0, flat.numel(), block):
        if not torch.isfinite(flat[start : start + block]).all():
            raise ValueError(f"weight {name!r} contains NaN or infinite values")


def keep_topk(z_bl: Tensor, k: int) -> Tensor:
    """Zero all but the k largest values per row."""
    values, indices = z_bl.topk(k, dim=-1)
    return torch.zeros_like(z_bl).scatter(-1, indices, values)


class OvercompleteView(nn.Module):
    """The ``overcomplete`` SAE API on top of an :class:`SAE` (CLIP space in and out).

    ``encode`` returns ``(pre_codes, codes)``: the pre-activations and the model's sparse codes
    (TopK with k, the largest Matryoshka level, the ReLU or JumpReLU), as overcomplete's
    ``TopKSAE`` does; ``forward`` returns ``(pre_codes, codes, x_hat)``. overcomplete decodes with
    ``z @ get_dictionary()``; this SAE also adds its decoded biases, so here
    ``decode(z) == z @ get_dictionary() + bias`` for every SAE (``bias == decode(0)``).
    """

    def __init__(self, sae: SAE) -> None:
        super().__init__()
        self.sae = sae

    @property
    def nb_concepts(self) -> int:
        return self.sae.n_latents

    @property
    def input_shape(self) -> int:
        return self.sae.n_inputs

    @property
    def top_k(self) -> int | None:
        """Latents kept per input by a TopK SAE (its largest level); None for ReLU/JumpReLU."""
        ks = self.sae._topk_ks()
        return ks[-1] if ks else None

    @property
    def device(self) -> torch.device:
        return self.sae.device

    def encode(self, x_bd: Tensor) -> OvercompleteEncoding:
        xm_bd, stats = self.sae._model_inputs(x_bd)
        pre_bl = self.sae.pre_activations_model(xm_bd, stats)
        return OvercompleteEncoding(pre_bl, self.sae.sparse_codes(pre_bl))

    def decode(self, z_bl: Tensor) -> Tensor:
        return self.sae.decode(z_bl)

    def forward(self, x_bd: Tensor) -> OvercompleteOutput:
        xm_bd, stats = self.sae._model_inputs(x_bd)
        pre_bl = self.sae.pre_activations_model(xm_bd, stats)
        codes_bl = self.sae.sparse_codes(pre_bl)
        return OvercompleteOutput(pre_bl, codes_bl, self.sae.decode(codes_bl, stats))

    def get_dictionary(self) -> Tensor:
        """Concept directions [nb_concepts, n_inputs] in the input space: ``decode``'s matrix."""
        return self.sae.W_dec.detach() / self.sae.cfg.scaling_factor

    @property
    def bias(self) -> Tensor:
        """What ``decode`` adds to ``z @ get_dictionary()``: ``pre_bias / scaling_factor + mean``."""
        return self.sae.postprocess(self.sae.pre_bias.detach())
