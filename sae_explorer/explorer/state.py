"""The explorer: one object holding encoder, SAE and activation index, with one method per user
action of the app, each returning plain data (DataFrames, plotly figures, PIL images, dicts).

Models and index are loaded once and only read afterwards, so one ``Explorer`` serves every
session of the web app; anything a user changes (the current input, steering edits) is passed in
by the caller and never stored here. ``app.py`` wraps these methods in Gradio; tests and notebooks
call them directly.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from PIL import Image

from sae_explorer import steering
from sae_explorer.atomic import atomic_write_bytes, atomic_write_text
from sae_explorer.corpus import Modality
from sae_explorer.explorer import plots
from sae_explorer.images import check_image, check_text
from sae_explorer.modality_stats import ModalityStats
from sae_explorer.progress import Progress
from sae_explorer.release_names import ReleaseNames
from sae_explorer.sae import SAE
from sae_explorer.steering import Edit

THUMB_PX = 96
DENSE_FREQUENCY = 0.1
"""Latents active on more than this fraction of the corpus count as dense in the overview."""
SWEEP_STRENGTHS = tuple(np.round(np.linspace(0.0, 3.0, 13), 3))
"""Sweep values in units of the latent's largest activation on the corpus."""
DEFAULT_LABELS = ("red", "blue", "green", "yellow", "circle", "square", "triangle")
RELEASE_NAMES_COLUMN = "MSAE names"
"""The column of the SAE release's own names, in latent tables (only when the release has them)."""


class Query(NamedTuple):
    """One input to analyse: its CLIP embedding and how to describe it. Small: fits in gr.State."""

    x_d: np.ndarray  # [n_inputs] float32, raw CLIP embedding
    kind: str  # "image" | "text" | "item"
    description: str
    warnings: tuple[str, ...] = ()
    item: int | None = None  # corpus item index when kind == "item"


class Thumb(NamedTuple):
    fpath: Path  # a small WebP of the corpus image
    caption: str
    latent_id: int
    item: int


class InspectResult(NamedTuple):
    table: pd.DataFrame  # latent, names, activation, level, corpus_level, frequency
    bar: go.Figure
    diagnostics: dict[str, Any]  # cosine, relative_error, l0, level_cosines, input_statistics
    levels_plot: go.Figure
    thumbs: list[Thumb]


class LatentPage(NamedTuple):
    latent_id: int
    summary: dict[str, Any]
    top_images: list[tuple[Path, str]]
    top_texts: pd.DataFrame  # rank, value, text
    quantiles: pd.DataFrame  # quantile, value, modality, label
    quantile_images: list[tuple[Path, str]]
    histogram: go.Figure
    names: pd.DataFrame  # name, score (+ MSAE name, MSAE cosine with release names)
    similar: pd.DataFrame  # latent, cosine, names (+ MSAE names)


class SteerResult(NamedTuple):
    cosine_to_original: float
    edits: pd.DataFrame  # latent, names, before, after
    neighbours_before: pd.DataFrame
    neighbours_after: pd.DataFrame
    images_before: list[tuple[Path, str]]  # nearest corpus images (cosine captions)
    images_after: list[tuple[Path, str]]
    zero_shot: pd.DataFrame  # label, before, after


class SweepResult(NamedTuple):
    figure: go.Figure
    table: pd.DataFrame  # strength, latent, baseline
    baseline_latent: int


class LevelMetrics(NamedTuple):
    cosine_vb: np.ndarray  # [n_levels, b] cosine of x with its level reconstruction
    sq_err_vb: np.ndarray  # [n_levels, b] squared error of the level reconstruction


class Overview(NamedTuple):
    models: pd.DataFrame  # what, id, hash, size
    stats: dict[str, Any]
    frequency_histogram: go.Figure
    levels_plot: go.Figure


@dataclass(frozen=True)
class Sources:
    """What was loaded, for the banner, the overview and export stamps."""

    clip: str
    sae: str
    corpus: str
    note: str = ""
    """Why these sources (e.g. the Hub was unreachable, so the built-in world was loaded)."""
    details: dict[str, Any] = field(default_factory=dict)


class Explorer:
    """Encoder + SAE + activation index, read-only after construction."""

    def __init__(
        self,
        encoder,
        sae,
        index,
        corpus=None,
        sources: Sources | None = None,
        thumbs_dpath: str | Path | None = None,
        release_names: ReleaseNames | None = None,
    ) -> None:
        """``thumbs_dpath``: where gallery thumbnails are written (default: a new temp folder).
        ``release_names``: the SAE release's own names, shown beside ours when given."""
        encoder.check_sae(sae)
        assert index.embeddings.shape[1] == sae.n_inputs, "index built for another CLIP width"
        if release_names is not None and release_names.n_latents != sae.n_latents:
            raise ValueError(
                f"release names are for {release_names.n_latents} latents, the SAE has "
                f"{sae.n_latents}; load the names that ship with this checkpoint"
            )
        self.release_names = release_names
        self.encoder = encoder
        self.sae = sae.eval()
        self.index = index
        self.corpus = corpus
        self.input_stats: ModalityStats = getattr(index, "input_stats", ModalityStats())
        """The statistics each modality went through in the index; queries go through them too."""
        self.saes = self.input_stats.saes(self.sae)
        self.sae_hash = sae.content_hash  # hashing the weights is not free: do it once
        self.sources = sources or Sources(encoder.model_id, self.sae_hash[:12], "?")
        self.n_latents = int(sae.n_latents)
        self.frequency_l = np.asarray(index.frequency, dtype=np.float64)
        self.max_act_l = np.asarray(index.max_act, dtype=np.float64)
        self.mean_act_l = np.asarray(index.mean_act, dtype=np.float64)
        self.levels_l = np.asarray(index.levels, dtype=np.int64)
        self.items = index.items.reset_index(drop=True)
        modality_n = self.items["modality"].to_numpy()
        self._rows = {m: np.flatnonzero(modality_n == m) for m in ("image", "text")}
        with torch.inference_mode():
            self._dictionary_ld = self.sae.get_dictionary().float().cpu()
        self._overview: Overview | None = None
        self.thumbs_dpath = Path(thumbs_dpath or tempfile.mkdtemp(prefix="sae-explorer-thumbs-"))
        self.logit_scale = _logit_scale(encoder)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sources(
        cls,
        clip: str,
        pretrained: str | None,
        sae: str | Path,
        corpus: str,
        cache_dir: str | Path,
        device: str | None = None,
        progress: Progress | None = None,
        max_items: int | None = None,
        note: str = "",
        encoder: Any = None,
        sae_model: Any = None,
        release_names: ReleaseNames | None = None,
    ) -> Explorer:
        """Load models and corpus and build (or load the cached) activation index.

        ``encoder`` and ``sae_model`` skip loading CLIP or the SAE again when the caller already
        has them; ``release_names`` are shown beside the explorer's own names."""
        from sae_explorer.checkpoints import load_sae
        from sae_explorer.corpus import load_corpus
        from sae_explorer.encoder import load_encoder
        from sae_explorer.precompute import PrecomputeConfig, precompute

        _report(progress, 0.0, f"loading CLIP {clip}")
        encoder = encoder or load_encoder(clip, pretrained, device)
        _report(progress, 0.05, f"loading SAE {sae}")
        sae_model = sae_model or load_sae(sae)
        encoder.check_sae(sae_model)
        _report(progress, 0.1, f"loading corpus {corpus}")
        corpus_obj = load_corpus(corpus, max_items=max_items, cache_dpath=cache_dir)

        def sub(fraction: float, message: str) -> None:
            _report(progress, 0.1 + 0.9 * fraction, message)

        # The built-in world's tiny CLIP knows only its own caption words; other English words
        # land anywhere in its space and would crowd out the real names of its latents.
        names_cfg = PrecomputeConfig(n_words=0 if encoder.model_id == "builtin:shapes" else 3000)
        index = precompute(encoder, sae_model, corpus_obj, Path(cache_dir), names_cfg, sub)
        sources = Sources(
            clip=encoder.model_id,
            sae=str(sae),
            corpus=corpus,
            note=note,
            details={"cache_dir": str(cache_dir)},
        )
        return cls(encoder, sae_model, index, corpus_obj, sources, release_names=release_names)

    # ------------------------------------------------------------------ inputs
    def image_query(self, image: Any) -> Query:
        """Validate and encode an upload (path, bytes, PIL or array); ValueError on bad files."""
        checked = check_image(image)
        x_d = self.encoder.encode_images([checked.image])[0]
        w, h = checked.image.size
        return Query(
            x_d.numpy().astype(np.float32), "image", f"uploaded image {w}x{h}", checked.warnings
        )

    def text_query(self, text: str | None) -> Query:
        checked = check_text(text)
        x_d = self.encoder.encode_texts([checked.text])[0]
        shown = checked.text if len(checked.text) <= 80 else checked.text[:77] + "..."
        return Query(x_d.numpy().astype(np.float32), "text", f"text: {shown!r}", checked.warnings)

    def item_query(self, item: int | float | str | None) -> Query:
        i = self.check_item(item)
        row = self.items.iloc[i]
        x_d = np.asarray(self.index.embeddings[i], dtype=np.float32)
        label = _normalise_examples(self.items.iloc[[i]].assign(item=i))["label"].iloc[0]
        return Query(x_d, "item", f"corpus item {i} ({row['modality']}): {label}", (), i)

    def query_modality(self, query: Query) -> Modality:
        """Whether the input is an image or a text (a corpus item: its own modality)."""
        if query.kind == "item":
            assert query.item is not None, "an item query names its item"
            return str(self.items["modality"].iloc[query.item])
        return "image" if query.kind == "image" else "text"

    def sae_for(self, query: Query) -> SAE:
        """The SAE as this input's modality sees it (with that modality's statistics)."""
        return self.saes.of(self.query_modality(query))

    def sae_of(self, modality: Modality | None) -> SAE:
        """The SAE as inputs of ``modality`` see it (None: the checkpoint's statistics)."""
        return self.sae if modality is None else self.saes.of(modality)

    def check_item(self, item: int | float | str | None) -> int:
        n = len(self.items)
        i = _as_int(item, f"corpus item number in [0, {n})")
        if not 0 <= i < n:
            raise ValueError(f"corpus item {i} does not exist; items run from 0 to {n - 1}")
        return i

    def check_latent(self, latent: int | float | str | None) -> int:
        i = _as_int(latent, f"latent id in [0, {self.n_latents})")
        if not 0 <= i < self.n_latents:
            raise ValueError(f"latent {i} does not exist; ids run from 0 to {self.n_latents - 1}")
        return i

    def resolve_latent(self, id_or_name: str | int | float | None) -> int:
        """A latent id, or the best match of a name search ("blue", "striped cat")."""
        text = str(id_or_name if id_or_name is not None else "").strip()
        if not text:
            raise ValueError("give a latent id (e.g. 12) or a name to search for (e.g. blue)")
        if text.lstrip("-").isdigit():
            return self.check_latent(int(text))
        hits = self.search_latents(text, n=1)
        if hits.empty:
            raise ValueError(f"no latent is named like {text!r}; try another word or an id")
        return int(hits.iloc[0]["latent"])

    # ------------------------------------------------------------------ names
    def names_of(self, latent_id: int, n: int = 5) -> list[tuple[str, float]]:
        """Best vocabulary names with scores for one latent (empty if the index has none)."""
        names = getattr(self.index, "names", None)
        if names is None:
            return []
        return [(c.name, c.cosine) for c in names.top(latent_id)[:n]]

    def names_text(self, latent_id: int, n: int = 3) -> str:
        return ", ".join(f"{a} ({b:.2f})" for a, b in self.names_of(latent_id, n))

    def with_release_names(self, table: pd.DataFrame, n: int = 3) -> pd.DataFrame:
        """``table`` (a ``latent`` and a ``names`` column) with the release's names right after
        ours; unchanged when the release has no names."""
        if self.release_names is None:
            return table
        at = list(table.columns).index("names") + 1
        column = [self.release_names.text(int(i), n) for i in table["latent"]]
        table = table.copy()
        table.insert(at, RELEASE_NAMES_COLUMN, column)
        return table

    def names_table(self, latent_id: int, n: int = 10) -> pd.DataFrame:
        """Our names with scores (name, score) and, beside them rank by rank, the release's
        (MSAE name, MSAE cosine) when it has any."""
        ours = pd.DataFrame(self.names_of(latent_id, n), columns=["name", "score"]).round(4)
        if self.release_names is None:
            return ours
        theirs = pd.DataFrame(
            self.release_names.top(latent_id, n), columns=["MSAE name", "MSAE cosine"]
        ).round(4)
        return pd.concat([ours, theirs], axis=1).astype(object).where(lambda df: df.notna(), "")

    def search_latents(self, query: str, n: int = 10) -> pd.DataFrame:
        """Latents whose names match ``query``: DataFrame latent, score, names."""
        from sae_explorer.naming import search_latents

        query = (query or "").strip()
        if not query:
            raise ValueError("type a word to search the latent names for (e.g. blue)")
        hits = search_latents(query, self.encoder, self.saes.text, self.index.names, k=n)
        table = pd.DataFrame(
            {
                "latent": hits["latent_id"].astype(int).to_numpy(),
                "score": hits["score"].astype(np.float64).round(3).to_numpy(),
                "names": [self.names_text(int(i)) for i in hits["latent_id"]],
            },
            columns=["latent", "score", "names"],
        )
        return self.with_release_names(table)

    # ------------------------------------------------------------------ Inspect
    @torch.inference_mode()
    def inspect(self, query: Query, n_top: int = 10, n_thumbs: int = 4) -> InspectResult:
        """Top latents of one input, its reconstruction diagnostics and example thumbnails."""
        x_1d = torch.as_tensor(query.x_d, dtype=torch.float32)[None]
        sae = self.sae_for(query)
        out = sae.forward(x_1d)
        z_l = out.z_bl[0]
        levels_l = sae.latent_levels(out.z_bl)[0]
        n_active = int((z_l > 0).sum())
        top = z_l.argsort(descending=True)[: min(n_top, n_active)].tolist()
        rows = [
            {
                "latent": i,
                "names": self.names_text(i),
                "activation": round(float(z_l[i]), 4),
                "level": int(levels_l[i]),
                "corpus_level": int(self.levels_l[i]),
                "frequency": round(float(self.frequency_l[i]), 4),
            }
            for i in top
        ]
        table = pd.DataFrame(
            rows, columns=["latent", "names", "activation", "level", "corpus_level", "frequency"]
        )
        table = self.with_release_names(table)
        diagnostics = self._diagnostics(x_1d, out.x_hat_bd, n_active, self.query_modality(query))
        thumbs = [t for i in top[:5] for t in self._thumbs(i, n_thumbs)]
        return InspectResult(
            table,
            plots.bar(table),
            diagnostics,
            plots.levels_plot(diagnostics["levels"], diagnostics["level_cosines"]),
            thumbs,
        )

    def _diagnostics(
        self, x_1d: torch.Tensor, x_hat_1d: torch.Tensor, l0: int, modality: Modality
    ) -> dict[str, Any]:
        cosine = float(torch.nn.functional.cosine_similarity(x_1d, x_hat_1d)[0])
        rel_error = float((x_1d - x_hat_1d).norm() / x_1d.norm().clamp_min(1e-12))
        level_cosines = self.level_metrics(x_1d, modality).cosine_vb[:, 0]
        return {
            "cosine": round(cosine, 4),
            "relative_error": round(rel_error, 4),
            "l0": l0,
            "levels": list(self.sae.cfg.levels),
            "level_cosines": [round(c, 4) for c in level_cosines.tolist()],
            "input_statistics": self.input_stats.describe(modality, self.sae.training_modality),
        }

    @torch.inference_mode()
    def level_metrics(self, x_bd: torch.Tensor, modality: Modality | None = None) -> LevelMetrics:
        """Per-sample reconstruction quality at each Matryoshka level (one level for plain SAEs);
        the single definition behind the Inspect diagnostics and the corpus overview. Inputs of
        ``modality`` go through its statistics (None: the checkpoint's)."""
        sae = self.sae_of(modality)
        level_out = sae.level_forward(sae.preprocess(x_bd))
        recons = [sae.postprocess(r) for r in level_out.recons]
        cos = [torch.nn.functional.cosine_similarity(x_bd, r, dim=-1) for r in recons]
        sq_err = [((x_bd - r) ** 2).sum(-1) for r in recons]
        return LevelMetrics(torch.stack(cos).double().numpy(), torch.stack(sq_err).double().numpy())

    def _thumbs(self, latent_id: int, n: int) -> list[Thumb]:
        top = self.top_items(latent_id, n, "image")
        return [
            Thumb(
                self.thumbnail_fpath(int(r.item)),
                f"#{latent_id} · {r.value:.2f}",
                latent_id,
                int(r.item),
            )
            for r in top.itertuples()
        ]

    def thumbnail(self, item: int, px: int = THUMB_PX) -> Image.Image:
        """An indexed image (``item`` is an index row, as everywhere here) shrunk to fit
        ``px`` x ``px``. Read through the index: its rows skip unreadable corpus files, so they
        are not corpus positions."""
        image = self.index.load_image(item).convert("RGB")
        image.thumbnail((px, px))
        return image

    def thumbnail_fpath(self, item: int, px: int = THUMB_PX) -> Path:
        """The thumbnail as a WebP file under :attr:`thumbs_dpath`, written on first use.

        Galleries get file paths rather than images: the web app then serves the same small
        file every time instead of encoding an image per request."""
        fpath = self.thumbs_dpath / str(px) / f"{item}.webp"
        if not fpath.exists():
            fpath.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            self.thumbnail(item, px).save(buf, format="WEBP", quality=90)
            atomic_write_bytes(fpath, buf.getvalue())
        return fpath

    def _top_examples(self, latent_id: int, m: int) -> pd.DataFrame:
        """index.top_examples with the column names used here: item, value, modality, label."""
        df = self.index.top_examples(latent_id, m)
        return _normalise_examples(df)

    def top_items(self, latent_id: int, n: int, modality: str) -> pd.DataFrame:
        """The ``n`` corpus items of one modality where the latent is strongest: item, value,
        modality, label. Recomputed from the stored embeddings (one latent: a matrix-vector
        product), because the index's top list mixes modalities and captions often fill it."""
        rows = self._rows[modality]
        if n <= 0 or rows.size == 0:
            return _normalise_examples(self.index.top_examples(latent_id, 0))
        z_n = self.latent_activations(latent_id, rows, modality)
        order = np.argsort(-z_n, kind="stable")[:n]
        order = order[z_n[order] > 0]
        df = self.items.iloc[rows[order]].reset_index(drop=True)
        df.insert(0, "value", z_n[order])
        df.insert(0, "item", rows[order])
        return _normalise_examples(df)

    @torch.inference_mode()
    def latent_activations(
        self, latent_id: int, rows: np.ndarray, modality: Modality, chunk: int = 65536
    ) -> np.ndarray:
        """Activation of one latent on the stored embeddings of ``rows``, all items of
        ``modality`` (float32 [n]), as the SAE's ``encode`` gives it (with that modality's input
        statistics); only this latent's encoder column is computed unless the SAE selects TopK
        at inference (then whole rows are encoded, in smaller chunks)."""
        sae, out = self.saes.of(modality), []
        if sae.cfg.inference == "topk":
            chunk = min(chunk, max(256, (1 << 24) // sae.n_latents))
        for lo in range(0, len(rows), chunk):
            x_bd = torch.as_tensor(np.asarray(self.index.embeddings[rows[lo : lo + chunk]]))
            z_b1 = sae.latent_activations(x_bd.float().to(sae.device), [latent_id])
            out.append(z_b1[:, 0].float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    # ------------------------------------------------------------------ Latent
    def latent_page(
        self, latent: int | float | str, n_images: int = 12, n_texts: int = 10
    ) -> LatentPage:
        """Everything the Latent tab shows about one latent."""
        latent_id = self.check_latent(latent)
        images = self.top_items(latent_id, n_images, "image")
        texts = self.top_items(latent_id, 4 * n_texts, "text")
        texts = texts.drop_duplicates("label").head(n_texts)  # captions repeat in a corpus
        top_images = [
            (self.thumbnail_fpath(int(r.item), 128), f"{r.value:.3f}") for r in images.itertuples()
        ]
        top_texts = pd.DataFrame(
            {
                "value": texts["value"].astype(np.float64).round(4).to_numpy(),
                "text": texts["label"].to_numpy(),
            }
        )
        quant = _normalise_examples(self.index.quantile_samples(latent_id))
        quantiles = pd.DataFrame(
            {
                "quantile_bin": quant["bin"].to_numpy(),
                "value": quant["value"].astype(np.float64).round(4).to_numpy(),
                "modality": quant["modality"].to_numpy(),
                "label": quant["label"].to_numpy(),
            }
        )
        quantile_images = [
            (self.thumbnail_fpath(int(r.item)), f"{r.value:.3f}")
            for r in quant.itertuples()
            if r.modality == "image"
        ]
        counts, edges = self.index.histogram(latent_id)
        names = self.names_table(latent_id, 10)
        dead = bool(self.frequency_l[latent_id] == 0)
        image_fraction = 0.0 if dead else float(np.asarray(self.index.image_fraction)[latent_id])
        level = int(self.levels_l[latent_id])
        nesting = self.sae.nesting_list
        summary = {
            "latent": latent_id,
            "names": self.names_text(latent_id, 5),
            "frequency": float(self.frequency_l[latent_id]),
            "mean_activation": float(self.mean_act_l[latent_id]),
            "max_activation": float(self.max_act_l[latent_id]),
            "image_fraction": image_fraction,
            "text_fraction": 0.0 if dead else 1.0 - image_fraction,
            "level": level,
            "level_k": int(nesting[level]) if nesting and 0 <= level < len(nesting) else None,
            "dead": dead,
        }
        if self.release_names is not None:
            summary["msae_names"] = self.release_names.text(latent_id, 5)
        return LatentPage(
            latent_id,
            summary,
            top_images,
            top_texts,
            quantiles,
            quantile_images,
            plots.histogram(counts, edges, latent_id),
            names,
            self.similar_latents(latent_id),
        )

    def similar_latents(self, latent_id: int, n: int = 8) -> pd.DataFrame:
        """Latents whose decoder directions are closest (cosine) to this one's."""
        latent_id = self.check_latent(latent_id)
        cos_l = self._dictionary_ld @ self._dictionary_ld[latent_id]
        cos_l[latent_id] = -math.inf
        values, ids = cos_l.topk(min(n, self.n_latents - 1))
        table = pd.DataFrame(
            {
                "latent": ids.tolist(),
                "cosine": np.round(values.double().numpy(), 4),
                "names": [self.names_text(int(i)) for i in ids],
            }
        )
        return self.with_release_names(table)

    # ------------------------------------------------------------------ Steer
    def top_latents(self, query: Query, n: int = 6) -> pd.DataFrame:
        """The input's strongest latents with their value and slider range: latent, names, value, max."""
        x_1d = torch.as_tensor(query.x_d, dtype=torch.float32)[None]
        z_l = steering.latents(self.sae_for(query), x_1d)[0]
        n_active = int((z_l > 0).sum())
        top = z_l.argsort(descending=True)[: min(n, n_active)].tolist()
        table = pd.DataFrame(
            [
                {
                    "latent": i,
                    "names": self.names_text(i, 2),
                    "value": float(z_l[i]),
                    "max": self.slider_max(i, float(z_l[i])),
                }
                for i in top
            ],
            columns=["latent", "names", "value", "max"],
        )
        return self.with_release_names(table, 2)

    def slider_max(self, latent_id: int, value: float = 0.0) -> float:
        """A slider range covering the latent's corpus maximum and the current value, with room."""
        return float(max(3.0 * self.max_act_l[latent_id], 2.0 * value, 1e-3))

    def relative_edit(self, latent: int | float | str, op: str, strength: float) -> Edit:
        """An edit whose ``set`` strength is in units of the latent's corpus maximum activation
        (1 = as strong as its strongest corpus example); ``scale`` is a plain factor."""
        latent_id = self.resolve_latent(latent)
        edit = steering.check_edit(Edit(latent_id, op, strength), self.n_latents)
        if edit.op == "set":
            unit = self.max_act_l[latent_id] if self.max_act_l[latent_id] > 0 else 1.0
            edit = edit._replace(value=float(edit.value * unit))
        return edit

    def steer(
        self,
        query: Query,
        edits: Sequence[Edit],
        labels: Sequence[str] = DEFAULT_LABELS,
        k: int = 8,
    ) -> SteerResult:
        """Decode the edited latents; compare neighbours and zero-shot scores before/after."""
        edits = [steering.check_edit(Edit(*e), self.n_latents) for e in edits]
        labels = check_labels(labels)
        x_d = torch.as_tensor(query.x_d, dtype=torch.float32)
        out = steering.steer(self.sae_for(query), x_d, edits)
        cosine = float(torch.nn.functional.cosine_similarity(out.x_steered_d, x_d, dim=0))
        changed = sorted(
            {
                e.latent_id
                for e in edits
                if out.z_before_l[e.latent_id] != out.z_after_l[e.latent_id]
            }
        )
        edit_table = pd.DataFrame(
            {
                "latent": changed,
                "names": [self.names_text(i, 2) for i in changed],
                "before": [round(float(out.z_before_l[i]), 4) for i in changed],
                "after": [round(float(out.z_after_l[i]), 4) for i in changed],
            },
            columns=["latent", "names", "before", "after"],
        )
        before = self.neighbours(x_d, k)
        after = self.neighbours(out.x_steered_d, k)
        probs_2n = steering.zero_shot(
            torch.stack([x_d, out.x_steered_d]),
            self.label_embeddings(tuple(labels)),
            self.logit_scale,
        )
        zero_shot = pd.DataFrame(
            {
                "label": labels,
                "before": np.round(probs_2n[0].double().numpy(), 4),
                "after": np.round(probs_2n[1].double().numpy(), 4),
            }
        )
        return SteerResult(
            round(cosine, 4),
            edit_table,
            before,
            after,
            self._neighbour_images(self.neighbours(x_d, k, "image")),
            self._neighbour_images(self.neighbours(out.x_steered_d, k, "image")),
            zero_shot,
        )

    def neighbours(
        self, x_d: torch.Tensor | np.ndarray, k: int = 8, modality: str | None = None
    ) -> pd.DataFrame:
        """Nearest corpus items by cosine (of one modality if given): item, cosine, modality, label."""
        x_d = np.asarray(x_d, dtype=np.float32)
        nearest = self.index.nearest(x_d, k, modality)
        df = _normalise_examples(nearest.rename(columns={"similarity": "value"}))
        return pd.DataFrame(
            {
                "item": df["item"].astype(int).to_numpy(),
                "cosine": df["value"].astype(np.float64).round(4).to_numpy(),
                "modality": df["modality"].to_numpy(),
                "label": df["label"].to_numpy(),
            }
        )

    def _neighbour_images(self, df: pd.DataFrame) -> list[tuple[Path, str]]:
        rows = df[df["modality"] == "image"]
        return [(self.thumbnail_fpath(int(r.item)), f"{r.cosine:.3f}") for r in rows.itertuples()]

    @functools.lru_cache(maxsize=256)  # noqa: B019 (label lists repeat across requests)
    def label_embeddings(self, labels: tuple[str, ...]) -> torch.Tensor:
        return self.encoder.encode_texts(list(labels))

    def sweep(
        self,
        query: Query,
        latent: int | float | str,
        target: str,
        labels: Sequence[str] = DEFAULT_LABELS,
        strengths: Sequence[float] = SWEEP_STRENGTHS,
        seed: int = 0,
    ) -> SweepResult:
        """Target-label zero-shot score as one latent is set to growing strengths, next to the
        same sweep for a random latent of similar corpus frequency (the baseline)."""
        latent_id = self.resolve_latent(latent)
        labels = check_labels(labels)
        target = (target or "").strip()
        if target not in labels:
            raise ValueError(f"the target label {target!r} must be one of the labels {labels}")
        strengths = [float(s) for s in strengths]
        if not strengths or not all(math.isfinite(s) and abs(s) <= 100 for s in strengths):
            raise ValueError("sweep strengths must be finite numbers between -100 and 100")
        baseline = self.similar_frequency_latent(latent_id, seed)
        x_d = torch.as_tensor(query.x_d, dtype=torch.float32)
        label_nd = self.label_embeddings(tuple(labels))
        t = labels.index(target)
        sae = self.sae_for(query)
        curves = {}
        for name, i in (("latent", latent_id), ("baseline", baseline)):
            unit = self.max_act_l[i] if self.max_act_l[i] > 0 else 1.0
            x_vd = steering.strength_sweep(sae, x_d, i, [s * unit for s in strengths])
            curves[name] = steering.zero_shot(x_vd, label_nd, self.logit_scale)[:, t].numpy()
        table = pd.DataFrame(
            {
                "strength": strengths,
                "latent": np.round(curves["latent"].astype(np.float64), 4),
                "baseline": np.round(curves["baseline"].astype(np.float64), 4),
            }
        )
        return SweepResult(plots.sweep_plot(table, latent_id, baseline, target), table, baseline)

    def similar_frequency_latent(self, latent_id: int, seed: int = 0) -> int:
        """A random other live latent among the 20 closest in log corpus frequency."""
        live = np.flatnonzero(self.frequency_l > 0)
        live = live[live != latent_id]
        if live.size == 0:
            return (latent_id + 1) % self.n_latents
        f = max(self.frequency_l[latent_id], 1e-9)
        gap = np.abs(np.log(self.frequency_l[live]) - np.log(f))
        pool = live[np.argsort(gap, kind="stable")[:20]]
        return int(np.random.default_rng([seed, latent_id]).choice(pool))

    # ------------------------------------------------------------------ Overview
    def overview(self, batch_size: int = 512) -> Overview:
        """Models, corpus and whole-corpus SAE quality (computed once, then cached)."""
        if self._overview is None:
            self._overview = self._compute_overview(batch_size)
        return self._overview

    @torch.inference_mode()
    def _compute_overview(self, batch_size: int) -> Overview:
        x_nd = torch.as_tensor(np.asarray(self.index.embeddings, dtype=np.float32))
        n = x_nd.shape[0]
        assert n > 0, "empty corpus"
        sq_err, l0_sum = 0.0, 0.0
        level_sq_err = level_cos_sum = np.zeros(len(self.sae.cfg.levels))
        total_var = float(((x_nd - x_nd.mean(0)) ** 2).sum())
        for x_bd, modality in self._overview_batches(x_nd, batch_size):
            out = self.sae_of(modality).forward(x_bd)
            sq_err += float(((x_bd - out.x_hat_bd) ** 2).sum())
            l0_sum += float((out.z_bl > 0).sum())
            metrics = self.level_metrics(x_bd, modality)
            level_sq_err = level_sq_err + metrics.sq_err_vb.sum(1)
            level_cos_sum = level_cos_sum + metrics.cosine_vb.sum(1)
        levels = list(self.sae.cfg.levels)
        level_fvu = level_sq_err / max(total_var, 1e-12)
        level_cos = level_cos_sum / n
        dead = int((self.frequency_l == 0).sum())
        dense = int((self.frequency_l > DENSE_FREQUENCY).sum())
        stats = {
            "n_items": n,
            "n_images": int((self.items["modality"] == "image").sum()),
            "n_texts": int((self.items["modality"] == "text").sum()),
            "n_latents": self.n_latents,
            "l0": l0_sum / n,
            "fvu": sq_err / max(total_var, 1e-12),
            "dead_latents": dead,
            "dense_latents": dense,
            "dense_threshold": DENSE_FREQUENCY,
            "levels": levels,
            "level_fvu": [float(v) for v in level_fvu],
            "level_cosine": [float(v) for v in level_cos],
            "input_statistics": self.input_stats.manifest(),
        }
        manifest = getattr(self.index, "manifest", {}) or {}
        corpus_hash = self.corpus_hash()
        models = pd.DataFrame(
            [
                {
                    "what": "CLIP",
                    "id": self.encoder.model_id,
                    "hash": "",
                    "size": f"{self.encoder.embed_dim}-d",
                },
                {
                    "what": "SAE",
                    "id": self.sources.sae,
                    "hash": self.sae_hash[:16],
                    "size": f"{self.sae.n_inputs} -> {self.n_latents} ({self.sae.cfg.architecture}, "
                    f"levels {levels})",
                },
                {
                    "what": "corpus",
                    "id": self.sources.corpus,
                    "hash": corpus_hash[:16],
                    "size": f"{n} items",
                },
                {
                    "what": "index",
                    "id": str(getattr(self.index, "dpath", "")),
                    "hash": str(manifest.get("key", ""))[:16],
                    "size": f"{n} x {self.n_latents}",
                },
            ]
        )
        freq_fig = plots.frequency_histogram(self.frequency_l)
        levels_fig = plots.levels_plot(
            levels,
            list(level_cos),
            fvu=list(level_fvu),
            title="Corpus reconstruction per Matryoshka level",
        )
        return Overview(models, stats, freq_fig, levels_fig)

    def _overview_batches(
        self, x_nd: torch.Tensor, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, Modality | None]]:
        """Batches of the corpus embeddings with the modality whose statistics they go through:
        in corpus order when both modalities share the checkpoint's (None), else per modality."""
        if self.saes.shared:
            for start in range(0, len(x_nd), batch_size):
                yield x_nd[start : start + batch_size], None
            return
        for modality, rows in self._rows.items():
            for start in range(0, len(rows), batch_size):
                yield x_nd[torch.from_numpy(rows[start : start + batch_size])], modality

    def corpus_hash(self) -> str:
        if self.corpus is not None and getattr(self.corpus, "manifest_hash", None):
            return str(self.corpus.manifest_hash)
        manifest = getattr(self.index, "manifest", {}) or {}
        return str(manifest.get("corpus_hash", manifest.get("manifest_hash", "")))

    # ------------------------------------------------------------------ export
    def stamp(self) -> dict[str, Any]:
        """Provenance written into every export."""
        return {
            "clip": self.encoder.model_id,
            "sae": self.sources.sae,
            "sae_hash": self.sae_hash,
            "corpus": self.sources.corpus,
            "corpus_hash": self.corpus_hash(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def export_latent(
        self, latent: int | float | str, dpath: str | Path, fmt: str = "json"
    ) -> Path:
        """Write the latent page (without images) as JSON or CSV into ``dpath``."""
        page = self.latent_page(latent)
        tables = {
            "top_texts": page.top_texts,
            "top_items": self._top_examples(page.latent_id, 50),
            "quantiles": page.quantiles,
            "names": page.names,
            "similar": page.similar,
        }
        return self._export(f"latent-{page.latent_id}", page.summary, tables, dpath, fmt)

    def export_inspect(self, query: Query, dpath: str | Path, fmt: str = "json") -> Path:
        """Write one input's analysis (top latents, diagnostics) as JSON or CSV into ``dpath``."""
        result = self.inspect(query, n_top=32, n_thumbs=0)
        summary = {"input": query.description, "kind": query.kind, **result.diagnostics}
        # Named by the input, so different inputs exported into one folder never overwrite
        # each other (and exporting the same input again reuses its file).
        digest = hashlib.sha256(np.ascontiguousarray(query.x_d, np.float32).tobytes())
        stem = f"inspect-{digest.hexdigest()[:10]}"
        return self._export(stem, summary, {"top_latents": result.table}, dpath, fmt)

    def _export(
        self, stem: str, summary: dict, tables: dict[str, pd.DataFrame], dpath: str | Path, fmt: str
    ) -> Path:
        if fmt not in ("json", "csv"):
            raise ValueError(f"unknown export format {fmt!r}; choose 'json' or 'csv'")
        dpath = Path(dpath)
        dpath.mkdir(parents=True, exist_ok=True)
        stamp = self.stamp()
        if fmt == "json":
            payload = {
                "stamp": stamp,
                "summary": _jsonable(summary),
                **{name: json.loads(df.to_json(orient="records")) for name, df in tables.items()},
            }
            text = json.dumps(payload, indent=1)
        else:
            header = "".join(f"# {k}: {v}\n" for k, v in {**stamp, **_jsonable(summary)}.items())
            parts = [header]
            for name, df in tables.items():
                parts.append(f"# table: {name}\n")
                parts.append(df.assign(table=name).to_csv(index=False))
            text = "".join(parts)
        return atomic_write_text(dpath / f"{stem}-{stamp['sae_hash'][:8]}.{fmt}", text)


# ---------------------------------------------------------------------- helpers


def _logit_scale(encoder: Any) -> float:
    """The CLIP model's own zero-shot temperature (OpenAI CLIP: 100), capped at 100."""
    param = getattr(getattr(encoder, "model", None), "logit_scale", None)
    if param is None:
        return steering.CLIP_LOGIT_SCALE
    return float(min(float(param.detach().float().exp()), steering.CLIP_LOGIT_SCALE))


def check_labels(labels: Sequence[str] | str) -> list[str]:
    """Zero-shot labels from a list or a comma-separated string; 2 to 50 distinct non-empty ones."""
    if isinstance(labels, str):
        labels = labels.split(",")
    out = list(dict.fromkeys(s.strip()[:200] for s in labels if s and s.strip()))
    if not 2 <= len(out) <= 50:
        raise ValueError(
            f"give between 2 and 50 distinct labels separated by commas (got {len(out)})"
        )
    return out


def _as_int(value: Any, what: str) -> int:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"give a {what}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number; give a {what}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{value!r} is not a whole number; give a {what}")
    return int(f)


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(fraction, message)


def _normalise_examples(df: pd.DataFrame) -> pd.DataFrame:
    """Name the item-index column ``item`` and give every row a display ``label``: the text
    itself for text items, the label (else the file name) for images."""
    df = df.rename(columns={"item_idx": "item"})
    assert "item" in df.columns, f"no item column in {list(df.columns)}"
    labels = df["label"] if "label" in df.columns else pd.Series([None] * len(df), index=df.index)
    df["label"] = [
        str(src)
        if modality == "text"
        else (str(label) if isinstance(label, str) and label else Path(str(src)).name)
        for modality, src, label in zip(df["modality"], df["source"], labels)
    ]
    return df


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
