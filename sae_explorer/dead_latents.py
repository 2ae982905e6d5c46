"""Dead and dense latents during SAE training: tracking, the AuxK loss, and resampling.

- :class:`LatentActivity` counts, per latent, the steps since it was last active in the model's
  sparse code (the last level's code: what the reconstruction uses, so a latent never in it gets
  no gradient from the main loss) and how many samples it fired on since the last resampling.
- :func:`auxk_loss` is the auxiliary loss of Gao et al., "Scaling and evaluating sparse
  autoencoders" (2024): the ``aux_k`` largest pre-activations among the dead latents (ReLU'd)
  reconstruct the main reconstruction's residual; the loss is that reconstruction's MSE divided
  by the residual's mean square, so dead latents get a gradient toward what the live ones miss.
- :func:`resample_latents` re-initialises chosen latents (dead, or dense) toward inputs the SAE
  reconstructs worst, in the spirit of Anthropic's "Towards Monosemanticity" resampling: each
  gets the unit direction of a residual drawn with probability proportional to its squared norm
  as decoder row, that direction scaled to a fraction of the live encoder columns' mean norm as
  encoder column, a zero latent bias, and fresh AdamW moments; every other latent is untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sae_explorer.sae import SAE

RESAMPLED_ENCODER_SCALE = 1.0
"""A resampled latent's encoder column norm, as a share of the live columns' mean norm."""


class LatentActivity:
    """Per-latent activity over training steps (device tensors, no gradients)."""

    def __init__(self, n_latents: int, device: torch.device) -> None:
        self.steps_since_active_l = torch.zeros(n_latents, dtype=torch.long, device=device)
        self.fired_l = torch.zeros(n_latents, dtype=torch.long, device=device)
        self.n_samples = 0

    @torch.no_grad()
    def update(self, code_bl: Tensor) -> None:
        """Record one step's sparse codes [b, n_latents] (non-zero = active)."""
        fired_l = (code_bl != 0).sum(0)
        self.fired_l += fired_l
        self.n_samples += code_bl.shape[0]
        self.steps_since_active_l += 1
        self.steps_since_active_l[fired_l > 0] = 0

    def dead_mask(self, dead_steps: int) -> Tensor:
        """Latents not active in the last ``dead_steps`` steps."""
        return self.steps_since_active_l >= dead_steps

    def window_dead_and_dense(self, dense_fraction: float | None) -> Tensor:
        """Latents that never fired since the window began, or (with ``dense_fraction``) fired
        on more than that share of the window's samples."""
        mask_l = self.fired_l == 0
        if dense_fraction is not None and self.n_samples:
            mask_l |= self.fired_l > dense_fraction * self.n_samples
        return mask_l

    def start_window(self) -> None:
        self.fired_l.zero_()
        self.n_samples = 0


def auxk_loss(
    sae: SAE, xm_bd: Tensor, recon_bd: Tensor, pre_bl: Tensor, dead_l: Tensor, aux_k: int
) -> Tensor:
    """Normalised MSE with which the top ``aux_k`` dead latents reconstruct the residual
    ``xm_bd - recon_bd`` (model space, detached); 0 when no latent is dead."""
    n_dead = int(dead_l.sum())
    if n_dead == 0:
        return pre_bl.new_zeros(())
    residual_bd = (xm_bd - recon_bd).detach()
    masked_bl = pre_bl.masked_fill(~dead_l, float("-inf"))
    values_bk, indices_bk = masked_bl.topk(min(aux_k, n_dead), dim=-1)
    z_bl = torch.zeros_like(pre_bl).scatter(-1, indices_bk, torch.relu(values_bk))
    aux_bd = z_bl @ sae.W_dec
    stats = sae.normalization_stats(xm_bd)
    if stats is not None:
        aux_bd = aux_bd * stats.std_b1
    scale = residual_bd.pow(2).mean().clamp_min(torch.finfo(residual_bd.dtype).tiny)
    return (aux_bd - residual_bd).pow(2).mean() / scale


@torch.no_grad()
def resample_latents(
    sae: SAE,
    optimizer: torch.optim.Optimizer,
    mask_l: Tensor,
    xm_bd: Tensor,
    generator: torch.Generator,
) -> int:
    """Re-initialise the latents in ``mask_l`` from the residuals of model-space batch ``xm_bd``;
    returns how many were resampled. Other latents' weights and optimiser state are untouched."""
    ids = torch.nonzero(mask_l).flatten()
    if len(ids) == 0:
        return 0
    out = sae.level_forward(xm_bd)
    residual_bd = xm_bd - out.recons[-1]
    weight_b = residual_bd.pow(2).sum(-1).cpu().double()
    if not weight_b.sum() > 0:
        weight_b = torch.ones_like(weight_b)
    rows = torch.multinomial(weight_b, len(ids), replacement=True, generator=generator)
    direction_kd = residual_bd[rows.to(residual_bd.device)]
    direction_kd = direction_kd / direction_kd.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if sae.decoder is None:  # tied: the encoder column is the decoder row
        sae.encoder[:, ids] = direction_kd.t()
    else:
        live_l = ~mask_l
        column_norm = sae.encoder.norm(dim=0)[live_l].mean() if live_l.any() else 1.0
        sae.decoder[ids] = direction_kd
        sae.encoder[:, ids] = direction_kd.t() * (RESAMPLED_ENCODER_SCALE * column_norm)
    sae.latent_bias[ids] = 0.0
    _reset_moments(sae, optimizer, ids)
    return len(ids)


def _reset_moments(sae: SAE, optimizer: torch.optim.Optimizer, ids: Tensor) -> None:
    """Zero the optimiser's running moments of latents ``ids`` (AdamW's exp_avg, exp_avg_sq)."""
    latent_dim = {id(sae.encoder): 1, id(sae.latent_bias): 0}
    if sae.decoder is not None:
        latent_dim[id(sae.decoder)] = 0
    for group in optimizer.param_groups:
        for param in group["params"]:
            dim = latent_dim.get(id(param))
            if dim is None:
                continue
            for moment in optimizer.state.get(param, {}).values():
                if isinstance(moment, Tensor) and moment.shape == param.shape:
                    moment.index_fill_(dim, ids, 0.0)
