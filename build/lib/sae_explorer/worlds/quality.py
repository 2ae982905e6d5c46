"""Measured quality of the shapes world's models against its ground truth.

- Zero-shot accuracy of the CLIP per attribute: an image's value is the one whose world captions
  (in-distribution prompts; the text tower never saw "a photo of a red thing") hold the most
  CLIP softmax probability for it.
- For every attribute value, the SAE latent that best detects it ("activation above a threshold"
  against "item has the value"; latent and threshold chosen on training-seed images, F1 measured
  on held-out ones), and that latent's Matryoshka level.
- Reconstruction of held-out embeddings by the SAE: cosine, FVU, L0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from sae_explorer.worlds import shapes


class LatentMatch(NamedTuple):
    attribute: str
    value: str
    latent: int
    f1: float
    precision: float
    recall: float
    level: int  # median Matryoshka level over items where the latent is kept; -1 if never


class Reconstruction(NamedTuple):
    cosine: float  # mean cosine(x, x_hat)
    fvu: float  # fraction of variance unexplained: sum|x - x_hat|^2 / sum|x - mean|^2
    l0: float  # mean number of non-zero latents per item


class CaptionBank(NamedTuple):
    """Unit embeddings of every distinct world caption, with their attributes."""

    t_cd: torch.Tensor  # [n_captions, d]
    attributes: list[dict[str, str]]
    logit_scale: float


def caption_bank(
    encode_texts: Callable[[list[str]], torch.Tensor], logit_scale: float = 100.0
) -> CaptionBank:
    combos = shapes.all_attribute_combinations()
    t_cd = F.normalize(encode_texts([shapes.caption(a) for a in combos]).float(), dim=-1)
    return CaptionBank(t_cd, combos, float(logit_scale))


def zero_shot_accuracy(
    x_nd: torch.Tensor, attributes: Sequence[dict[str, str]], bank: CaptionBank
) -> dict[str, float]:
    """Per attribute, the fraction of images whose predicted value is the true one.

    An image's probability of a value is the CLIP softmax mass (over all world captions) of the
    captions holding that value; the prediction is the most probable value.
    """
    p_nc = torch.softmax(bank.logit_scale * F.normalize(x_nd.float(), dim=-1) @ bank.t_cd.T, dim=1)
    accuracy = {}
    for name, values in shapes.ATTRIBUTES.items():
        onehot_cv = torch.tensor(
            [[a[name] == v for v in values] for a in bank.attributes], dtype=p_nc.dtype
        )
        predicted = (p_nc @ onehot_cv).argmax(dim=1)
        truth = torch.tensor([values.index(a[name]) for a in attributes])
        accuracy[name] = float((predicted == truth).float().mean())
    return accuracy


def _logit_scale(model: torch.nn.Module) -> float:
    scale = getattr(model, "logit_scale", None)
    return float(scale.detach().exp()) if isinstance(scale, torch.Tensor) else 100.0


def eval_transform(model: torch.nn.Module) -> Callable:
    """open_clip's eval transform for ``model`` (PIL -> [3, H, W]), as ``load_encoder`` uses."""
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = PreprocessCfg(**open_clip.get_model_preprocess_cfg(model))
    return image_transform_v2(cfg, is_train=False)


@torch.no_grad()
def zero_shot_accuracy_model(
    model: torch.nn.Module, tokenizer: Callable, n_items: int, seed: int = shapes.HELDOUT_SEED
) -> dict[str, float]:
    """Held-out zero-shot accuracy of a bare open_clip model (used during training)."""
    items = shapes.make_items(n_items, seed)
    preprocess = eval_transform(model)
    pixels_n3hw = torch.stack([preprocess(it.image) for it in items])
    x_nd = torch.cat([model.encode_image(pixels_n3hw[i : i + 256]) for i in range(0, n_items, 256)])
    bank = caption_bank(lambda texts: model.encode_text(tokenizer(texts)), _logit_scale(model))
    accuracy = zero_shot_accuracy(x_nd, [it.attributes for it in items], bank)
    return {k: round(v, 4) for k, v in accuracy.items()}


def zero_shot_accuracy_encoder(
    encoder, n_items: int, seed: int = shapes.HELDOUT_SEED
) -> dict[str, float]:
    """Held-out zero-shot accuracy through the public encoder (``load_encoder``) path."""
    items = shapes.make_items(n_items, seed)
    x_nd = encoder.encode_images([it.image for it in items], batch_size=256)
    bank = caption_bank(encoder.encode_texts, _logit_scale(encoder.model))
    return zero_shot_accuracy(x_nd, [it.attributes for it in items], bank)


def best_thresholds(
    z_nl: torch.Tensor, attributes: Sequence[dict[str, str]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (attribute value, latent): the activation threshold with the best F1, and that F1.

    Returns thresholds and F1s, both [n_values, n_latents] (values in ``ATTRIBUTES`` order);
    a latent "detects" a value on items where its activation is >= the threshold (> 0).
    """
    truth_nv = torch.tensor(
        [
            [a[name] == v for name, values in shapes.ATTRIBUTES.items() for v in values]
            for a in attributes
        ],
        dtype=torch.float32,
    )
    order_nl = z_nl.argsort(dim=0, descending=True)
    z_sorted_nl = z_nl.gather(0, order_nl)
    n_pos_v = truth_nv.sum(0)
    thresholds, f1s = [], []
    for v in range(truth_nv.shape[1]):
        tp_nl = truth_nv[order_nl, v].cumsum(0)  # true positives when keeping the top i+1 items
        kept_n1 = torch.arange(1, len(z_nl) + 1, dtype=torch.float32)[:, None]
        f1_nl = 2 * tp_nl / (kept_n1 + n_pos_v[v])
        f1_nl = torch.where(z_sorted_nl > 0, f1_nl, torch.zeros_like(f1_nl))  # thresholds > 0
        best_l = f1_nl.argmax(0)
        thresholds.append(z_sorted_nl.gather(0, best_l[None])[0])
        f1s.append(f1_nl.gather(0, best_l[None])[0])
    return torch.stack(thresholds), torch.stack(f1s)


def best_latents(
    z_cal_nl: torch.Tensor,
    attributes_cal: Sequence[dict[str, str]],
    z_nl: torch.Tensor,
    levels_nl: torch.Tensor,
    attributes: Sequence[dict[str, str]],
) -> list[LatentMatch]:
    """For every attribute value, the latent that detects it best, judged on held-out items.

    The latent and its activation threshold are chosen on calibration items (``z_cal_nl``); F1,
    precision and recall are then measured on the held-out items (``z_nl``) with that threshold.
    """
    thresholds_vl, f1_cal_vl = best_thresholds(z_cal_nl, attributes_cal)
    matches = []
    v = 0
    for name, values in shapes.ATTRIBUTES.items():
        for value in values:
            latent = int(f1_cal_vl[v].argmax())
            fired_n = z_nl[:, latent] >= thresholds_vl[v, latent]
            truth_n = torch.tensor([a[name] == value for a in attributes])
            tp = float((fired_n & truth_n).sum())
            precision = tp / max(1.0, float(fired_n.sum()))
            recall = tp / max(1.0, float(truth_n.sum()))
            f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
            lv = levels_nl[:, latent]
            lv = lv[lv >= 0]
            level = int(lv.float().median()) if len(lv) else -1
            matches.append(LatentMatch(name, value, latent, f1, precision, recall, level))
            v += 1
    return matches


@torch.no_grad()
def reconstruction(sae, x_nd: torch.Tensor) -> Reconstruction:
    out = sae(x_nd)
    x_hat = out.x_hat_bd
    cosine = float(F.cosine_similarity(x_hat, x_nd, dim=-1).mean())
    fvu = float(((x_nd - x_hat) ** 2).sum() / ((x_nd - x_nd.mean(0)) ** 2).sum())
    l0 = float((out.z_bl != 0).float().sum(1).mean())
    return Reconstruction(cosine=cosine, fvu=fvu, l0=l0)


class WorldReport(NamedTuple):
    n_items: int
    zero_shot: dict[str, float]  # attribute -> held-out accuracy
    matches: list[LatentMatch]  # one per attribute value
    image_reconstruction: Reconstruction
    text_reconstruction: Reconstruction

    @property
    def n_detected(self) -> int:
        """Attribute values with a latent detecting them at F1 >= 0.9."""
        return sum(m.f1 >= 0.9 for m in self.matches)


@torch.no_grad()
def world_report(encoder, sae, n_items: int = 2000, seed: int = shapes.HELDOUT_SEED) -> WorldReport:
    """Everything the quality benchmark prints, on ``n_items`` held-out world items."""
    items = shapes.make_items(n_items, seed)
    attributes = [it.attributes for it in items]
    x_img = encoder.encode_images([it.image for it in items], batch_size=256)
    bank = caption_bank(encoder.encode_texts, _logit_scale(encoder.model))
    zero_shot = zero_shot_accuracy(x_img, attributes, bank)
    z_nl = sae.encode(x_img)
    calibration = shapes.make_items(n_items, shapes.TRAIN_SEED)
    z_cal_nl = sae.encode(encoder.encode_images([it.image for it in calibration], batch_size=256))
    matches = best_latents(
        z_cal_nl, [it.attributes for it in calibration], z_nl, sae.latent_levels(z_nl), attributes
    )
    texts = sorted(
        {t for it in items for t in [it.caption, *shapes.partial_captions(it.attributes)]}
    )
    return WorldReport(
        n_items=n_items,
        zero_shot=zero_shot,
        matches=matches,
        image_reconstruction=reconstruction(sae, x_img),
        text_reconstruction=reconstruction(sae, encoder.encode_texts(texts)),
    )


def format_report(report: WorldReport) -> str:
    lines = [
        f"held-out items: {report.n_items}",
        "",
        "zero-shot accuracy (softmax mass of the world captions per value):",
    ]
    lines += [f"  {name:<11} {acc:6.1%}" for name, acc in report.zero_shot.items()]
    lines += [
        "",
        "best latent per attribute value (detector: activation >= a threshold set on "
        "training-seed images; F1/precision/recall on held-out images):",
    ]
    lines += [
        f"  {'attribute':<11} {'value':<9} {'latent':>6} {'F1':>6} {'prec':>6} {'recall':>6} {'level':>5}"
    ]
    for m in report.matches:
        lines.append(
            f"  {m.attribute:<11} {m.value:<9} {m.latent:>6} {m.f1:6.3f} {m.precision:6.3f} "
            f"{m.recall:6.3f} {m.level:>5}"
        )
    lines.append(f"values with a latent at F1 >= 0.9: {report.n_detected}/{len(report.matches)}")
    lines += ["", "MSAE reconstruction of held-out embeddings:"]
    for name, r in (("images", report.image_reconstruction), ("texts", report.text_reconstruction)):
        lines.append(f"  {name:<7} cosine {r.cosine:.4f}  FVU {r.fvu:.4f}  L0 {r.l0:.1f}")
    return "\n".join(lines)
