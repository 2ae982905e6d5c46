"""One registry of SAE checkpoint formats and the one loop that picks a format for a source.

Every format module exposes the same two functions:

- ``detect(probe) -> Detection``: does this format read the source, and if not, why not;
- ``load(probe, device, dtype) -> SAE``: read it, reproducing that library's own ``encode`` and
  ``decode`` (its inference semantics end up in ``sae.cfg``).

The first format that detects a source loads it; when none does, the error lists every format
tried and why each declined.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from sae_explorer.checkpoints.probe import Probe
from sae_explorer.sae import SAE

logger = logging.getLogger(__name__)


class Detection(NamedTuple):
    """A format's answer for one source: ``matches``, or ``reason`` it does not."""

    matches: bool
    reason: str = ""


class Format(NamedTuple):
    """One registered checkpoint format."""

    name: str
    """``sae.source_format`` of what it loads."""
    library: str
    """The library whose semantics it reproduces."""
    detect: Callable[[Probe], Detection]
    load: Callable[[Probe, torch.device | str | None, torch.dtype | None], SAE]


def formats() -> tuple[Format, ...]:
    """The registry, in the order sources are tried (folders first, then by file contents)."""
    from sae_explorer.checkpoints import msae, openai, project, saelens, saev

    return (
        Format(project.FORMAT, "sae-explorer", project.detect, project.load),
        Format(saelens.FORMAT, "SAELens", saelens.detect, saelens.load),
        Format(saev.FORMAT, "saev", saev.detect, saev.load),
        Format(msae.FORMAT, "MSAE", msae.detect, msae.load),
        Format(openai.FORMAT, "OpenAI sparse_autoencoder", openai.detect, openai.load),
        Format(
            openai.AUTO_CIRCUIT,
            "auto_circuit",
            openai.detect_auto_circuit,
            openai.load_auto_circuit,
        ),
    )


def load_local(
    path: Path,
    name: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> SAE:
    """Load a local file or folder with the first format that detects it."""
    probe = Probe(path, name)
    declined = []
    for fmt in formats():
        detection = fmt.detect(probe)
        if detection.matches:
            sae = fmt.load(probe, device, dtype)
            logger.info("loaded %s SAE (%s) from %s", fmt.name, sae.cfg.architecture, path)
            return sae
        declined.append(f"  - {fmt.name} ({fmt.library}): {detection.reason}")
    raise ValueError(
        f"{path} is not an SAE checkpoint any supported format reads; tried:\n"
        + "\n".join(declined)
    )
