"""Steering: edit an input's SAE latents and map the edit back into CLIP space.

The steered embedding keeps the SAE's reconstruction error: ``x' = x + decode(z') - decode(z)``.
With no edits ``x' == x`` exactly, so every change a user sees comes from the edited latents and
not from the SAE's imperfect reconstruction. Everything here is gradio-free tensor math.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from sae_explorer.sae import SAE

EditOp = Literal["set", "scale", "zero"]
OPS: tuple[EditOp, ...] = ("set", "scale", "zero")
MAX_ABS_VALUE = 1e4
"""Largest |value| an edit may carry (a set value or a scale factor); beyond it the decoded
embedding is dominated by one direction and nothing about the input is left to measure."""
CLIP_LOGIT_SCALE = 100.0
"""OpenAI CLIP's learned logit scale (its maximum); zero-shot scores use softmax(scale * cos)."""


class Edit(NamedTuple):
    """One latent edit: ``set`` to ``value``, ``scale`` by ``value``, or ``zero``."""

    latent_id: int
    op: EditOp
    value: float = 0.0


class SteerOutput(NamedTuple):
    x_steered_d: Tensor  # [n_inputs] CLIP space
    z_before_l: Tensor  # [n_latents] latents of the input
    z_after_l: Tensor  # [n_latents] after the edits


def check_edit(edit: Edit, n_latents: int) -> Edit:
    """Validate one edit (ids in range, finite bounded values); ``ValueError`` says what is allowed."""
    latent_id, op, value = edit
    if isinstance(latent_id, float) and (
        not math.isfinite(latent_id) or latent_id != int(latent_id)
    ):
        raise ValueError(f"latent id must be a whole number in [0, {n_latents}), got {latent_id}")
    latent_id = int(latent_id)
    if not 0 <= latent_id < n_latents:
        raise ValueError(f"latent {latent_id} does not exist; ids run from 0 to {n_latents - 1}")
    if op not in OPS:
        raise ValueError(f"unknown edit {op!r}; choose one of {OPS}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"the strength for latent {latent_id} must be a finite number, got {value}"
        )
    if abs(value) > MAX_ABS_VALUE:
        raise ValueError(
            f"the strength {value:g} for latent {latent_id} is too large; allowed is "
            f"-{MAX_ABS_VALUE:g} to {MAX_ABS_VALUE:g}"
        )
    return Edit(latent_id, op, 0.0 if op == "zero" else value)


def apply_edits(z_l: Tensor, edits: Sequence[Edit]) -> Tensor:
    """A copy of the latents ``z_l`` [n_latents] with the edits applied in order."""
    z_l = z_l.clone()
    for edit in edits:
        latent_id, op, value = check_edit(edit, z_l.shape[-1])
        if op == "set":
            z_l[latent_id] = value
        elif op == "scale":
            z_l[latent_id] = z_l[latent_id] * value
        else:
            z_l[latent_id] = 0.0
    return z_l


@torch.inference_mode()
def latents(sae: SAE, x_bd: Tensor) -> Tensor:
    """The latents [b, n_latents] the explorer shows and edits: the SAE's full activations
    (MSAE's inference-time ``encode(x, -1)``), the same ones the activation index stores."""
    return sae.encode(x_bd)


@torch.inference_mode()
def decode_delta(sae: SAE, x_bd: Tensor, z_before_bl: Tensor, z_after_bl: Tensor) -> Tensor:
    """``x + decode(z_after) - decode(z_before)`` [b, n_inputs], with ``x``'s normalisation stats
    (a single ``x`` [1, n_inputs] broadcasts over a batch of edited latents)."""
    stats = sae.normalization_stats(sae.preprocess(x_bd))
    return x_bd + sae.decode(z_after_bl, stats) - sae.decode(z_before_bl, stats)


@torch.inference_mode()
def steer(sae: SAE, x_d: Tensor, edits: Sequence[Edit]) -> SteerOutput:
    """Apply ``edits`` to the latents of one input ``x_d`` [n_inputs] and decode the result."""
    x_1d = x_d.reshape(1, -1).float()
    z_1l = latents(sae, x_1d)
    z_after_1l = apply_edits(z_1l[0], edits)[None]
    x_steered_1d = decode_delta(sae, x_1d, z_1l, z_after_1l)
    return SteerOutput(x_steered_1d[0], z_1l[0], z_after_1l[0])


def zero_shot(
    x_bd: Tensor,
    labels_nd: Tensor,
    logit_scale: float = CLIP_LOGIT_SCALE,
    group_sizes: Sequence[int] | None = None,
) -> Tensor:
    """Zero-shot probabilities [b, n_labels]: softmax of scaled cosine to each label embedding,
    one softmax per group of consecutive labels (``group_sizes``; default one group)."""
    x_bd = torch.nn.functional.normalize(x_bd.float(), dim=-1)
    labels_nd = torch.nn.functional.normalize(labels_nd.float(), dim=-1)
    logits_bn = logit_scale * x_bd @ labels_nd.T
    sizes = [labels_nd.shape[0]] if group_sizes is None else list(group_sizes)
    assert sum(sizes) == labels_nd.shape[0], "group sizes must cover every label"
    return torch.cat([part.softmax(dim=-1) for part in logits_bn.split(sizes, dim=-1)], dim=-1)


@torch.inference_mode()
def strength_sweep(sae: SAE, x_d: Tensor, latent_id: int, values: Sequence[float]) -> Tensor:
    """Steered embeddings [len(values), n_inputs] with latent ``latent_id`` set to each value."""
    x_1d = x_d.reshape(1, -1).float()
    z_1l = latents(sae, x_1d)
    z_vl = z_1l.repeat(len(values), 1)
    for i, value in enumerate(values):
        z_vl[i] = apply_edits(z_1l[0], [Edit(latent_id, "set", float(value))])
    return decode_delta(sae, x_1d, z_1l, z_vl)
