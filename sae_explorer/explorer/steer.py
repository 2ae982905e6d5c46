"""The Steer tab: edit an input's latents and compare the corpus neighbours and zero-shot scores
before and after; sweep one latent's strength against a random latent of similar frequency.

The tensor math (applying edits, decoding, zero-shot) is :mod:`sae_explorer.steering`; this module
turns user inputs into edits and the results into tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from sae_explorer import steering
from sae_explorer.explorer import examples, names, plots, queries, thumbnails
from sae_explorer.explorer.queries import Query
from sae_explorer.explorer.thumbnails import CaptionedImage
from sae_explorer.steering import Edit

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.explorer.state import Explorer

DEFAULT_LABEL_TEXT = "red, blue, green, yellow; circle, square, triangle"
"""Zero-shot labels: commas separate labels, semicolons separate groups, one softmax per group
(a colour and a shape are not rivals: "a large red circle" is both red and a circle)."""
DEFAULT_LABELS = ("red", "blue", "green", "yellow", "circle", "square", "triangle")


class LabelGroups(NamedTuple):
    """Zero-shot labels in groups; each group is one softmax over its own labels."""

    groups: tuple[tuple[str, ...], ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label for group in self.groups for label in group)

    @property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(len(group) for group in self.groups)

    def group_of(self, label: str) -> int:
        return next(g for g, group in enumerate(self.groups) if label in group)


SWEEP_STRENGTHS = tuple(np.round(np.linspace(0.0, 3.0, 13), 3))
"""Sweep values in units of the latent's largest activation on the corpus."""


class SteerResult(NamedTuple):
    cosine_to_original: float
    edits: pd.DataFrame  # latent, names, before, after
    neighbours_before: pd.DataFrame
    neighbours_after: pd.DataFrame
    images_before: list[CaptionedImage]  # nearest corpus images (cosine captions)
    images_after: list[CaptionedImage]
    zero_shot: pd.DataFrame  # label, before, after


class SweepResult(NamedTuple):
    figure: go.Figure
    table: pd.DataFrame  # strength, latent, baseline
    baseline_latent: int


def top_latents(explorer: Explorer, query: Query, n: int = 6) -> pd.DataFrame:
    """The input's strongest latents with their value and slider range: latent, names, value, max."""
    x_1d = torch.as_tensor(query.x_d, dtype=torch.float32)[None]
    z_l = steering.latents(explorer.sae_for(query), x_1d)[0]
    n_active = int((z_l > 0).sum())
    top = z_l.argsort(descending=True)[: min(n, n_active)].tolist()
    table = pd.DataFrame(
        [
            {
                "latent": i,
                "names": names.names_text(explorer, i, 2),
                "value": float(z_l[i]),
                "max": slider_max(explorer, i, float(z_l[i])),
            }
            for i in top
        ],
        columns=["latent", "names", "value", "max"],
    )
    return names.with_release_names(explorer, table, 2)


def slider_max(explorer: Explorer, latent_id: int, value: float = 0.0) -> float:
    """A slider range covering the latent's corpus maximum and the current value, with room."""
    return float(max(3.0 * explorer.max_act_l[latent_id], 2.0 * value, 1e-3))


def relative_edit(explorer: Explorer, latent: int | float | str, op: str, strength: float) -> Edit:
    """An edit whose ``set`` strength is in units of the latent's corpus maximum activation
    (1 = as strong as its strongest corpus example); ``scale`` is a plain factor."""
    latent_id = queries.resolve_latent(explorer, latent)
    edit = steering.check_edit(Edit(latent_id, op, strength), explorer.n_latents)
    if edit.op != "set":
        return edit
    unit = corpus_max(explorer, latent_id)
    limit = steering.MAX_ABS_VALUE / unit  # what decoding allows, in the strength's units
    if abs(edit.value) > limit:
        raise ValueError(
            f"the strength {edit.value:g} for latent {latent_id} is too large: set strengths "
            f"are in units of its largest corpus activation ({unit:.4g}), so allowed is "
            f"-{limit:.4g} to {limit:.4g}"
        )
    scaled = math.copysign(min(abs(edit.value * unit), steering.MAX_ABS_VALUE), edit.value)
    return edit._replace(value=scaled)  # (min: float rounding at the limit itself)


def corpus_max(explorer: Explorer, latent_id: int) -> float:
    """The latent's largest corpus activation, the unit of strengths (1 for a dead latent)."""
    max_act = float(explorer.max_act_l[latent_id])
    return max_act if max_act > 0 else 1.0


def steer(
    explorer: Explorer,
    query: Query,
    edits: Sequence[Edit],
    labels: Sequence[str] | str = DEFAULT_LABEL_TEXT,
    k: int = 8,
) -> SteerResult:
    """Decode the edited latents; compare neighbours and zero-shot scores before/after (one
    softmax per label group)."""
    edits = [steering.check_edit(Edit(*e), explorer.n_latents) for e in edits]
    groups = check_labels(labels)
    x_d = torch.as_tensor(query.x_d, dtype=torch.float32)
    out = steering.steer(explorer.sae_for(query), x_d, edits)
    x_after_d = out.x_steered_d
    cosine = float(torch.nn.functional.cosine_similarity(x_after_d, x_d, dim=0))
    probs_2n = steering.zero_shot(
        torch.stack([x_d, x_after_d]),
        explorer.label_embeddings(groups.labels),
        explorer.logit_scale,
        groups.group_sizes,
    )
    zero_shot = pd.DataFrame(
        {
            "group": [groups.group_of(label) + 1 for label in groups.labels],
            "label": groups.labels,
            "before": np.round(probs_2n[0].double().numpy(), 4),
            "after": np.round(probs_2n[1].double().numpy(), 4),
        }
    )
    return SteerResult(
        round(cosine, 4),
        edits_table(explorer, edits, out),
        examples.neighbours(explorer, x_d, k),
        examples.neighbours(explorer, x_after_d, k),
        neighbour_images(explorer, examples.neighbours(explorer, x_d, k, "image")),
        neighbour_images(explorer, examples.neighbours(explorer, x_after_d, k, "image")),
        zero_shot,
    )


def edits_table(
    explorer: Explorer, edits: Sequence[Edit], out: steering.SteerOutput
) -> pd.DataFrame:
    """The latents the edits changed: latent, names, before, after."""
    changed = sorted(
        {e.latent_id for e in edits if out.z_before_l[e.latent_id] != out.z_after_l[e.latent_id]}
    )
    return pd.DataFrame(
        {
            "latent": changed,
            "names": [names.names_text(explorer, i, 2) for i in changed],
            "before": [round(float(out.z_before_l[i]), 4) for i in changed],
            "after": [round(float(out.z_after_l[i]), 4) for i in changed],
        },
        columns=["latent", "names", "before", "after"],
    )


def neighbour_images(explorer: Explorer, df: pd.DataFrame) -> list[CaptionedImage]:
    """Thumbnails of the image rows of a neighbours table, captioned with their cosine."""
    rows = df[df["modality"] == "image"]
    return [
        CaptionedImage(
            thumbnails.thumbnail_fpath(explorer, int(r.item)), f"{r.cosine:.3f}", int(r.item)
        )
        for r in rows.itertuples()
    ]


def sweep(
    explorer: Explorer,
    query: Query,
    latent: int | float | str,
    target: str,
    labels: Sequence[str] | str = DEFAULT_LABEL_TEXT,
    strengths: Sequence[float] = SWEEP_STRENGTHS,
    seed: int = 0,
) -> SweepResult:
    """Target-label zero-shot score as one latent is set to growing strengths, next to the
    same sweep for a random latent of similar corpus frequency (the baseline)."""
    latent_id = queries.resolve_latent(explorer, latent)
    groups = check_labels(labels)
    target = (target or "").strip()
    if target not in groups.labels:
        raise ValueError(
            f"the target label {target!r} must be one of the labels {list(groups.labels)}"
        )
    strengths = [float(s) for s in strengths]
    if not strengths or not all(math.isfinite(s) and abs(s) <= 100 for s in strengths):
        raise ValueError("sweep strengths must be finite numbers between -100 and 100")
    baseline = similar_frequency_latent(explorer, latent_id, seed)
    x_d = torch.as_tensor(query.x_d, dtype=torch.float32)
    label_nd = explorer.label_embeddings(groups.labels)
    t = groups.labels.index(target)
    sae = explorer.sae_for(query)
    curves = {}
    for name, i in (("latent", latent_id), ("baseline", baseline)):
        unit = corpus_max(explorer, i)
        x_vd = steering.strength_sweep(sae, x_d, i, [s * unit for s in strengths])
        probs_vn = steering.zero_shot(x_vd, label_nd, explorer.logit_scale, groups.group_sizes)
        curves[name] = probs_vn[:, t].numpy()
    table = pd.DataFrame(
        {
            "strength": strengths,
            "latent": np.round(curves["latent"].astype(np.float64), 4),
            "baseline": np.round(curves["baseline"].astype(np.float64), 4),
        }
    )
    return SweepResult(plots.sweep_plot(table, latent_id, baseline, target), table, baseline)


def similar_frequency_latent(explorer: Explorer, latent_id: int, seed: int = 0) -> int:
    """A random other live latent among the 20 closest in log corpus frequency."""
    frequency_l = explorer.frequency_l
    live = np.flatnonzero(frequency_l > 0)
    live = live[live != latent_id]
    if live.size == 0:
        return (latent_id + 1) % explorer.n_latents
    f = max(frequency_l[latent_id], 1e-9)
    gap = np.abs(np.log(frequency_l[live]) - np.log(f))
    pool = live[np.argsort(gap, kind="stable")[:20]]
    return int(np.random.default_rng([seed, latent_id]).choice(pool))


def check_labels(labels: Sequence[str] | Sequence[Sequence[str]] | str) -> LabelGroups:
    """Zero-shot label groups from ``"red, blue; circle, square"`` (commas between labels,
    semicolons between groups), a list of labels (one group) or a list of groups: 2 to 50
    distinct non-empty labels, at least 2 in every group."""
    if isinstance(labels, str):
        raw = [part.split(",") for part in labels.split(";")]
    elif labels and all(not isinstance(g, str) for g in labels):
        raw = [list(g) for g in labels]
    else:
        raw = [list(labels)]
    seen: dict[str, None] = {}
    groups = []
    for part in raw:
        group = [s.strip()[:200] for s in part if s and s.strip()]
        group = [s for s in dict.fromkeys(group) if s not in seen]
        seen.update(dict.fromkeys(group))
        if group:
            groups.append(tuple(group))
    if not 2 <= len(seen) <= 50:
        raise ValueError(
            f"give between 2 and 50 distinct labels separated by commas (got {len(seen)})"
        )
    if any(len(group) < 2 for group in groups):
        raise ValueError(
            f"every label group needs at least 2 labels to compare (one softmax per group, "
            f"groups separated by ';'); got {[list(g) for g in groups]}"
        )
    return LabelGroups(tuple(groups))


def clip_logit_scale(encoder: ClipEncoder) -> float:
    """The CLIP model's own zero-shot temperature (OpenAI CLIP: 100), capped at 100."""
    param = getattr(encoder.model, "logit_scale", None)
    if param is None:
        return steering.CLIP_LOGIT_SCALE
    return float(min(float(param.detach().float().exp()), steering.CLIP_LOGIT_SCALE))
