"""Class prompts for CLIP zero-shot classification: each class's embedding is the normalised mean
of its prompts' unit text embeddings, one prompt per template (a template ensemble, as CLIP's
zero-shot evaluation does).

The default templates are a small generic photo ensemble; a built-in world supplies its own (its
tiny CLIP knows only its caption words: the shapes world's templates are its captions with the
class in the attribute's slot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from sae_explorer import builtin

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a low resolution photo of a {}.",
    "a good photo of the {}.",
    "art of the {}.",
)
"""A generic photo ensemble (templates in the style of CLIP's ImageNet prompts)."""
ATTRIBUTE_PREFIX = "attr_"
"""Ground-truth attribute columns of an index's items table (``attr_color``)."""


class ClassPrompts(NamedTuple):
    """One classification task: its label column, classes and class embeddings."""

    task: str  # the items-table column holding the labels (label, attr_color, ...)
    classes: list[str]
    embeddings_cd: Tensor  # [n_classes, d] unit class embeddings
    logit_scale: float  # CLIP's zero-shot temperature
    n_templates: int


def check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """The templates, each holding ``{}`` exactly once; ``ValueError`` naming a bad one."""
    if not templates:
        raise ValueError("give at least one prompt template, e.g. 'a photo of a {}.'")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(
                f"a prompt template holds '{{}}' exactly once (where the class name goes), "
                f"got {template!r}"
            )
    return tuple(templates)


def templates_for(task: str, clip_id: str, templates: Sequence[str] | None) -> tuple[str, ...]:
    """The templates given, else the built-in world's own for this task (when ``clip_id`` is a
    world's CLIP and it has some), else :data:`DEFAULT_TEMPLATES`."""
    if templates:
        return check_templates(templates)
    world = builtin.world_of(clip_id)
    if world is not None:
        own = getattr(world.module(), "prompt_templates", None)
        found = own(task.removeprefix(ATTRIBUTE_PREFIX)) if own is not None else ()
        if found:
            return check_templates(found)
    return DEFAULT_TEMPLATES


@torch.inference_mode()
def class_prompts(
    task: str,
    classes: Sequence[str],
    templates: Sequence[str],
    encode_texts: Callable[[list[str]], Tensor],
    logit_scale: float,
) -> ClassPrompts:
    """Encode every class under every template (one call) and average per class."""
    templates = check_templates(templates)
    if len(classes) < 2:
        raise ValueError(f"the task {task!r} has {len(classes)} class; zero-shot needs at least 2")
    names = [str(c).replace("_", " ") for c in classes]
    texts = [template.format(name) for name in names for template in templates]
    t_nd = torch.nn.functional.normalize(encode_texts(texts).float(), dim=-1)
    mean_cd = t_nd.reshape(len(classes), len(templates), -1).mean(1)
    embeddings_cd = torch.nn.functional.normalize(mean_cd, dim=-1)
    return ClassPrompts(task, list(classes), embeddings_cd, float(logit_scale), len(templates))


def log_probs(x_bd: Tensor, prompts: Sequence[ClassPrompts]) -> list[Tensor]:
    """Zero-shot log-probabilities of each task [b, n_classes]: log-softmax of the scaled
    cosines to its class embeddings (one product for all tasks)."""
    x_bd = torch.nn.functional.normalize(x_bd.float(), dim=-1)
    scaled_cd = torch.cat([p.logit_scale * p.embeddings_cd for p in prompts]).float()
    logits_bc = x_bd @ scaled_cd.T
    parts = logits_bc.split([len(p.classes) for p in prompts], dim=-1)
    return [part.log_softmax(-1) for part in parts]
