"""Names for latents from a vocabulary (Discover-then-Name / MSAE ``sae_naming`` style).

Each word of a vocabulary is embedded with CLIP's text encoder and moved into the SAE's model
space (its input preprocessing, per-sample normalisation if any, minus the pre-bias). A latent's
name candidates are the words whose vectors have the highest cosine with its decoder direction;
as a second score we keep the latent's activation when the SAE encodes the word itself. Once the
corpus is indexed, each candidate is scored against the data (its detection AUROC, see
:mod:`sae_explorer.name_scores`), candidates are ranked by it, and a latent with no candidate at or
above the floor is shown as unnamed.

Text embeddings share a large "this is text" component (CLIP's modality gap), which would make
every latent's cosine ranking prefer the same generic words; subtracting the vocabulary's mean
vector removes it, so words are ranked by what sets them apart.

Default vocabulary: English words by frequency from ``wordfreq`` (a maintained word list), minus
the most frequent ones (function words such as "the", "which" that name nothing one can see),
plus the built-in world's attribute words when naming that world's SAE.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer import builtin
from sae_explorer.atomic import atomic_save_npz, atomic_write_json
from sae_explorer.name_scores import AUROC_FLOOR, UNNAMED, NameScores, ranked_by_auroc
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    import pandas as pd

    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.sae import SAE

N_NAMES = 5
DEFAULT_N_WORDS = 3000
N_SKIPPED_FREQUENT = 100
"""The most frequent English words are nearly all function words; they are left out."""
NAMES_FILE = "names.npz"
NAMES_META = "names.json"


class LatentName(NamedTuple):
    name: str
    cosine: float  # decoder direction vs word (model space, vocabulary-centred)
    activation: float  # the latent's activation when the SAE encodes the word
    auroc: float = float("nan")  # detection AUROC on the corpus (NaN: not scored, or undefined)


@dataclass(frozen=True)
class LatentNames:
    """Top name candidates per latent, with their scores; once scored against the corpus
    (``auroc_ln``), ranked by detection AUROC, else by cosine."""

    vocabulary: tuple[str, ...]
    word_ids_ln: np.ndarray  # int32 [n_latents, N_NAMES] indices into vocabulary, best first
    cosine_ln: np.ndarray  # float32 [n_latents, N_NAMES]
    activation_ln: np.ndarray  # float32 [n_latents, N_NAMES]
    center_d: np.ndarray  # float32 [n_inputs]: model-space vocabulary mean (for search)
    source: str = ""  # where the vocabulary came from
    auroc_ln: np.ndarray | None = None  # float32 [n_latents, N_NAMES]; None: not scored yet
    scored_on: str | None = None  # the modality the AUROCs were measured on

    @property
    def n_latents(self) -> int:
        return len(self.word_ids_ln)

    @property
    def scored(self) -> bool:
        return self.auroc_ln is not None

    @property
    def named_l(self) -> np.ndarray:
        """bool [n_latents]: the latent has a name (scored: one at or above ``AUROC_FLOOR``)."""
        if self.auroc_ln is None:
            return np.ones(self.n_latents, dtype=bool)
        return self._named_ln.any(axis=1)

    @property
    def _named_ln(self) -> np.ndarray:
        """bool [n_latents, N_NAMES]: which candidates count as names."""
        if self.auroc_ln is None:
            return np.ones(self.word_ids_ln.shape, dtype=bool)
        return np.nan_to_num(self.auroc_ln, nan=-1.0) >= AUROC_FLOOR

    def with_scores(self, scores: NameScores) -> LatentNames:
        """These names with their detection AUROCs, each latent's candidates best AUROC first."""
        if scores.auroc_lk.shape != self.word_ids_ln.shape:
            raise ValueError(
                f"scores of shape {scores.auroc_lk.shape} for names of shape "
                f"{self.word_ids_ln.shape}"
            )
        order_ln = ranked_by_auroc(scores.auroc_lk)

        def ranked(a_ln: np.ndarray) -> np.ndarray:
            return np.take_along_axis(a_ln, order_ln, axis=1)

        return LatentNames(
            vocabulary=self.vocabulary,
            word_ids_ln=ranked(self.word_ids_ln),
            cosine_ln=ranked(self.cosine_ln),
            activation_ln=ranked(self.activation_ln),
            center_d=self.center_d,
            source=self.source,
            auroc_ln=ranked(scores.auroc_lk).astype(np.float32),
            scored_on=scores.scored_on,
        )

    def top(self, latent_id: int) -> list[LatentName]:
        """The latent's name candidates, best first."""
        i = int(latent_id)
        if not 0 <= i < self.n_latents:
            raise ValueError(f"latent_id must be in [0, {self.n_latents}), got {latent_id}")
        auroc_n = (
            self.auroc_ln[i]
            if self.auroc_ln is not None
            else np.full(len(self.cosine_ln[i]), np.nan)
        )
        return [
            LatentName(self.vocabulary[w], float(c), float(a), float(s))
            for w, c, a, s in zip(
                self.word_ids_ln[i], self.cosine_ln[i], self.activation_ln[i], auroc_n
            )
        ]

    def named(self, latent_id: int) -> list[LatentName]:
        """The candidates that count as the latent's names (scored: AUROC >= the floor), best
        first; empty for an unnamed latent."""
        return [c for c, ok in zip(self.top(latent_id), self._named_ln[int(latent_id)]) if ok]

    def label(self, latent_id: int) -> str:
        """The best name, for compact display (``UNNAMED`` when no candidate reaches the floor)."""
        if not self.named_l[int(latent_id)]:
            return UNNAMED
        return self.vocabulary[int(self.word_ids_ln[int(latent_id), 0])]

    def to_frame(self) -> pd.DataFrame:
        """Long table: latent_id, rank, name, cosine, activation, auroc (NaN: not scored)."""
        import pandas as pd

        n, k = self.word_ids_ln.shape
        words = np.asarray(self.vocabulary, dtype=object)[self.word_ids_ln.reshape(-1)]
        return pd.DataFrame(
            {
                "latent_id": np.repeat(np.arange(n), k),
                "rank": np.tile(np.arange(k), n),
                "name": words,
                "cosine": self.cosine_ln.reshape(-1),
                "activation": self.activation_ln.reshape(-1),
                "auroc": (
                    self.auroc_ln if self.auroc_ln is not None else np.full((n, k), np.nan)
                ).reshape(-1),
            }
        )

    def matches(self, query: str) -> np.ndarray:
        """bool [n_latents]: some name of the latent (a candidate at or above the floor, once
        scored) shares a word with ``query``."""
        terms = set(_words(query))
        hit_w = np.array([bool(terms & set(_words(w))) for w in self.vocabulary])
        return (hit_w[self.word_ids_ln] & self._named_ln).any(axis=1)

    # ------------------------------------------------------------------ files
    def save(self, dpath: str | os.PathLike) -> None:
        dpath = Path(dpath)
        arrays = {
            "word_ids_ln": self.word_ids_ln,
            "cosine_ln": self.cosine_ln,
            "activation_ln": self.activation_ln,
            "center_d": self.center_d,
        }
        if self.auroc_ln is not None:
            arrays["auroc_ln"] = self.auroc_ln
        atomic_save_npz(dpath / NAMES_FILE, arrays)
        # The metadata file is written last: its presence means the names are complete (and
        # its scored_on that the scores in the arrays are theirs).
        meta = {"vocabulary": list(self.vocabulary), "source": self.source, "key": self.key}
        atomic_write_json(dpath / NAMES_META, {**meta, "scored_on": self.scored_on})

    @property
    def key(self) -> str:
        return vocabulary_hash(self.vocabulary)

    @staticmethod
    def exists(dpath: str | os.PathLike) -> bool:
        return (Path(dpath) / NAMES_META).is_file() and (Path(dpath) / NAMES_FILE).is_file()

    @classmethod
    def load(cls, dpath: str | os.PathLike) -> LatentNames:
        """The names saved in ``dpath``; ``ValueError`` saying what is wrong when they cannot
        be read or do not hold together (a damaged file: name the latents again)."""
        dpath = Path(dpath)
        try:
            meta = json.loads((dpath / NAMES_META).read_text())
            with np.load(dpath / NAMES_FILE, allow_pickle=False) as arrays:
                scored_on = meta.get("scored_on")
                scored = scored_on is not None and "auroc_ln" in arrays
                names = cls(
                    vocabulary=tuple(meta["vocabulary"]),
                    word_ids_ln=arrays["word_ids_ln"],
                    cosine_ln=arrays["cosine_ln"],
                    activation_ln=arrays["activation_ln"],
                    center_d=arrays["center_d"],
                    source=meta.get("source", ""),
                    auroc_ln=arrays["auroc_ln"] if scored else None,
                    scored_on=scored_on if scored else None,
                )
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"the latent names in {dpath} cannot be read: {e!r}") from e
        names.check()
        return names

    def check(self) -> None:
        """``ValueError`` unless the arrays agree in shape and every word id is a word."""
        shape = self.word_ids_ln.shape
        ids = self.word_ids_ln
        if (
            len(shape) != 2
            or self.cosine_ln.shape != shape
            or self.activation_ln.shape != shape
            or (self.auroc_ln is not None and self.auroc_ln.shape != shape)
            or ids.dtype.kind not in "iu"
            or (ids.size and not (ids.min() >= 0 and ids.max() < len(self.vocabulary)))
        ):
            raise ValueError(
                f"the latent names do not hold together: word ids {shape} "
                f"for {len(self.vocabulary)} words, scores {self.cosine_ln.shape}"
            )


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def vocabulary_hash(words: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(words).encode()).hexdigest()


# --------------------------------------------------------------------------- vocabularies
def default_vocabulary(world: str | None = None, n_words: int = DEFAULT_N_WORDS) -> list[str]:
    """``n_words`` frequent English words (wordfreq), plus a built-in world's attribute words.

    ``world="shapes"`` (or ``"builtin:shapes"``) adds the shapes world's attribute values and
    "<colour> background" phrases, so its latents can be named by their ground truth.
    """
    from wordfreq import top_n_list

    if n_words < 0:
        raise ValueError(f"n_words must be >= 0, got {n_words}")
    words: dict[str, None] = {}
    if n_words:
        candidates = top_n_list("en", n_words * 2 + N_SKIPPED_FREQUENT)[N_SKIPPED_FREQUENT:]
        for word in candidates:
            if word.isalpha() and len(word) >= 3:
                words[word] = None
                if len(words) == n_words:
                    break
    if world is not None:
        words.update(dict.fromkeys(world_vocabulary(world)))
    return list(words)


def world_vocabulary(world: str) -> list[str]:
    """A built-in world's own words (``"shapes"`` or ``"builtin:shapes"``)."""
    return builtin.resolve(world).module().vocabulary()


def load_vocabulary(fpath: str | os.PathLike) -> list[str]:
    """One word or phrase per line; blank lines and ``#`` comments ignored; duplicates dropped."""
    fpath = Path(fpath)
    if not fpath.is_file():
        raise ValueError(f"vocabulary file {str(fpath)!r} not found")
    words = dict.fromkeys(
        line.strip()
        for line in fpath.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not words:
        raise ValueError(f"vocabulary file {str(fpath)!r} has no words")
    return list(words)


# --------------------------------------------------------------------------- scoring
@torch.inference_mode()
def name_latents(
    encoder: ClipEncoder,
    sae: SAE,
    vocabulary: Sequence[str] | None = None,
    n_names: int = N_NAMES,
    batch_size: int = 256,
    embeddings_vd: torch.Tensor | None = None,
    source: str = "",
    progress: Progress | None = None,
) -> LatentNames:
    """Score every latent against every word; keep the ``n_names`` best words per latent.

    ``embeddings_vd`` (raw text embeddings of ``vocabulary``) skips the text encoder, e.g. when
    they are cached.
    """
    words = list(default_vocabulary() if vocabulary is None else vocabulary)
    if not words:
        raise ValueError("the vocabulary is empty")
    if embeddings_vd is None:
        embeddings_vd = embed_words(encoder, words, batch_size, progress)
    if embeddings_vd.shape != (len(words), sae.n_inputs):
        raise ValueError(
            f"vocabulary embeddings have shape {tuple(embeddings_vd.shape)}, expected "
            f"({len(words)}, {sae.n_inputs})"
        )
    xm_vd = sae.to_model_space(embeddings_vd.float())
    center_d = xm_vd.mean(0) if len(words) > 1 else torch.zeros(sae.n_inputs)
    unit_vd = torch.nn.functional.normalize(xm_vd - center_d, dim=-1)
    dictionary_ld = sae.get_dictionary().float()
    k = min(n_names, len(words))
    cos_parts, id_parts = [], []
    for lo in range(0, sae.n_latents, 2048):
        cos_lv = dictionary_ld[lo : lo + 2048] @ unit_vd.t()
        values, ids = cos_lv.topk(k, dim=1)
        cos_parts.append(values)
        id_parts.append(ids)
    cosine_ln, word_ids_ln = torch.cat(cos_parts), torch.cat(id_parts)
    # Second score: the latent's own activation on each chosen word.
    activation_ln = torch.zeros_like(cosine_ln)
    latent_ln = torch.arange(sae.n_latents)[:, None].expand_as(word_ids_ln)
    for lo in range(0, len(words), batch_size):
        z_bl = sae.encode(embeddings_vd[lo : lo + batch_size].float())
        in_batch = (word_ids_ln >= lo) & (word_ids_ln < lo + len(z_bl))
        activation_ln[in_batch] = z_bl[word_ids_ln[in_batch] - lo, latent_ln[in_batch]]
    return LatentNames(
        vocabulary=tuple(words),
        word_ids_ln=word_ids_ln.numpy().astype(np.int32),
        cosine_ln=cosine_ln.numpy().astype(np.float32),
        activation_ln=activation_ln.numpy().astype(np.float32),
        center_d=center_d.numpy().astype(np.float32),
        source=source,
    )


def embed_words(
    encoder: ClipEncoder,
    words: Sequence[str],
    batch_size: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Raw text embeddings [n_words, d] of the vocabulary (fp32, CPU)."""
    parts = []
    for lo in range(0, len(words), batch_size):
        parts.append(encoder.encode_texts(list(words[lo : lo + batch_size]), batch_size=batch_size))
        if progress is not None:
            done = min(lo + batch_size, len(words))
            progress(done / len(words), f"embedded {done}/{len(words)} vocabulary words")
    return torch.cat(parts)


@torch.inference_mode()
def search_latents(
    query: str,
    encoder: ClipEncoder,
    sae: SAE,
    names: LatentNames | None = None,
    k: int = 20,
    name_bonus: float = 1.0,
) -> pd.DataFrame:
    """Latents matching a text query, best first.

    score = cosine(decoder direction, query in model space, vocabulary-centred when names are
    given) + ``name_bonus`` if one of the latent's names shares a word with the query.
    Columns: latent_id, score, cosine, name_match, name.
    """
    import pandas as pd

    query = (query or "").strip()
    if not query:
        raise ValueError("the search query is empty; type a word or phrase")
    xm_1d = sae.to_model_space(encoder.encode_texts([query]).float())
    if names is not None:
        if names.n_latents != sae.n_latents:
            raise ValueError(
                f"names are for {names.n_latents} latents, the SAE has {sae.n_latents}"
            )
        xm_1d = xm_1d - torch.from_numpy(names.center_d)
    unit_d = torch.nn.functional.normalize(xm_1d[0], dim=0)
    cosine_l = (sae.get_dictionary().float() @ unit_d).numpy()
    match_l = names.matches(query) if names is not None else np.zeros(sae.n_latents, dtype=bool)
    score_l = cosine_l + name_bonus * match_l
    k = min(k, sae.n_latents)
    top = np.argsort(-score_l, kind="stable")[:k]
    return pd.DataFrame(
        {
            "latent_id": top,
            "score": score_l[top].astype(np.float32),
            "cosine": cosine_l[top].astype(np.float32),
            "name_match": match_l[top],
            "name": [names.label(i) if names is not None else "" for i in top],
        }
    )
