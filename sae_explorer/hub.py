"""Pick the released MSAE checkpoint that fits a CLIP model, from the Hub repo's file list.

The MSAE release (``WolodjaZ/MSAE``) stores image SAEs for OpenAI CLIP models under names such as
``ViT-L_14/centered/6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth``:
latents, input width, activation (+k), Matryoshka weighting, tied, normalize, soft cap, then the
training data (dataset, CLIP model, split, modality, size, width). The file names are only read
here to *choose* a file; the weights' configuration is read by the checkpoint loader.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

MSAE_REPO = "WolodjaZ/MSAE"
MSAE_PRETRAINED = "openai"
"""The released MSAEs were trained on embeddings of OpenAI's CLIP weights."""


class MsaeFile(NamedTuple):
    """What an MSAE checkpoint's file name says about it."""

    path: str
    n_latents: int
    n_inputs: int
    activation: str  # e.g. "TopKReLU_64", "ReLU_003"
    weighting: str | None  # "RW" / "UW" for Matryoshka SAEs, None otherwise
    clip_tag: str | None  # e.g. "ViT-L~14"
    modality: str | None  # "image" / "text" (training embeddings)
    centered: bool | None  # from a "centered"/"not_centered" folder, if any


_CLIP_TAG = re.compile(r"^(ViT|RN)[A-Za-z0-9~\-]*$")


def parse_msae_filename(path: str) -> MsaeFile | None:
    """Describe one repo path; None when it is not an MSAE SAE checkpoint (README, concept
    files...). The name itself is parsed by the checkpoint adapter's own parser."""
    from sae_explorer.formats.msae import parse_msae_filename as parse_name

    name = Path(path).name
    if not name.endswith((".pth", ".pt")) or name.startswith("Concept_Interpreter"):
        return None
    try:
        parsed = parse_name(name)
    except ValueError:
        return None
    activation = parsed.activation + (
        f"_{parsed.k}" if parsed.k is not None else f"_{parsed.l1_coefficient or ''}".rstrip("_")
    )
    data_tokens = parsed.dataset.split("_")  # e.g. cc3m, ViT-L~14, train, image, 2905936, 768
    clip_tag = next((t for t in data_tokens if _CLIP_TAG.match(t)), None)
    modality = next((t for t in data_tokens if t in ("image", "text")), None)
    folders = Path(path).parts[:-1]
    centered = True if "centered" in folders else (False if "not_centered" in folders else None)
    return MsaeFile(
        path,
        parsed.n_latents,
        parsed.n_inputs,
        activation,
        parsed.weighting,
        clip_tag,
        modality,
        centered,
    )


def clip_key(name: str) -> str:
    """Compare CLIP names across spellings: ``ViT-L-14``, ``ViT-L/14``, ``ViT-L~14``, ``ViT-L_14``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def select_msae_checkpoint(
    files: Sequence[str], clip_model: str, embed_dim: int, pretrained: str | None = MSAE_PRETRAINED
) -> MsaeFile:
    """The best MSAE checkpoint in ``files`` for ``clip_model`` with ``embed_dim``-d embeddings.

    A match has the CLIP model in its file name (or folder) and ``n_inputs == embed_dim``. Among
    matches: image-trained before text, Matryoshka (RW, then UW) before plain SAEs, the
    ``centered`` variant first, then the smallest dictionary (fastest on a CPU Space); ties go to
    the path name, so the choice is deterministic. Raises ``ValueError`` naming what is available
    when nothing matches.
    """
    if pretrained is not None and pretrained != MSAE_PRETRAINED:
        raise ValueError(
            f"the released MSAE checkpoints were trained on {MSAE_PRETRAINED!r} CLIP weights, "
            f"not {pretrained!r}; use --pretrained {MSAE_PRETRAINED} or pass --sae explicitly"
        )
    parsed = [m for m in (parse_msae_filename(f) for f in files) if m is not None]
    if not parsed:
        raise ValueError(f"no MSAE checkpoint files (*.pth) among the {len(files)} files listed")
    key = clip_key(clip_model)
    same_model = [m for m in parsed if _model_key(m) == key]
    matches = [m for m in same_model if m.n_inputs == embed_dim]
    if not matches:
        available = sorted({f"{m.clip_tag or '?'} ({m.n_inputs}-d)" for m in parsed})
        why = (
            f"they take {sorted({m.n_inputs for m in same_model})}-d inputs"
            if same_model
            else "none is for this model"
        )
        raise ValueError(
            f"no released MSAE checkpoint matches CLIP {clip_model!r} with {embed_dim}-d "
            f"embeddings ({why}); available: {', '.join(available)}"
        )

    def rank(m: MsaeFile) -> tuple:
        return (
            m.modality != "image",
            {"RW": 0, "UW": 1}.get(m.weighting or "", 2),
            m.centered is not True,
            m.n_latents,
            m.path,
        )

    return min(matches, key=rank)


def _model_key(m: MsaeFile) -> str | None:
    if m.clip_tag is not None:
        return clip_key(m.clip_tag)
    folder = Path(m.path).parts[0] if len(Path(m.path).parts) > 1 else None
    return clip_key(folder) if folder else None


def list_repo_files(repo_id: str = MSAE_REPO) -> list[str]:
    """The repo's file names (a network call; patched in tests)."""
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(repo_id)


def msae_source(
    clip_model: str,
    embed_dim: int,
    pretrained: str | None = MSAE_PRETRAINED,
    repo_id: str = MSAE_REPO,
    list_files: Callable[[str], Sequence[str]] = list_repo_files,
) -> tuple[MsaeFile, str]:
    """Choose the checkpoint (see :func:`select_msae_checkpoint`) from the repo's file list;
    returns it and the ``hf-hub:`` source ``load_sae`` downloads it from. Network errors
    propagate, for the caller to fall back."""
    chosen = select_msae_checkpoint(list_files(repo_id), clip_model, embed_dim, pretrained)
    return chosen, f"hf-hub:{repo_id}/{chosen.path}"
