"""Heatmaps from the vision tower's own patch tokens (the ``tokens`` method of
:mod:`sae_explorer.attribution`).

A ViT that average-pools (open_clip ``pool_type="avg"``) embeds an image as
``mean_t(ln_post(token_t)) @ proj``: a sum over its last layer's patch tokens. An SAE latent's
pre-activation reads that embedding through an affine map (``to_model_space`` then one encoder
column), so it splits over the tokens: token ``t`` contributes ``grad . u_t / n`` where ``u_t``
is its projected token and ``grad`` the pre-activation's gradient at the pooled embedding (exact
for the affine encoders here, a first-order split otherwise). A token's heat is its contribution
minus what the same position contributes on a blank (mean-colour) image, positive part: the
evidence the patch's content adds, not the position embedding's constant share.

One forward pass gives a map at the tower's patch resolution (a 4x4 grid for the built-in
world). ``shift`` refines it: the image is also seen translated by every multiple of ``shift``
pixels within a patch (edges repeated into the gap), each token map is put back where its
pixels came from, and the maps are averaged: a pixel's heat then mixes the patches that held it
at ``(patch / shift)^2`` alignments, all in one batched pass.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

PreActivation = Callable[[torch.Tensor], torch.Tensor]
"""Pooled embeddings ``[b, d]`` -> the chosen latents' pre-activations ``[b, m]``."""
TokenEmbed = Callable[[torch.Tensor], torch.Tensor]
"""Preprocessed pixels ``[b, 3, H, W]`` -> projected patch tokens ``[b, n, d]`` (their mean is
the pooled embedding), row-major over the ``g x g`` patch grid."""


def vit_tokens(model: torch.nn.Module, input_dtype: torch.dtype) -> TokenEmbed:
    """The projected patch tokens of an open_clip ViT that average-pools them; ``ValueError``
    naming the tower's pooling for any other (a class-token or attention pool does not split
    over the patches)."""
    visual = getattr(model, "visual", None)
    pool = getattr(visual, "pool_type", None)
    if (
        pool != "avg"
        or getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "final_ln_after_pool", True)
    ):
        raise ValueError(
            "the tokens method needs a ViT that averages its patch tokens (open_clip "
            f"pool_type 'avg', layer norm before pooling); this tower pools with {pool!r}: "
            "use occlusion, rise or gradient"
        )

    def tokens(pixels_b3hw: torch.Tensor) -> torch.Tensor:
        x = visual.transformer(visual._embeds(pixels_b3hw.to(input_dtype)))
        u_bnd = visual.ln_post(x)[:, 1:]
        return (u_bnd @ visual.proj if visual.proj is not None else u_bnd).float()

    return tokens


def token_contributions(
    tokens: TokenEmbed, pre_activation: PreActivation, pixels_b3hw: torch.Tensor
) -> torch.Tensor:
    """``[b, m, n]``: each patch token's share of each latent's pre-activation (see the module
    docstring); over the tokens they sum to ``pre(pooled) - pre(0)`` for an affine encoder."""
    with torch.no_grad():
        u_bnd = tokens(pixels_b3hw)
    pooled_bd = u_bnd.mean(1).detach().requires_grad_(True)
    with torch.enable_grad():
        pre_bm = pre_activation(pooled_bd)
        grads = [
            torch.autograd.grad(pre_bm[:, m].sum(), pooled_bd, retain_graph=True)[0]
            for m in range(pre_bm.shape[1])
        ]
    grad_bmd = torch.stack(grads, 1)
    return torch.einsum("bmd,bnd->bmn", grad_bmd, u_bnd) / u_bnd.shape[1]


def shifted_views(patch: int, shift: int) -> list[tuple[int, int]]:
    """The ``(dy, dx)`` translations seen: multiples of ``shift`` within a patch, centred on 0
    (``shift == patch``: the image as it is)."""
    if not 1 <= shift <= patch:
        raise ValueError(f"token shift {shift} must be between 1 and the patch size {patch}")
    centre = (patch // 2) // shift * shift
    offsets = [o - centre for o in range(0, patch, shift)]
    return [(dy, dx) for dy in offsets for dx in offsets]


def translate(pixels_13hw: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The image moved ``dy`` down and ``dx`` right, its edge pixels repeated into the gap."""
    _, _, h, w = pixels_13hw.shape
    pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
    padded = F.pad(pixels_13hw, pad, mode="replicate")
    top, left = max(-dy, 0), max(-dx, 0)
    return padded[:, :, top : top + h, left : left + w]


def token_maps(
    tokens: TokenEmbed,
    pre_activation: PreActivation,
    pixels_13hw: torch.Tensor,
    patch: int,
    shift: int,
    batch_size: int,
) -> torch.Tensor:
    """``[m, H, W]``: token heat (contribution over a blank image's, positive part) averaged over
    the shifted views, each put back where its pixels came from."""
    _, _, h, w = pixels_13hw.shape
    if h % patch or w % patch:
        raise ValueError(f"the {h}x{w} image does not split into {patch}-pixel patches")
    views = shifted_views(patch, shift)
    blank_13hw = torch.zeros_like(pixels_13hw)  # the preprocessing's mean colour
    blank_1mn = token_contributions(tokens, pre_activation, blank_13hw)
    heat_mhw = count_hw = None
    for start in range(0, len(views), batch_size):
        chunk = views[start : start + batch_size]
        batch = torch.cat([translate(pixels_13hw, dy, dx) for dy, dx in chunk])
        heat_bmn = (token_contributions(tokens, pre_activation, batch) - blank_1mn).clamp_min(0)
        grid_bmhw = heat_bmn.reshape(*heat_bmn.shape[:2], h // patch, w // patch)
        pixels_bmhw = grid_bmhw.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        for b, (dy, dx) in enumerate(chunk):
            back_mhw, seen_hw = untranslate(pixels_bmhw[b], dy, dx)
            heat_mhw = back_mhw if heat_mhw is None else heat_mhw + back_mhw
            count_hw = seen_hw if count_hw is None else count_hw + seen_hw
    return heat_mhw / count_hw.clamp_min(1)


def untranslate(map_mhw: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A map of the translated image moved back onto the original's pixels, with a mask of the
    pixels it saw (those pushed out of the frame get nothing)."""
    _, h, w = map_mhw.shape
    back_mhw = torch.zeros_like(map_mhw)
    seen_hw = torch.zeros(h, w, device=map_mhw.device)
    ys, xs = slice(max(-dy, 0), h - max(dy, 0)), slice(max(-dx, 0), w - max(dx, 0))
    src_y, src_x = slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))
    back_mhw[:, ys, xs] = map_mhw[:, src_y, src_x]
    seen_hw[ys, xs] = 1
    return back_mhw, seen_hw
