"""Figures for papers: a latent's card, or a grid of several latents' cards, as PNG (300 dpi), SVG
or PDF, drawn with matplotlib (no browser, no display).

A card holds the latent's strongest corpus images with their activations and labels (its
strongest texts when the corpus has no image it fires on), its names with their scores (the
detection AUROC of :mod:`sae_explorer.name_scores`, the floor marked), its activation histogram
and the label mix of its top examples. Every figure is stamped with what produced it (CLIP, the
SAE's content hash, the corpus hash, the index key, the time: the export
:class:`~sae_explorer.explorer.export.Stamp`) and each latent's permalink (``?tab=latent&latent=N``,
the link the app opens); the stamp is also written into the file's metadata. Text stays text
in SVG and PDF (fonts embedded as TrueType), so a figure's words can be searched and edited.

CLI: ``python -m sae_explorer figure --latents 12,87 --demo --out figures``; ``--help`` lists
the options (the app's own: ``--clip``, ``--sae``, ``--corpus``, ...).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args
from urllib.parse import urlencode

import numpy as np
import pandas as pd

from sae_explorer.atomic import atomic_write_bytes
from sae_explorer.cli import add_dataclass_args, dataclass_from_args
from sae_explorer.startup_config import StartupConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure
    from PIL import Image

    from sae_explorer.explorer import Explorer
    from sae_explorer.explorer.export import Stamp

FigureFormat = Literal["png", "svg", "pdf"]
FIGURE_FORMATS: tuple[FigureFormat, ...] = get_args(FigureFormat)
DPI = 300
CARD_SIZE_IN = (7.0, 3.8)
"""Width and height of one card in inches (a two-column paper's full text width is ~7 in)."""
N_IMAGES = 8
N_NAMES = 5
N_LABELS = 6
N_TOP_EXAMPLES = 32
"""Top examples whose labels make the label mix (the index keeps 32 per latent by default)."""
MAX_LATENTS = 24
STAMP_HEIGHT_IN = 0.22
"""The strip under the cards holding the stamp."""


class CardData(NamedTuple):
    """What one latent's card shows."""

    latent_id: int
    title: str  # "Latent 12: red (0.93), orange (0.81)"
    stats: str  # frequency, mean and max activation, Matryoshka level
    images: list[tuple[Image.Image, float, str]]  # strongest images: image, activation, label
    texts: list[tuple[str, float]]  # strongest texts (shown when there is no image)
    names: pd.DataFrame  # name, score (+ named) best first
    score_name: str  # "AUROC" or "cosine"
    histogram: tuple[np.ndarray, np.ndarray]  # counts, edges
    label_mix: pd.Series  # label -> count among the top examples, most common first
    permalink: str


class FigureFiles(NamedTuple):
    latents: tuple[int, ...]
    paths: tuple[Path, ...]  # one per format, in the order asked


def permalink(latent_id: int) -> str:
    """The link that opens the latent in the app (as ``explorer_ui.latent_tab.latent_link``)."""
    return "?" + urlencode({"tab": "latent", "latent": int(latent_id)})


def stamp_text(stamp: Stamp) -> str:
    """The stamp as one line of ASCII (PDF metadata keeps ASCII as it is): models and data by
    their hashes, and the time."""
    corpus = f"corpus {stamp.corpus}" + (
        f" ({stamp.corpus_hash[:12]})" if stamp.corpus_hash else ""
    )
    return (
        f"CLIP {stamp.clip} | SAE {stamp.sae} ({stamp.sae_hash[:12]}) | {corpus} | "
        f"index {stamp.index_key[:12]} | {stamp.exported_at}"
    )


# --------------------------------------------------------------------------- data
def card_data(explorer: Explorer, latent: int | str, n_images: int = N_IMAGES) -> CardData:
    """Everything a card shows about one latent, read from the explorer."""
    from sae_explorer.explorer import examples, latent_page, names

    latent_id = explorer.check_latent(latent)
    s = latent_page.summary(explorer, latent_id)
    texts = latent_page.top_texts(explorer, latent_id, n_images)
    images = examples.top_items(explorer, latent_id, n_images, "image")
    table = names.candidates_table(explorer, latent_id, N_NAMES)
    score_name = "AUROC" if "AUROC" in table.columns else "cosine"
    level = "never kept" if s.level < 0 else f"level {s.level} (k={s.level_k})"
    top = examples.top_examples(explorer, latent_id, N_TOP_EXAMPLES)
    labelled = (
        explorer.items.iloc[top["item"]]["label"] if len(top) else pd.Series([], dtype=object)
    )
    return CardData(
        latent_id=latent_id,
        title=f"Latent {latent_id}: {s.names or 'no names'}",
        stats=(
            f"frequency {s.frequency:.4f} · mean {s.mean_activation:.3f} · max "
            f"{s.max_activation:.3f} · images {s.image_fraction:.0%} · Matryoshka {level}"
            + (" · dead on this corpus" if s.dead else "")
        ),
        images=[
            (explorer.index.load_image(int(r.item)), float(r.value), str(r.label))
            for r in images.itertuples()
        ],
        texts=list(zip(texts["text"], texts["value"])),
        names=table.rename(columns={score_name: "score"}),
        score_name=score_name,
        histogram=tuple(explorer.index.histogram(latent_id)),
        label_mix=labelled.dropna().astype(str).loc[lambda x: x != ""].value_counts(),
        permalink=permalink(latent_id),
    )


# --------------------------------------------------------------------------- drawing
def draw_card(fig: Figure | SubFigure, card: CardData) -> None:
    """One card into ``fig`` (a figure or a subfigure of a grid)."""
    n_cols = max(len(card.images), 1)
    grid = fig.add_gridspec(
        2, n_cols, height_ratios=[1.0, 1.5], hspace=0.45, wspace=0.08, top=0.84, bottom=0.12
    )
    fig.suptitle(
        f"{card.title}\n{card.stats}", fontsize=8.5, x=0.02, ha="left", y=0.99, parse_math=False
    )
    if card.images:
        for col, (image, value, label) in enumerate(card.images):
            ax = fig.add_subplot(grid[0, col])
            ax.imshow(np.asarray(image.convert("RGB")), interpolation="lanczos")
            ax.set_axis_off()
            ax.set_title(f"{value:.3f}\n{label[:14]}", fontsize=6, pad=2, parse_math=False)
    else:
        ax = fig.add_subplot(grid[0, :])
        ax.set_axis_off()
        lines = [f"{v:.3f}  {t[:90]}" for t, v in card.texts[:6]] or ["(no active item)"]
        ax.text(
            0, 1, "Strongest texts\n" + "\n".join(lines), va="top", fontsize=6.5, parse_math=False
        )
    bottom = grid[1, :].subgridspec(1, 3, wspace=0.65)
    _draw_names(fig.add_subplot(bottom[0, 0]), card)
    _draw_histogram(fig.add_subplot(bottom[0, 1]), card)
    _draw_label_mix(fig.add_subplot(bottom[0, 2]), card)
    fig.text(0.02, 0.005, card.permalink, fontsize=5.5, color="0.35", va="bottom", parse_math=False)


def _draw_names(ax, card: CardData) -> None:
    from sae_explorer.name_scores import AUROC_FLOOR

    names = card.names.iloc[::-1]  # best at the top
    named = names["named"] if "named" in names.columns else pd.Series(True, index=names.index)
    colours = ["tab:blue" if ok else "0.7" for ok in named]
    ax.barh(np.arange(len(names)), names["score"], color=colours)
    ax.set_yticks(np.arange(len(names)), names["name"], fontsize=6, parse_math=False)
    ax.set_title(f"names ({card.score_name})", fontsize=7)
    if card.score_name == "AUROC":
        ax.set_xlim(0.0, 1.0)
        ax.axvline(AUROC_FLOOR, color="tab:red", lw=0.8, ls="--")
    ax.tick_params(axis="x", labelsize=6)


def _draw_histogram(ax, card: CardData) -> None:
    counts, edges = card.histogram
    ax.set_title("activation histogram", fontsize=7)
    if len(counts):
        ax.stairs(counts, edges, fill=True, color="tab:blue")
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "never active", ha="center", va="center", fontsize=6)
    ax.set_xlabel("activation", fontsize=6)
    ax.set_ylabel("items", fontsize=6)
    ax.tick_params(labelsize=6)


def _draw_label_mix(ax, card: CardData) -> None:
    mix = card.label_mix.head(N_LABELS)
    total = int(card.label_mix.sum())
    ax.set_title(f"labels of the top {total} examples", fontsize=7)
    if total == 0:
        ax.text(0.5, 0.5, "no labels in this corpus", ha="center", va="center", fontsize=6)
        ax.set_axis_off()
        return
    shares = mix.iloc[::-1] / total
    ax.barh(np.arange(len(shares)), shares.to_numpy(), color="tab:green")
    labels = [str(s)[:16] for s in shares.index]
    ax.set_yticks(np.arange(len(shares)), labels, fontsize=6, parse_math=False)
    ax.set_xlim(0.0, 1.0)
    ax.tick_params(axis="x", labelsize=6)


def latent_figure(
    explorer: Explorer,
    latents: Sequence[int],
    n_images: int = N_IMAGES,
    n_columns: int = 2,
    stamp: Stamp | None = None,
) -> Figure:
    """A card (one latent) or a grid of cards (several, ``n_columns`` wide), stamped with
    ``stamp`` (default: the explorer's, now)."""
    from matplotlib.figure import Figure

    latents = check_latents(explorer, latents)
    if n_columns < 1:
        raise ValueError(f"n_columns must be >= 1, got {n_columns}")
    n_cols = min(n_columns, len(latents))
    n_rows = -(-len(latents) // n_cols)
    width, height = CARD_SIZE_IN
    fig = Figure(figsize=(width * n_cols, height * n_rows + STAMP_HEIGHT_IN), dpi=DPI)
    cards, strip = fig.subfigures(2, 1, height_ratios=[height * n_rows, STAMP_HEIGHT_IN])
    for subfig, latent in zip(cards.subfigures(n_rows, n_cols, squeeze=False).ravel(), latents):
        draw_card(subfig, card_data(explorer, latent, n_images))
    stamp = stamp or explorer.stamp()
    strip.text(
        0.01, 0.5, stamp_text(stamp), fontsize=5, color="0.35", va="center", parse_math=False
    )
    return fig


def check_latents(explorer: Explorer, latents: Sequence[int | str]) -> list[int]:
    """The latent ids, checked; ValueError for none, too many or one out of range."""
    if not latents:
        raise ValueError("give at least one latent id (e.g. 12 or 12,87)")
    if len(latents) > MAX_LATENTS:
        raise ValueError(f"{len(latents)} latents in one figure; at most {MAX_LATENTS}")
    return [explorer.check_latent(latent) for latent in latents]


# --------------------------------------------------------------------------- files
def save_figure(
    fig: Figure, stem_fpath: Path, formats: Sequence[str], metadata_text: str
) -> tuple[Path, ...]:
    """``fig`` written as ``stem_fpath.<format>`` for each format (atomically), its stamp in
    each file's metadata; PNGs at ``DPI``."""
    import matplotlib

    formats = check_formats(formats)
    stem_fpath.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "png": {"Description": metadata_text, "Software": "sae-explorer"},
        "svg": {"Description": metadata_text, "Date": None},
        "pdf": {"Subject": metadata_text, "Creator": "sae-explorer"},
    }
    paths = []
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        for fmt in formats:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, dpi=DPI, metadata=meta[fmt])
            paths.append(atomic_write_bytes(stem_fpath.with_suffix(f".{fmt}"), buffer.getvalue()))
    return tuple(paths)


def check_formats(formats: Sequence[str]) -> list[FigureFormat]:
    chosen = [str(f).strip().lower().lstrip(".") for f in formats if str(f).strip()]
    bad = sorted(set(chosen) - set(FIGURE_FORMATS))
    if bad or not chosen:
        raise ValueError(f"figure formats {bad or '(none)'}; choose from {list(FIGURE_FORMATS)}")
    return list(dict.fromkeys(chosen))  # type: ignore[arg-type]


def export_figure(
    explorer: Explorer,
    latents: Sequence[int | str],
    dpath: str | Path,
    formats: Sequence[str] = FIGURE_FORMATS,
    n_images: int = N_IMAGES,
    n_columns: int = 2,
) -> FigureFiles:
    """The card (one latent) or grid (several) written into ``dpath`` in each format, named by
    the latents and the SAE hash: ``latent-12-<sae>.png``, ``latents-12-87-<sae>.pdf``."""
    check_formats(formats)
    ids = check_latents(explorer, latents)
    stamp = explorer.stamp()
    fig = latent_figure(explorer, ids, n_images, n_columns, stamp)
    kind = "latent" if len(ids) == 1 else "latents"
    stem = f"{kind}-{'-'.join(map(str, ids))}-{explorer.sae_hash[:8]}"
    links = " ".join(permalink(i) for i in ids)
    text = f"{stamp_text(stamp)} | {links}"
    return FigureFiles(tuple(ids), save_figure(fig, Path(dpath) / stem, formats, text))


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer figure",
        description="Draw latent cards (one latent) or a grid (several) as PNG, SVG and PDF, "
        "stamped with the models' and corpus's hashes and each latent's permalink.",
    )
    parser.add_argument("--latents", required=True, help="latent ids, comma-separated (e.g. 12,87)")
    parser.add_argument("--out", default="figures", help="folder for the files (default figures)")
    parser.add_argument(
        "--formats", default="png,svg,pdf", help="comma-separated: png, svg, pdf (default all)"
    )
    parser.add_argument("--n-images", type=int, default=N_IMAGES, help="top images per card")
    parser.add_argument("--columns", type=int, default=2, help="cards per row of a grid")
    add_dataclass_args(parser, StartupConfig)
    return parser


def parse_latents(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--latents takes whole numbers separated by commas, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from sae_explorer.explorer_startup import load_explorer

    try:
        latents = parse_latents(args.latents)
        formats = check_formats(args.formats.split(","))
        cfg = dataclass_from_args(StartupConfig, args)
        with tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(frac: float, msg: str) -> None:
                bar.n = int(1000 * frac)
                bar.set_description(msg[:60], refresh=False)
                bar.refresh()

            explorer = load_explorer(cfg, progress)
        if explorer.sources.note:
            print(f"note: {explorer.sources.note}", file=sys.stderr)
        files = export_figure(explorer, latents, args.out, formats, args.n_images, args.columns)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for fpath in files.paths:
        print(fpath)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
