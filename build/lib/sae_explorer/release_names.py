"""The MSAE release's own latent names, shown beside ours.

Beside each checkpoint the ``WolodjaZ/MSAE`` repo ships
``Concept_Interpreter_<checkpoint stem>_disect_<CLIP>_-1_text_<n words>_<width>.npy``: the cosine of
every word of the ``clip_disect_20k.txt`` vocabulary (one word per line, kept at the repo root) with
every latent. The release stores it words x latents; latents x words is read as well, and the
orientation is decided from the shape, the vocabulary's length and the SAE's latent count.

The matrix is large (20,000 words x 6,144..24,576 latents, float32: up to ~2 GB), so it is
memory-mapped and scanned in blocks of ``BLOCK_BYTES``, keeping only the ``N_RELEASE_NAMES`` best
words of each latent (about a second per 6,144 latents; done once per start, the files themselves
stay in the Hugging Face cache). Any failure to find, fetch or read the files is logged and leaves
the explorer with its own names only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Literal, NamedTuple

import numpy as np
import torch

from sae_explorer.checkpoints.hub import HUB_PREFIXES, parse_hub_source

logger = logging.getLogger(__name__)

CONCEPTS_PREFIX = "Concept_Interpreter_"
VOCABULARY_TAG = "disect"
"""The vocabulary token in a concept file's name (``..._disect_ViT-L~14_...``)."""
VOCABULARY_FNAME = "clip_disect_20k.txt"
N_RELEASE_NAMES = 5
BLOCK_BYTES = 32 << 20
"""Bytes of the concept matrix read into memory at a time."""

Layout = Literal["words_latents", "latents_words"]
Download = Callable[..., str]
"""``hf_hub_download``'s signature: ``(repo_id, filename, *, revision) -> local path``."""


class ReleaseName(NamedTuple):
    word: str
    cosine: float


class ReleaseNames(NamedTuple):
    """The release's best words per latent, best first."""

    words: tuple[str, ...]
    top_ids_lk: np.ndarray  # int64 [n_latents, k] indices into words
    top_scores_lk: np.ndarray  # float32 [n_latents, k] cosine of word and latent
    source: str  # the concept file, as an hf-hub: source

    @property
    def n_latents(self) -> int:
        return len(self.top_ids_lk)

    def top(self, latent_id: int, n: int = N_RELEASE_NAMES) -> list[ReleaseName]:
        i = int(latent_id)
        if not 0 <= i < self.n_latents:
            raise ValueError(f"latent_id must be in [0, {self.n_latents}), got {latent_id}")
        pairs = zip(self.top_ids_lk[i, :n], self.top_scores_lk[i, :n])
        return [ReleaseName(self.words[w], float(s)) for w, s in pairs]

    def text(self, latent_id: int, n: int = 3) -> str:
        """``"word (0.31), word (0.29)"``, for table cells."""
        return ", ".join(f"{w} ({s:.2f})" for w, s in self.top(latent_id, n))


class ReleaseFiles(NamedTuple):
    """Where a checkpoint's names live in its Hub repo."""

    repo_id: str
    revision: str | None
    checkpoint: str
    concepts: str  # the Concept_Interpreter .npy
    vocabulary: str  # clip_disect_20k.txt

    @property
    def concepts_source(self) -> str:
        at = f"@{self.revision}" if self.revision else ""
        return f"hf-hub:{self.repo_id}{at}/{self.concepts}"


class ReleaseLookup(NamedTuple):
    """The names, or None and why not (for the log and ``Sources.details``)."""

    names: ReleaseNames | None
    reason: str = ""


class TopWords(NamedTuple):
    ids_lk: np.ndarray  # int64 [n_latents, k], best first
    scores_lk: np.ndarray  # float32 [n_latents, k]


# --------------------------------------------------------------------------- finding the files
def find_release_files(sae_source: str, repo_files: Sequence[str]) -> ReleaseFiles:
    """The concept matrix and vocabulary of the checkpoint ``sae_source`` names
    (``hf-hub:org/repo[@rev]/path.pth``), found in the repo's file list ``repo_files``: the
    ``Concept_Interpreter_<stem>_disect_*.npy`` in the checkpoint's folder (the first by name if
    several) and the nearest ``clip_disect_20k.txt`` in that folder or above it. Raises
    ``ValueError`` for a source that is not a Hub file, ``FileNotFoundError`` naming what is
    missing."""
    if not sae_source.startswith(HUB_PREFIXES):
        raise ValueError(f"{sae_source!r} is not a Hub source (hf-hub:org/repo/path)")
    repo_id, revision, path = parse_hub_source(sae_source)
    checkpoint = PurePosixPath(path)
    if not path or checkpoint.name.startswith(CONCEPTS_PREFIX):
        raise ValueError(f"{sae_source!r} does not name a checkpoint file in {repo_id}")
    listed = set(repo_files)
    prefix = f"{CONCEPTS_PREFIX}{checkpoint.stem}_{VOCABULARY_TAG}_"
    concepts = sorted(
        f
        for f in listed
        if PurePosixPath(f).parent == checkpoint.parent
        and PurePosixPath(f).name.startswith(prefix)
        and f.endswith(".npy")
    )
    if not concepts:
        raise FileNotFoundError(
            f"no {prefix}*.npy beside {path} among the {len(listed)} files of {repo_id}"
        )
    folders = [checkpoint.parent, *checkpoint.parent.parents]
    vocabulary = next(
        (str(d / VOCABULARY_FNAME) for d in folders if str(d / VOCABULARY_FNAME) in listed), None
    )
    if vocabulary is None:
        raise FileNotFoundError(
            f"no {VOCABULARY_FNAME} in {checkpoint.parent} or above among the files of {repo_id}"
        )
    return ReleaseFiles(repo_id, revision, path, concepts[0], vocabulary)


class ReleasePaths(NamedTuple):
    concepts_fpath: Path
    vocabulary_fpath: Path


def download_release_files(files: ReleaseFiles, download: Download | None = None) -> ReleasePaths:
    """Both files in the local Hugging Face cache, at the checkpoint's revision. Inside
    ``hub.offline_mode()`` this answers from the cache alone; errors propagate."""
    if download is None:
        import huggingface_hub

        download = huggingface_hub.hf_hub_download  # looked up now: tests patch the module
    return ReleasePaths(
        Path(download(files.repo_id, files.concepts, revision=files.revision)),
        Path(download(files.repo_id, files.vocabulary, revision=files.revision)),
    )


# --------------------------------------------------------------------------- reading them
def read_words(fpath: str | Path) -> tuple[str, ...]:
    """One word per line, stripped, in file order; every line counts (blank ones too), since line
    ``i`` names row ``i`` of the concept matrix."""
    with open(fpath, encoding="utf-8") as fh:
        words = tuple(line.strip() for line in fh)
    if not words:
        raise ValueError(f"vocabulary file {str(fpath)!r} is empty")
    return words


def concept_layout(shape: tuple[int, ...], n_words: int, n_latents: int) -> Layout:
    """Whether a concept matrix of ``shape`` is words x latents (the release's layout, also taken
    when both fit) or latents x words; ``ValueError`` naming both expected shapes otherwise."""
    if shape == (n_words, n_latents):
        return "words_latents"
    if shape == (n_latents, n_words):
        return "latents_words"
    raise ValueError(
        f"the concept matrix has shape {shape}; expected ({n_words}, {n_latents}) (words x "
        f"latents) or ({n_latents}, {n_words}) (latents x words) for the {n_words}-word "
        f"vocabulary and the SAE's {n_latents} latents"
    )


def top_words(
    scores: np.ndarray, layout: Layout, k: int = N_RELEASE_NAMES, block_bytes: int = BLOCK_BYTES
) -> TopWords:
    """The ``k`` highest-scoring words of every latent, reading ``scores`` (a memory map is fine)
    ``block_bytes`` at a time. NaN scores count as the lowest."""
    n_words = scores.shape[0] if layout == "words_latents" else scores.shape[1]
    k = min(k, n_words)
    row_bytes = max(1, scores.shape[1] * 4)
    block_rows = max(1, block_bytes // row_bytes)
    if layout == "words_latents":
        return _top_down_columns(scores, k, block_rows)
    if layout == "latents_words":
        return _top_along_rows(scores, k, block_rows)
    raise AssertionError(f"unknown layout {layout!r}")  # Layout is closed


def _read_block(scores: np.ndarray, lo: int, hi: int) -> torch.Tensor:
    block = torch.from_numpy(np.array(scores[lo:hi], dtype=np.float32))
    return torch.nan_to_num(block, nan=-torch.inf)


def _top_down_columns(scores_wl: np.ndarray, k: int, block_rows: int) -> TopWords:
    """Words x latents: stream word rows, keeping a running top-``k`` per latent column."""
    n_words, n_latents = scores_wl.shape
    best_kl = torch.full((0, n_latents), -torch.inf)
    best_ids_kl = torch.zeros((0, n_latents), dtype=torch.int64)
    for lo in range(0, n_words, block_rows):
        block_bl = _read_block(scores_wl, lo, lo + block_rows)
        values, ids = block_bl.topk(min(k, len(block_bl)), dim=0)
        merged_kl, pick_kl = torch.cat([best_kl, values]).topk(
            min(k, len(best_kl) + len(values)), dim=0
        )
        best_ids_kl = torch.cat([best_ids_kl, ids + lo]).gather(0, pick_kl)
        best_kl = merged_kl
    return TopWords(best_ids_kl.t().numpy().copy(), best_kl.t().numpy().copy())


def _top_along_rows(scores_lw: np.ndarray, k: int, block_rows: int) -> TopWords:
    """Latents x words: each latent's row holds all its scores; take its top ``k``."""
    ids_parts, score_parts = [], []
    for lo in range(0, scores_lw.shape[0], block_rows):
        values, ids = _read_block(scores_lw, lo, lo + block_rows).topk(k, dim=1)
        score_parts.append(values.numpy())
        ids_parts.append(ids.numpy())
    return TopWords(np.concatenate(ids_parts), np.concatenate(score_parts))


def read_release_names(
    concepts_fpath: str | Path,
    vocabulary_fpath: str | Path,
    n_latents: int,
    source: str = "",
    k: int = N_RELEASE_NAMES,
) -> ReleaseNames:
    """Top-``k`` words per latent from a concept matrix (``.npy``, memory-mapped) and its
    vocabulary; ``ValueError`` when the shapes do not fit ``n_latents`` and the vocabulary."""
    words = read_words(vocabulary_fpath)
    scores = np.load(concepts_fpath, mmap_mode="r", allow_pickle=False)
    if not np.issubdtype(scores.dtype, np.floating):
        raise ValueError(f"concept matrix {str(concepts_fpath)!r} holds {scores.dtype}, not floats")
    try:
        layout = concept_layout(scores.shape, len(words), n_latents)
    except ValueError as e:
        raise ValueError(f"{concepts_fpath}: {e}") from None
    top = top_words(scores, layout, k)
    return ReleaseNames(words, top.ids_lk, top.scores_lk.astype(np.float32), source)


# --------------------------------------------------------------------------- start-up
def fetch_release_names(
    sae_source: str,
    n_latents: int,
    list_files: Callable[[str], Sequence[str]],
    download: Download | None = None,
) -> ReleaseLookup:
    """The release's names for the SAE loaded from ``sae_source``, or None with the reason,
    logged. ``list_files`` lists the repo (the Hub's listing online, the cached files offline:
    the same lister start-up chose the checkpoint with); ``download`` defaults to
    ``hf_hub_download``. Never raises: without them the explorer keeps its own names."""
    source = str(sae_source)
    if not source.startswith(HUB_PREFIXES):
        return ReleaseLookup(None, f"{source} is not a Hub release file")
    try:
        repo_id = parse_hub_source(source)[0]
        files = find_release_files(source, list_files(repo_id))
        paths = download_release_files(files, download)
        names = read_release_names(
            paths.concepts_fpath, paths.vocabulary_fpath, n_latents, files.concepts_source
        )
    except Exception as e:  # not in the repo, not reachable, not cached or broken: ours only
        reason = f"{type(e).__name__}: {e}"
        logger.warning("showing our own latent names only, not the release's: %s", reason)
        return ReleaseLookup(None, reason)
    logger.info("release names for %d latents from %s", names.n_latents, names.source)
    return ReleaseLookup(names)
