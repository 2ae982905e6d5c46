"""The SAE's numbers as the MSAE paper reports them, and what it costs CLIP downstream.

One pass over an activation index's cached embeddings (no second encoding) gives, at each cut of
the SAE (every Matryoshka level, a given k, the inference encode), image and text items apart:

- reconstruction as MSAE defines it (FVU, cosine, L0 count, sparsity = MSAE's "L0", dead
  latents), and CKNNA between CLIP embeddings and the SAE's codes (and its reconstructions);
- spliced fidelity: CLIP zero-shot classification of labelled items with the SAE's
  reconstruction in place of the embedding (accuracy, argmax agreement, KL), per class too.

Modules: ``cuts`` (the SAE read at each cut), ``reconstruction``, ``cknna``, ``prompts`` (class
prompts, template ensembles), ``fidelity``, ``run`` (``evaluate``, ``EvaluationConfig``),
``report`` (stamped JSON / Markdown / LaTeX), ``cli`` (``python -m sae_explorer evaluate``).
"""

from sae_explorer.evaluation.cknna import cknna
from sae_explorer.evaluation.cuts import Cut, cuts_of, run_cuts
from sae_explorer.evaluation.fidelity import ClassFidelityRow, FidelityRow
from sae_explorer.evaluation.prompts import ClassPrompts, class_prompts
from sae_explorer.evaluation.reconstruction import ReconstructionRow
from sae_explorer.evaluation.run import (
    Evaluation,
    EvaluationConfig,
    evaluate,
    label_tasks,
    prompts_for_items,
)

__all__ = [
    "ClassFidelityRow",
    "ClassPrompts",
    "Cut",
    "Evaluation",
    "EvaluationConfig",
    "FidelityRow",
    "ReconstructionRow",
    "cknna",
    "class_prompts",
    "cuts_of",
    "evaluate",
    "label_tasks",
    "prompts_for_items",
    "run_cuts",
]
