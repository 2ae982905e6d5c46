"""Spliced fidelity: what the SAE costs CLIP's own zero-shot classification when its
reconstruction replaces the embedding (the SAE spliced into CLIP, read through CLIP's head).

For each labelled item: the zero-shot prediction from the original embedding ``x`` and from the
reconstruction ``x_hat`` at a cut. Reported: top-1 accuracy of each, argmax agreement, the mean
KL divergence ``KL(p(x) || p(x_hat))``, and the same two with the latents' error term added back
(``x_hat + (x - x_hat)``, the identity the steering edits rely on: agreement must be 1.0). Per
class too.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class FidelityRow(NamedTuple):
    task: str  # label column
    modality: str
    cut: str
    k: int
    n_items: int
    accuracy_original: float  # zero-shot top-1 on x
    accuracy_reconstruction: float  # on x_hat
    agreement: float  # argmax(x) == argmax(x_hat)
    kl: float  # mean KL(p(x) || p(x_hat)), nats
    agreement_with_error: float  # on x_hat + (x - x_hat): 1.0 when the splice is exact
    kl_with_error: float


class ClassFidelityRow(NamedTuple):
    task: str
    modality: str
    cut: str
    class_name: str
    n_items: int
    accuracy_original: float
    accuracy_reconstruction: float
    agreement: float


class FidelitySums:
    """Running counts of one (task, modality, cut), per class."""

    def __init__(self, n_classes: int) -> None:
        self.n_c = np.zeros(n_classes, np.int64)
        self.correct_original_c = np.zeros(n_classes, np.int64)
        self.correct_recon_c = np.zeros(n_classes, np.int64)
        self.agree_c = np.zeros(n_classes, np.int64)
        self.agree_error = 0
        self.kl = self.kl_error = 0.0

    @torch.inference_mode()
    def add(
        self,
        logp_original_bc: Tensor,
        logp_recon_bc: Tensor,
        logp_error_bc: Tensor,
        label_b: Tensor,
    ) -> None:
        """One batch of labelled items: zero-shot log-probabilities of the originals, of their
        reconstructions and of the reconstructions plus the error term; class indices."""
        pred_original_b = logp_original_bc.argmax(-1)
        pred_recon_b = logp_recon_bc.argmax(-1)
        n_classes = len(self.n_c)

        def per_class(mask_b: Tensor) -> np.ndarray:
            return torch.bincount(label_b[mask_b], minlength=n_classes).numpy()

        self.n_c += per_class(torch.ones_like(label_b, dtype=torch.bool))
        self.correct_original_c += per_class(pred_original_b == label_b)
        self.correct_recon_c += per_class(pred_recon_b == label_b)
        self.agree_c += per_class(pred_original_b == pred_recon_b)
        self.agree_error += int((logp_error_bc.argmax(-1) == pred_original_b).sum())
        self.kl += float(kl_b(logp_original_bc, logp_recon_bc).double().sum())
        self.kl_error += float(kl_b(logp_original_bc, logp_error_bc).double().sum())

    def row(self, task: str, modality: str, cut: str, k: int) -> FidelityRow:
        n = int(self.n_c.sum())
        assert n > 0, "no labelled items summed"
        return FidelityRow(
            task=task,
            modality=modality,
            cut=cut,
            k=k,
            n_items=n,
            accuracy_original=float(self.correct_original_c.sum()) / n,
            accuracy_reconstruction=float(self.correct_recon_c.sum()) / n,
            agreement=float(self.agree_c.sum()) / n,
            kl=self.kl / n,
            agreement_with_error=self.agree_error / n,
            kl_with_error=self.kl_error / n,
        )

    def class_rows(
        self, task: str, modality: str, cut: str, classes: list[str]
    ) -> list[ClassFidelityRow]:
        rows = []
        for c, name in enumerate(classes):
            n = int(self.n_c[c])
            if n == 0:
                continue
            rows.append(
                ClassFidelityRow(
                    task,
                    modality,
                    cut,
                    name,
                    n,
                    float(self.correct_original_c[c]) / n,
                    float(self.correct_recon_c[c]) / n,
                    float(self.agree_c[c]) / n,
                )
            )
        return rows


def kl_b(logp_bc: Tensor, logq_bc: Tensor) -> Tensor:
    """KL(p || q) per row, from log-probabilities."""
    return (logp_bc.exp() * (logp_bc - logq_bc)).sum(-1)
