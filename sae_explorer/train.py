"""Train Matryoshka (MSAE recipe), TopK or ReLU SAEs on an array of embeddings.

Recipe (MSAE): inputs are optionally mean-centred and scaled by one factor so their mean L2 norm
is ``sqrt(n_inputs)`` (stored as the SAE's ``scaling_factor``; ``sqrt(n_inputs)`` is recorded as
``msae_target_norm``). A Matryoshka SAE has one TopK per level of a nesting list doubling from
``k`` up to ``n_latents``; the loss is the importance-weighted mean (RW: ``L, ..., 1``; UW:
uniform) of the per-level mean squared errors in model space. Decoder rows stay unit-norm: the
gradient component parallel to each row is projected out before the AdamW step and the rows are
renormalised after it (encoder columns and latent biases rescaled to keep the function).
Gradients are clipped by global norm. A ReLU SAE adds ``l1_coefficient * mean_b sum_l |z|``.
Dead latents (never in the last level's code for ``dead_steps`` steps) can get Gao et al.'s AuxK
loss (``aux_loss="auxk"``), and dead (or dense) latents can be resampled toward badly
reconstructed inputs every ``resample_every`` steps (``resample``); see
:mod:`sae_explorer.dead_latents`.

Held-out metrics (input space, the model's own sparse code of its last level): FVU, mean cosine
between input and reconstruction, L0, and dead latents (full latents never active on the held-out
split); FVU and cosine per level for Matryoshka SAEs.

CLI: ``python -m sae_explorer train --data X.npy --out DIR [options]`` (``.npy`` is memory-mapped).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch
from torch import Tensor

from sae_explorer.cli import add_dataclass_args, dataclass_from_args, doc
from sae_explorer.dead_latents import LatentActivity, auxk_loss, resample_latents
from sae_explorer.progress import Progress
from sae_explorer.sae import (
    ACTIVATIONS,
    SAE,
    WEIGHTINGS,
    InputStats,
    SAEConfig,
    relative_importance,
)

ARCHITECTURES = ("matryoshka", "topk", "relu")
AuxLoss = Literal["none", "auxk"]
AUX_LOSSES: tuple[str, ...] = get_args(AuxLoss)
Resample = Literal["none", "dead", "dead_and_dense"]
RESAMPLES: tuple[str, ...] = get_args(Resample)
TrainingModality = Literal["image", "text", "both"]
TRAINING_MODALITIES: tuple[str, ...] = get_args(TrainingModality)
CHUNK_ROWS = 65_536  # rows per chunk for statistics over (memory-mapped) data


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; the field help texts are also the CLI help."""

    n_latents: int = field(default=4096, metadata=doc("number of latents"))
    architecture: str = field(default="matryoshka", metadata=doc(f"one of {ARCHITECTURES}"))
    k: int = field(
        default=32, metadata=doc("TopK k; for matryoshka the first level of the doubling list")
    )
    weighting: str = field(default="RW", metadata=doc("Matryoshka level weights: RW or UW"))
    activation: str = field(
        default="TopKReLU", metadata=doc("TopK activation for topk/matryoshka (MSAE names)")
    )
    l1_coefficient: float = field(default=1e-3, metadata=doc("L1 penalty of a ReLU SAE"))
    epochs: float = field(default=1.0, metadata=doc("passes over the training split"))
    batch_size: int = field(default=4096, metadata=doc("samples per step"))
    lr: float = field(default=5e-4, metadata=doc("AdamW learning rate"))
    weight_decay: float = field(default=0.0, metadata=doc("AdamW weight decay"))
    warmup_fraction: float = field(default=0.05, metadata=doc("linear LR warm-up share"))
    max_grad_norm: float = field(default=1.0, metadata=doc("gradient clipping (global norm)"))
    mean_center: bool = field(default=True, metadata=doc("subtract the training-data mean"))
    scale_norm: bool = field(
        default=True, metadata=doc("scale inputs so their mean L2 norm is sqrt(n_inputs)")
    )
    normalize: bool = field(default=False, metadata=doc("per-sample normalisation in the SAE"))
    tied: bool = field(default=False, metadata=doc("tie decoder to the encoder transpose"))
    soft_cap: float = field(default=0.0, metadata=doc("latent soft cap (0 = off)"))
    aux_loss: AuxLoss = field(
        default="none",
        metadata=doc(
            f"auxiliary loss for dead latents, one of {AUX_LOSSES}: auxk (Gao et al. 2024) makes "
            "the top aux_k dead latents reconstruct the residual"
        ),
    )
    aux_k: int = field(default=0, metadata=doc("latents in the AuxK term (0: n_inputs // 2)"))
    aux_coefficient: float = field(default=1 / 32, metadata=doc("weight of the AuxK term"))
    dead_steps: int = field(
        default=50, metadata=doc("a latent not active for this many steps is dead (AuxK)")
    )
    resample: Resample = field(
        default="none",
        metadata=doc(
            f"re-initialise latents every resample_every steps, one of {RESAMPLES}: those that "
            "never fired in the window, and with dead_and_dense also those that fired on more "
            "than dense_fraction of its samples"
        ),
    )
    resample_every: int = field(default=200, metadata=doc("steps between resamplings"))
    resample_until: float = field(
        default=0.5, metadata=doc("share of the steps after which resampling stops")
    )
    dense_fraction: float = field(
        default=0.5, metadata=doc("dead_and_dense: a latent firing on more than this is dense")
    )
    val_fraction: float = field(default=0.05, metadata=doc("held-out share for metrics"))
    seed: int = field(default=0, metadata=doc("random seed (init, split, shuffling)"))
    device: str | None = field(default=None, metadata=doc("torch device (default: cuda if any)"))
    num_threads: int | None = field(
        default=None,
        metadata=doc("CPU threads while training (default: torch's; 1 is fastest for tiny SAEs)"),
    )
    clip_model: str | None = field(
        default=None, metadata=doc("CLIP model id the embeddings came from (provenance)")
    )
    training_modality: TrainingModality | None = field(
        default=None,
        metadata=doc(
            f"what the embeddings are, one of {TRAINING_MODALITIES} (provenance; the explorer "
            "encodes another modality with that modality's own statistics)"
        ),
    )

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose one of {ARCHITECTURES}"
            )
        if self.architecture != "relu" and (
            self.activation not in ACTIVATIONS or not ACTIVATIONS[self.activation].top_k
        ):
            topk_names = sorted(a for a, spec in ACTIVATIONS.items() if spec.top_k)
            raise ValueError(f"activation {self.activation!r} is not a TopK one: {topk_names}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}; choose one of {WEIGHTINGS}")
        if not 1 <= self.k <= self.n_latents:
            raise ValueError(f"k must be in [1, n_latents={self.n_latents}], got {self.k}")
        for name in ("epochs", "batch_size", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        self._check_dead_latent_options()
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.training_modality not in (None, *TRAINING_MODALITIES):
            raise ValueError(
                f"unknown training_modality {self.training_modality!r}; choose one of "
                f"{TRAINING_MODALITIES} or leave it unset"
            )

    def _check_dead_latent_options(self) -> None:
        if self.aux_loss not in AUX_LOSSES:
            raise ValueError(f"unknown aux_loss {self.aux_loss!r}; choose one of {AUX_LOSSES}")
        if self.resample not in RESAMPLES:
            raise ValueError(f"unknown resample {self.resample!r}; choose one of {RESAMPLES}")
        if not 0 <= self.aux_k <= self.n_latents:
            raise ValueError(f"aux_k must be in [0, n_latents={self.n_latents}], got {self.aux_k}")
        if not self.aux_coefficient >= 0:
            raise ValueError(f"aux_coefficient must be >= 0, got {self.aux_coefficient}")
        for name in ("dead_steps", "resample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.dense_fraction <= 1:
            raise ValueError(f"dense_fraction must be in (0, 1], got {self.dense_fraction}")
        if not 0 <= self.resample_until <= 1:
            raise ValueError(f"resample_until must be in [0, 1], got {self.resample_until}")

    def sae_config(self, n_inputs: int, scaling_factor: float) -> SAEConfig:
        common = dict(
            tied=self.tied,
            input_norm="layer_norm" if self.normalize else "none",
            soft_cap=self.soft_cap,
            scaling_factor=scaling_factor,
        )
        if self.architecture == "matryoshka":
            return SAEConfig.matryoshka(
                n_inputs,
                self.n_latents,
                self.k,
                self.weighting,
                activation=self.activation,
                **common,
            )
        if self.architecture == "topk":
            return SAEConfig(n_inputs, self.n_latents, self.activation, k=self.k, **common)
        return SAEConfig(n_inputs, self.n_latents, "ReLU", **common)


class TrainResult(NamedTuple):
    sae: SAE
    metrics: dict


class DataStats(NamedTuple):
    mean_d: Tensor
    scaling_factor: float
    data_hash: str


# ---------------------------------------------------------------------- data
def _as_array(x_nd: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x_nd, Tensor):
        x_nd = x_nd.detach().cpu().numpy()
    if not isinstance(x_nd, np.ndarray) or x_nd.ndim != 2:
        raise ValueError(
            f"training data must be a 2-d array [n, n_inputs], got {getattr(x_nd, 'shape', type(x_nd))}"
        )
    if not np.issubdtype(x_nd.dtype, np.floating):
        raise ValueError(f"training data must be floating point, got {x_nd.dtype}")
    if x_nd.shape[0] < 2:
        raise ValueError(f"need at least 2 training rows, got {x_nd.shape[0]}")
    return x_nd


def _rows(x_nd: np.ndarray, idx: np.ndarray) -> Tensor:
    """Rows ``idx`` as float32 (sorted reads are friendly to memory-mapped files)."""
    return torch.from_numpy(np.ascontiguousarray(x_nd[np.sort(idx)], dtype=np.float32))


def data_stats(x_nd: np.ndarray, train_idx: np.ndarray, cfg: TrainConfig) -> DataStats:
    """Mean, scaling factor and a content hash, in chunks (never the whole array in memory)."""
    digest = hashlib.sha256(f"{x_nd.shape}|{x_nd.dtype}".encode())
    for start in range(0, x_nd.shape[0], CHUNK_ROWS):
        chunk = np.ascontiguousarray(x_nd[start : start + CHUNK_ROWS])
        if not np.isfinite(chunk).all():
            bad = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=1))[0])
            raise ValueError(f"training data contains NaN/inf (first at row {bad})")
        digest.update(chunk.tobytes())
    stats = msae_input_stats(x_nd, train_idx, cfg.mean_center, cfg.scale_norm)
    return DataStats(stats.mean_d, stats.scaling_factor, digest.hexdigest())


def msae_input_stats(
    x_nd: np.ndarray, idx: np.ndarray, mean_center: bool = True, scale_norm: bool = True
) -> InputStats:
    """MSAE's input statistics of rows ``idx`` of ``x_nd``: their mean (zeros unless
    ``mean_center``) and the factor that makes the mean L2 norm of the centred rows
    ``sqrt(n_inputs)`` (1 unless ``scale_norm``). Read in chunks, as float32 rows summed in
    float64; also what the explorer computes for a modality the SAE was not trained on."""
    if len(idx) == 0:
        raise ValueError("no rows to compute input statistics from")
    total = np.zeros(x_nd.shape[1], dtype=np.float64)
    idx_sorted = np.sort(idx)
    for start in range(0, len(idx_sorted), CHUNK_ROWS):
        total += _rows(x_nd, idx_sorted[start : start + CHUNK_ROWS]).double().sum(0).numpy()
    mean_d = torch.from_numpy(total / len(idx_sorted)).float()
    if not mean_center:
        mean_d = torch.zeros_like(mean_d)
    scaling = 1.0
    if scale_norm:
        norm_sum = 0.0
        for start in range(0, len(idx_sorted), CHUNK_ROWS):
            rows = _rows(x_nd, idx_sorted[start : start + CHUNK_ROWS]) - mean_d
            norm_sum += float(rows.norm(dim=-1).double().sum())
        mean_norm = norm_sum / len(idx_sorted)
        if mean_norm <= 0:
            raise ValueError("the data has zero norm after centring: every row equals the mean")
        scaling = math.sqrt(x_nd.shape[1]) / mean_norm
    return InputStats(mean_d, scaling)


# ---------------------------------------------------------------------- optimisation steps
@torch.no_grad()
def project_decoder_grads(sae: SAE) -> None:
    """Remove the gradient component parallel to each decoder row (keeps norms fixed to 1st order)."""
    if sae.decoder is None:
        w_ld, g_ld = sae.encoder.data.t(), sae.encoder.grad.t()
    else:
        w_ld, g_ld = sae.decoder.data, sae.decoder.grad
    g_ld -= (g_ld * w_ld).sum(-1, keepdim=True) * w_ld  # in place: also updates the tied grad


@torch.no_grad()
def renormalize_decoder(sae: SAE) -> None:
    """Scale decoder rows to unit norm, rescaling encoder columns/latent biases to compensate.

    Untied SAEs keep their function exactly. A tied SAE has one matrix for both directions, so
    no rescaling can compensate; it is treated as MSAE's ``scale_to_unit_norm`` treats it (rows
    normalised, latent bias multiplied by the old norm), and training corrects the rest."""
    eps = torch.finfo(sae.encoder.dtype).eps
    if sae.decoder is None:
        norm_l = sae.encoder.data.norm(dim=0) + eps
        sae.encoder.data /= norm_l
    else:
        norm_l = sae.decoder.data.norm(dim=-1) + eps
        sae.decoder.data /= norm_l[:, None]
        sae.encoder.data *= norm_l
    sae.latent_bias.data *= norm_l


def level_losses(sae: SAE, xm_bd: Tensor) -> tuple[Tensor, Tensor]:
    """(per-level MSE [n_levels], full latents or sparse codes for the L1 term)."""
    out = sae.level_forward(xm_bd)
    mse = torch.stack([(recon - xm_bd).pow(2).mean() for recon in out.recons])
    return mse, out.full_bl if out.full_bl is not None else out.top_values_bk


def _level_weights(sae_cfg: SAEConfig, device: torch.device) -> Tensor:
    weights = sae_cfg.relative_importance or relative_importance("UW", len(sae_cfg.levels))
    w = torch.tensor(weights, dtype=torch.float32, device=device)
    return w / w.sum()


# ---------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(sae: SAE, x_nd: np.ndarray, idx: np.ndarray, batch_size: int = 4096) -> dict:
    """Held-out metrics in input space for each level: FVU, cosine; plus L0 of the model's sparse
    code (``l0``) and of the full latents (``l0_full``), and latents never active (``dead``)."""
    device = sae.encoder.device
    n_levels = len(sae.cfg.levels)
    sq_err = np.zeros(n_levels)
    cos_sum = np.zeros(n_levels)
    sum_x = np.zeros(sae.n_inputs)
    sum_x2 = 0.0
    l0_sum = l0_full_sum = 0.0
    active_l = torch.zeros(sae.n_latents, dtype=torch.bool, device=device)
    for start in range(0, len(idx), batch_size):
        x_bd = _rows(x_nd, idx[start : start + batch_size]).to(device)
        out = sae.level_forward(sae.preprocess(x_bd))
        full_bl = sae.cap(sae.full_latents(out.pre_bl))
        code_bl = full_bl if out.full_bl is not None else sae.sparse_codes(out.pre_bl)
        l0_sum += float((code_bl != 0).sum())
        l0_full_sum += float((full_bl != 0).sum())
        active_l |= (full_bl != 0).any(0)
        for i, recon_bd in enumerate(out.recons):
            x_hat_bd = sae.postprocess(recon_bd)
            sq_err[i] += float((x_hat_bd - x_bd).pow(2).sum())
            cos_sum[i] += float(torch.nn.functional.cosine_similarity(x_hat_bd, x_bd, dim=-1).sum())
        sum_x += x_bd.double().sum(0).cpu().numpy()
        sum_x2 += float(x_bd.double().pow(2).sum())
    n = len(idx)
    total_var = sum_x2 - float((sum_x**2).sum()) / n
    levels = [
        {"k": k, "fvu": sq_err[i] / total_var, "cosine": cos_sum[i] / n}
        for i, k in enumerate(sae.cfg.levels)
    ]
    n_dead = int((~active_l).sum())
    return {
        "n_eval": n,
        "fvu": levels[-1]["fvu"],
        "cosine": levels[-1]["cosine"],
        "l0": l0_sum / n,
        "l0_full": l0_full_sum / n,
        "dead_latents": n_dead,
        "dead_fraction": n_dead / sae.n_latents,
        "levels": levels,
    }


# ---------------------------------------------------------------------- training
def train_sae(
    x_nd: np.ndarray | Tensor, cfg: TrainConfig, progress: Progress | None = None
) -> TrainResult:
    """Train an SAE on embeddings ``x_nd`` [n, n_inputs] (array, memmap or tensor).

    Only one batch at a time is on the device. Returns the SAE (CPU, eval mode, provenance set)
    and metrics: held-out ``val`` metrics (see :func:`evaluate`), final training loss, steps,
    wall time and samples/s.
    """
    x_nd = _as_array(x_nd)
    previous_threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(x_nd, cfg, progress)
    finally:
        torch.set_num_threads(previous_threads)


class _Stepper:
    """One optimisation step at a time: losses (with AuxK), the update, the decoder constraint,
    latent activity, and resampling at its steps."""

    def __init__(self, sae: SAE, cfg: TrainConfig, total_steps: int) -> None:
        self.sae, self.cfg, self.total_steps = sae, cfg, total_steps
        device = sae.encoder.device
        self.level_w = _level_weights(sae.cfg, device)
        self.optimizer = torch.optim.AdamW(
            sae.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        warmup = max(1, int(cfg.warmup_fraction * total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup)
        )
        self.activity = LatentActivity(sae.n_latents, device)
        self.aux_k = cfg.aux_k or max(1, sae.n_inputs // 2)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.n_resampled = 0
        self.steps = 0

    def step(self, x_bd: Tensor) -> Tensor:
        """One step on a CLIP-space batch; returns the (main + auxiliary) loss."""
        sae, cfg = self.sae, self.cfg
        xm_bd = sae.preprocess(x_bd)
        out = sae.level_forward(xm_bd)
        mse_levels = torch.stack([(recon - xm_bd).pow(2).mean() for recon in out.recons])
        loss = (mse_levels * self.level_w).sum()
        if cfg.architecture == "relu":
            loss = loss + cfg.l1_coefficient * out.full_bl.abs().sum(-1).mean()
        if cfg.aux_loss == "auxk":
            dead_l = self.activity.dead_mask(cfg.dead_steps)
            aux = auxk_loss(sae, xm_bd, out.recons[-1], out.pre_bl, dead_l, self.aux_k)
            loss = loss + cfg.aux_coefficient * aux
        self.activity.update(sae.sparse_codes(out.pre_bl.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        project_decoder_grads(sae)
        torch.nn.utils.clip_grad_norm_(sae.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        renormalize_decoder(sae)
        self.steps += 1
        if self._resamples_now():
            dense = cfg.dense_fraction if cfg.resample == "dead_and_dense" else None
            mask_l = self.activity.window_dead_and_dense(dense)
            with torch.no_grad():
                self.n_resampled += resample_latents(
                    sae, self.optimizer, mask_l, xm_bd, self.generator
                )
            self.activity.start_window()
        return loss

    def _resamples_now(self) -> bool:
        return (
            self.cfg.resample != "none"
            and self.steps % self.cfg.resample_every == 0
            and self.steps <= self.cfg.resample_until * self.total_steps
        )


def _init_sae(cfg: TrainConfig, n_inputs: int, stats: DataStats, device: torch.device) -> SAE:
    sae = SAE(
        cfg.sae_config(n_inputs, stats.scaling_factor),
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    with torch.no_grad():
        sae.mean.copy_(stats.mean_d)
        # With encoder = decoder^T, summing all ReLU latents gives about (n_latents / 2 n_inputs) x;
        # scale the encoder so a dense (full-latent) level starts near the identity.
        sae.encoder.mul_(min(1.0, 2 * n_inputs / cfg.n_latents))
    return sae.to(device).train()


def _train(x_nd: np.ndarray, cfg: TrainConfig, progress: Progress | None) -> TrainResult:
    n, n_inputs = x_nd.shape
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n)
    n_val = min(n - 1, math.ceil(n * cfg.val_fraction)) if cfg.val_fraction > 0 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]
    stats = data_stats(x_nd, train_idx, cfg)
    sae = _init_sae(cfg, n_inputs, stats, device)
    batch = min(cfg.batch_size, len(train_idx))
    total_steps = max(1, math.ceil(cfg.epochs * math.ceil(len(train_idx) / batch)))
    stepper = _Stepper(sae, cfg, total_steps)

    started = time.perf_counter()
    loss_value = float("nan")
    while stepper.steps < total_steps:
        perm = rng.permutation(train_idx)
        for start in range(0, len(perm), batch):
            if stepper.steps >= total_steps:
                break
            x_bd = _rows(x_nd, perm[start : start + batch]).to(device, non_blocking=True)
            loss = stepper.step(x_bd)
            step = stepper.steps
            if step % 10 == 0 or step == total_steps:
                loss_value = loss.item()
                if progress is not None:
                    progress(step / total_steps, f"step {step}/{total_steps} loss {loss_value:.4f}")
    train_s = time.perf_counter() - started

    sae.eval()
    metrics: dict = {
        "steps": total_steps,
        "epochs": cfg.epochs,
        "n_train": len(train_idx),
        "n_val": n_val,
        "final_loss": loss_value,
        "train_seconds": train_s,
        "samples_per_second": total_steps * batch / train_s,
        "scaling_factor": stats.scaling_factor,
        "device": str(device),
        "dead_at_end": int(stepper.activity.dead_mask(cfg.dead_steps).sum()),
        "resampled": stepper.n_resampled,
    }
    if n_val:
        metrics["val"] = evaluate(sae, x_nd, val_idx, batch)
    return TrainResult(_with_provenance(sae.to("cpu"), cfg, stats, (n, n_inputs), metrics), metrics)


def _with_provenance(
    sae: SAE, cfg: TrainConfig, stats: DataStats, shape: tuple[int, int], metrics: dict
) -> SAE:
    sae.source_format = "trained"
    sae.provenance = {
        "clip_model": cfg.clip_model,
        "training_data_hash": stats.data_hash,
        "training_data_shape": list(shape),
        "msae_target_norm": math.sqrt(shape[1]) if cfg.scale_norm else None,
        "train_config": asdict(cfg),
        "val_metrics": metrics.get("val"),
    }
    if cfg.training_modality is not None:
        sae.provenance["training_modality"] = cfg.training_modality
    return sae


# ---------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer train",
        description="Train a Matryoshka / TopK / ReLU SAE on an .npy array of embeddings and "
        "save it in the project format.",
    )
    parser.add_argument(
        "--data", required=True, type=Path, help=".npy file [n, n_inputs] (memmapped)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    add_dataclass_args(parser, TrainConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m sae_explorer train --data X.npy --out DIR [options]``."""
    from tqdm import tqdm

    from sae_explorer.checkpoints import save_sae

    args = _parser().parse_args(argv)
    try:
        x_nd = np.load(args.data, mmap_mode="r")
        cfg = dataclass_from_args(TrainConfig, args)
    except (OSError, ValueError) as err:
        print(f"error: {err}")
        return 1
    with tqdm(total=1000, desc="training", unit="‰") as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(int(fraction * 1000) - bar.n)
            bar.set_postfix_str(message)

        try:
            result = train_sae(x_nd, cfg, progress)
        except ValueError as err:
            print(f"error: {err}")
            return 1
    out = save_sae(result.sae, args.out)
    m = result.metrics
    print(
        f"trained {result.sae.cfg.architecture} SAE {x_nd.shape[1]} -> {cfg.n_latents} in "
        f"{m['train_seconds']:.1f} s ({m['samples_per_second']:.0f} samples/s, {m['steps']} steps)"
    )
    if "val" in m:
        v = m["val"]
        print(
            f"held-out ({v['n_eval']} rows): FVU {v['fvu']:.4f}  cosine {v['cosine']:.4f}  "
            f"L0 {v['l0']:.1f}  dead latents {v['dead_latents']} ({v['dead_fraction']:.1%})"
        )
        for level in v["levels"][:-1]:
            print(f"  level k={level['k']}: FVU {level['fvu']:.4f}  cosine {level['cosine']:.4f}")
    print(f"saved to {out}")
    return 0
