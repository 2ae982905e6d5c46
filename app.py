"""SAE explorer web app: inspect an input, browse latents, steer, and see the SAE's overview.

``python app.py`` serves the default setup (OpenAI CLIP ViT-L/14 + the matching released MSAE
over a small Hub corpus), falling back to the built-in shapes world when the Hub is unreachable;
``python app.py --demo`` serves the built-in world directly. ``python app.py --help`` lists the
flags; each has a ``SAE_EXPLORER_*`` environment variable for Hugging Face Spaces.

This file is layout and wiring only: every handler calls one method of
:class:`sae_explorer.explorer.Explorer` and turns its ``ValueError`` into a ``gr.Error``.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import html
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import gradio as gr
import pandas as pd

from sae_explorer.explorer import DEFAULT_LABELS, Explorer, OverviewStats, Query
from sae_explorer.explorer_startup import StartupError, load_explorer
from sae_explorer.startup_config import ENV_PREFIX, StartupConfig, config_from_env
from sae_explorer.steering import OPS, Edit

logger = logging.getLogger("sae_explorer.app")

N_SLIDERS = 6
SLIDER_DECIMALS = 3
SLIDER_STEP = 10.0**-SLIDER_DECIMALS
DEFAULT_CONCURRENCY = 2
"""Requests served at once; the models are CPU/GPU-bound, so more only adds queueing jitter."""
TABS = ("inspect", "latent", "steer", "overview")
CSS = """
.banner {padding: 6px 12px; border-radius: 6px; background: #eef3ff; font-size: 0.9em}
.banner.fallback {background: #fff4d6; border: 1px solid #e0b000}
"""


class UploadedImage(gr.Image):
    """``gr.Image`` that hands the handler the uploaded file's path without opening it, so the
    library's validator (pixel limit, corrupt files, odd modes) gives the user a clear message
    instead of PIL failing inside Gradio."""

    is_template = True  # render with gr.Image's own frontend (as Gradio's ClearButton does)

    def preprocess(self, payload):  # type: ignore[override]
        if payload is None or (payload.url and payload.url.startswith("data:")):
            return super().preprocess(payload)
        return payload.path


def user_errors(fn: Callable) -> Callable:
    """Show a user mistake (``ValueError`` from the library) as a ``gr.Error`` popup."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e

    return wrapper


def warn(query: Query) -> None:
    for message in query.warnings:
        gr.Warning(message)


def loaded_summary(explorer: Explorer) -> str:
    """One line naming what is loaded (for the banner and the log)."""
    s, sae = explorer.sources, explorer.sae
    return (
        f"CLIP {explorer.encoder.model_id} · SAE {s.sae} ({sae.n_inputs}→{sae.n_latents}, "
        f"{sae.cfg.architecture}, {explorer.sae_hash[:10]}) · corpus {s.corpus} "
        f"({len(explorer.items)} items)"
    )


def banner_html(explorer: Explorer) -> str:
    text = html.escape(loaded_summary(explorer))
    note = explorer.sources.note
    if note:
        return f'<div class="banner fallback" id="banner">⚠ {html.escape(note)}<br>{text}</div>'
    return f'<div class="banner" id="banner">{text}</div>'


THUMBS_CSS = """
.thumbs {display: flex; flex-wrap: wrap; gap: 6px; min-height: 40px}
.thumbs figure {margin: 0; text-align: center; font-size: 11px}
.thumbs img {width: 96px; height: 96px; object-fit: contain; border-radius: 4px;
  background: #f4f4f4; display: block}
.thumbs.clickable figure {cursor: pointer}
.thumbs.clickable figure:hover img {outline: 2px solid #3b6fd4}
"""
THUMBS_CLICK_JS = """
element.addEventListener('click', (event) => {
  const figure = event.target.closest('[data-latent]');
  if (figure) trigger('click', {latent: Number(figure.dataset.latent)});
});
"""


def thumbs_component(elem_id: str, clickable: bool = False) -> gr.HTML:
    """A grid of thumbnails (plain HTML: the files are static, nothing is re-encoded or copied
    per request, unlike ``gr.Gallery``); clickable grids report ``data-latent`` of the item."""
    return gr.HTML(
        thumbs_html([]),
        elem_id=elem_id,
        css_template=THUMBS_CSS,
        js_on_load=THUMBS_CLICK_JS if clickable else None,
    )


def thumbs_html(items: Sequence[tuple]) -> str:
    """``(fpath, caption)`` or ``(fpath, caption, latent_id)`` items -> the grid's HTML."""
    clickable = any(len(item) > 2 for item in items)
    figures = []
    for fpath, caption, *latent in items:
        src = "gradio_api/file=" + quote(str(fpath))
        data = f' data-latent="{int(latent[0])}"' if latent else ""
        title = f"open latent {int(latent[0])}" if latent else html.escape(caption)
        figures.append(
            f'<figure{data} title="{title}"><img src="{src}" loading="lazy" alt="">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    if not figures:
        figures.append("<em>no images</em>")
    kind = "thumbs clickable" if clickable else "thumbs"
    return f'<div class="{kind}">{"".join(figures)}</div>'


def moved_slider_edits(initial: Sequence[Sequence[float]], values: Sequence[float]) -> list[Edit]:
    """``set`` edits for the sliders the user moved (by more than half a step) from their initial
    ``[latent id, value]``; an untouched slider is no edit, so decoding it gives back the input."""
    return [
        Edit(int(latent), "set", float(v))
        for (latent, start), v in zip(initial, values)
        if v is not None and not abs(float(v) - float(start)) <= SLIDER_STEP / 2
    ]


@functools.cache
def export_dpath() -> str:
    """One folder per process for export files (removed at exit), not one per export."""
    dpath = tempfile.mkdtemp(prefix="sae-explorer-exports-")
    atexit.register(shutil.rmtree, dpath, ignore_errors=True)
    return dpath


def deep_link(**params: Any) -> str:
    return "?" + urlencode({k: v for k, v in params.items() if v is not None})


def build_demo(explorer: Explorer) -> gr.Blocks:
    """The whole page over one shared, read-only explorer; per-user state lives in ``gr.State``."""
    overview = explorer.overview()
    gr.set_static_paths([explorer.thumbs_dpath])  # thumbnails are served as they are, not copied
    with gr.Blocks(title="SAE explorer") as demo:
        gr.HTML(banner_html(explorer))
        inspect_query = gr.State(None)
        steer_query = gr.State(None)
        slider_latents = gr.State([])  # [[latent id, initial slider value], ...]
        extra_edits = gr.State([])

        with gr.Tabs(selected="inspect") as tabs:
            # ---------------------------------------------------------------- layout: Inspect
            with gr.Tab("Inspect", id="inspect"), gr.Row():
                with gr.Column(scale=1, min_width=280):
                    in_image = UploadedImage(
                        type="filepath",
                        label="Image",
                        sources=["upload", "clipboard"],
                        height=220,
                        elem_id="inspect-image",
                    )
                    in_text = gr.Textbox(label="…or a text", lines=2, elem_id="inspect-text")
                    in_text_btn = gr.Button("Inspect text", size="sm")
                    with gr.Row():
                        in_item = gr.Number(label="…or corpus item #", precision=0, minimum=0)
                        in_item_btn = gr.Button("Inspect item", size="sm")
                    in_desc = gr.Markdown(elem_id="inspect-desc")
                    in_diag = gr.Markdown(elem_id="inspect-diagnostics")
                    in_levels = gr.Plot(label="Reconstruction vs Matryoshka level")
                with gr.Column(scale=2):
                    in_table = gr.Dataframe(
                        label="Top latents (click a row to open it)",
                        interactive=False,
                        elem_id="inspect-table",
                    )
                    in_bar = gr.Plot(label="Activations")
                    gr.Markdown("Max-activating corpus images of the top latents (click to open)")
                    in_thumbs = thumbs_component("inspect-thumbs", clickable=True)
                    with gr.Row():
                        in_fmt = gr.Radio(["json", "csv"], value="json", label="Export format")
                        in_export_btn = gr.Button("Export this analysis", size="sm")
                        in_export = gr.File(label="Export", interactive=False)

            # ---------------------------------------------------------------- layout: Latent
            with gr.Tab("Latent", id="latent"):
                with gr.Row():
                    lat_id = gr.Number(
                        label="Latent id", precision=0, minimum=0, elem_id="latent-id"
                    )
                    lat_open_btn = gr.Button("Open", size="sm")
                    lat_search = gr.Textbox(label="…or search names", placeholder="e.g. blue")
                    lat_search_btn = gr.Button("Search", size="sm")
                lat_hits = gr.Dataframe(
                    label="Matches (click to open)", interactive=False, visible=False
                )
                lat_summary = gr.Markdown(elem_id="latent-summary")
                with gr.Row():
                    with gr.Column(scale=2):
                        gr.Markdown("**Max-activating images** (activation)")
                        lat_gallery = thumbs_component("latent-top")
                        gr.Markdown("**Samples from lower activation quantiles**")
                        lat_quant_gallery = thumbs_component("latent-quantiles")
                        lat_hist = gr.Plot(label="Activation histogram")
                    with gr.Column(scale=1):
                        lat_names = gr.Dataframe(
                            label="Names (vocabulary, score)"
                            + (" beside the MSAE release's" if explorer.release_names else ""),
                            interactive=False,
                        )
                        lat_texts = gr.Dataframe(label="Max-activating texts", interactive=False)
                        lat_similar = gr.Dataframe(
                            label="Most similar decoder directions (click to open)",
                            interactive=False,
                        )
                        lat_quant = gr.Dataframe(label="Quantile samples", interactive=False)
                with gr.Row():
                    lat_fmt = gr.Radio(["json", "csv"], value="json", label="Export format")
                    lat_export_btn = gr.Button("Export this latent", size="sm")
                    lat_export = gr.File(label="Export", interactive=False)

            # ---------------------------------------------------------------- layout: Steer
            with gr.Tab("Steer", id="steer"):
                with gr.Row():
                    st_image = UploadedImage(
                        type="filepath",
                        label="Image",
                        sources=["upload", "clipboard"],
                        height=180,
                        elem_id="steer-image",
                    )
                    with gr.Column():
                        st_text = gr.Textbox(label="…or a text", lines=2, elem_id="steer-text")
                        st_text_btn = gr.Button(
                            "Start from text", size="sm", elem_id="steer-text-start"
                        )
                        with gr.Row():
                            st_item = gr.Number(label="…or corpus item #", precision=0, minimum=0)
                            st_item_btn = gr.Button("Start from item", size="sm")
                        st_desc = gr.Markdown(elem_id="steer-desc")
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("**Top latents of the input** (drag to set a value)")
                        sliders = [
                            gr.Slider(0, 1, value=0, visible=False, label=f"latent {i}")
                            for i in range(N_SLIDERS)
                        ]
                        with gr.Row():
                            st_add_latent = gr.Textbox(
                                elem_id="steer-add-latent",
                                label="Add latent (id or name)",
                                placeholder="12 or blue",
                            )
                            st_add_op = gr.Dropdown(list(OPS), value="set", label="Edit")
                            st_add_strength = gr.Number(
                                value=1.0, label="Strength (set: x corpus max; scale: factor)"
                            )
                        with gr.Row():
                            st_add_btn = gr.Button("Add edit", size="sm", elem_id="steer-add")
                            st_clear_btn = gr.Button("Clear edits", size="sm")
                        st_edits = gr.Dataframe(
                            headers=["latent", "op", "value"],
                            label="Extra edits",
                            interactive=False,
                        )
                        st_labels = gr.Textbox(
                            value=", ".join(DEFAULT_LABELS),
                            label="Zero-shot labels (comma-separated)",
                        )
                        st_decode_btn = gr.Button(
                            "Decode", variant="primary", elem_id="steer-decode"
                        )
                    with gr.Column():
                        st_cosine = gr.Markdown(elem_id="steer-cosine")
                        st_zero_shot = gr.Dataframe(label="Zero-shot scores", interactive=False)
                        st_changes = gr.Dataframe(
                            label="Edited latents", interactive=False, elem_id="steer-changes"
                        )
                with gr.Row():
                    with gr.Column():
                        gr.Markdown("**Nearest corpus images: before** (cosine)")
                        st_before = thumbs_component("steer-before")
                    with gr.Column():
                        gr.Markdown("**Nearest corpus images: after** (cosine)")
                        st_after = thumbs_component("steer-after")
                with gr.Row():
                    st_before_df = gr.Dataframe(label="Nearest items: before", interactive=False)
                    st_after_df = gr.Dataframe(label="Nearest items: after", interactive=False)
                with gr.Row():
                    st_sweep_latent = gr.Textbox(
                        label="Sweep latent (id or name)", elem_id="steer-sweep-latent"
                    )
                    st_sweep_target = gr.Textbox(
                        label="Target label", value=DEFAULT_LABELS[0], elem_id="steer-sweep-target"
                    )
                    st_sweep_btn = gr.Button("Strength sweep", size="sm", elem_id="steer-sweep")
                st_sweep_plot = gr.Plot(
                    elem_id="steer-sweep-plot",
                    label="Strength sweep vs a random latent of similar frequency",
                )

            # ---------------------------------------------------------------- layout: Overview
            with gr.Tab("Overview", id="overview"):
                gr.Dataframe(
                    value=overview.models, label="Loaded models and corpus", interactive=False
                )
                gr.Markdown(overview_markdown(overview.stats), elem_id="overview-stats")
                with gr.Row():
                    gr.Plot(
                        value=overview.frequency_histogram,
                        label="Latent frequency",
                        elem_id="overview-frequency",
                    )
                    gr.Plot(value=overview.levels_plot, label="Per-level reconstruction")

        # ==================================================================== wiring
        inspect_outputs = [
            inspect_query,
            in_desc,
            in_diag,
            in_levels,
            in_table,
            in_bar,
            in_thumbs,
        ]

        def inspect_values(query: Query) -> tuple:
            warn(query)
            result = explorer.inspect(query)
            d = result.diagnostics
            diag = (
                f"**Reconstruction** cosine {d.cosine:.3f} · relative error "
                f"{d.relative_error:.3f} · L0 {d.l0}  \n"
                f"Encoded with {d.input_statistics}"
            )
            gallery = thumbs_html([(t.fpath, t.caption, t.latent_id) for t in result.thumbs])
            return (
                query,
                f"**Input:** {query.description}",
                diag,
                result.levels_plot,
                result.table,
                result.bar,
                gallery,
            )

        @user_errors
        def inspect_image(path):
            return inspect_values(explorer.image_query(path))

        @user_errors
        def inspect_text(text):
            return inspect_values(explorer.text_query(text))

        @user_errors
        def inspect_item(item):
            return inspect_values(explorer.item_query(item))

        in_image.upload(inspect_image, in_image, inspect_outputs, api_name="inspect_image")
        in_text.submit(inspect_text, in_text, inspect_outputs, api_name="inspect_text")
        in_text_btn.click(inspect_text, in_text, inspect_outputs, api_visibility="private")
        in_item_btn.click(inspect_item, in_item, inspect_outputs, api_name="inspect_item")

        latent_outputs = [
            lat_id,
            lat_summary,
            lat_gallery,
            lat_quant_gallery,
            lat_hist,
            lat_names,
            lat_texts,
            lat_similar,
            lat_quant,
        ]

        def latent_values(latent) -> tuple:
            page = explorer.latent_page(latent)
            s = page.summary
            level = "never kept" if s.level < 0 else f"{s.level} (k={s.level_k})"
            summary = (
                f"### Latent {page.latent_id}: {s.names or 'no names'}\n"
                + (f"MSAE release names: {s.msae_names}  \n" if s.msae_names is not None else "")
                + f"frequency {s.frequency:.4f} · mean {s.mean_activation:.3f} · "
                f"max {s.max_activation:.3f} · images {s.image_fraction:.0%} / texts "
                f"{s.text_fraction:.0%} · Matryoshka level {level}"
                + (" · **dead on this corpus**" if s.dead else "")
                + f"  \nLink: [`{deep_link(tab='latent', latent=page.latent_id)}`]"
                f"({deep_link(tab='latent', latent=page.latent_id)})"
            )
            return (
                page.latent_id,
                summary,
                thumbs_html(page.top_images),
                thumbs_html(page.quantile_images),
                page.histogram,
                page.names,
                page.top_texts,
                page.similar,
                page.quantiles,
            )

        @user_errors
        def open_latent(latent):
            return latent_values(latent)

        def open_in_tab(values: tuple) -> tuple:
            return (gr.Tabs(selected="latent"), *values)

        @user_errors
        def open_from_thumb(evt: gr.EventData):
            return open_in_tab(latent_values(evt.latent))

        @user_errors
        def open_from_table(df: pd.DataFrame, evt: gr.SelectData):
            # row_value is the clicked row as displayed, however the user sorted or filtered the
            # table; read it by column name
            row = dict(zip(df.columns, evt.row_value or ()))
            if "latent" not in row:
                raise ValueError("click a row of the table to open its latent")
            return open_in_tab(latent_values(int(row["latent"])))

        lat_open_btn.click(open_latent, lat_id, latent_outputs, api_name="latent")
        lat_id.submit(open_latent, lat_id, latent_outputs, api_visibility="private")
        in_thumbs.click(open_from_thumb, None, [tabs, *latent_outputs], api_visibility="private")
        for table in (in_table, lat_similar, lat_hits):
            table.select(open_from_table, table, [tabs, *latent_outputs], api_visibility="private")

        @user_errors
        def search(text):
            hits = explorer.search_latents(text)
            if hits.empty:
                gr.Warning(f"no latent names match {text!r}")
            return gr.Dataframe(value=hits, visible=True)

        lat_search_btn.click(search, lat_search, lat_hits, api_name="search")
        lat_search.submit(search, lat_search, lat_hits, api_visibility="private")

        @user_errors
        def export_inspect(query, fmt):
            if query is None:
                raise ValueError("inspect an image, text or corpus item first, then export it")
            return str(explorer.export_inspect(query, export_dpath(), fmt))

        @user_errors
        def export_latent(latent, fmt):
            return str(explorer.export_latent(latent, export_dpath(), fmt))

        in_export_btn.click(
            export_inspect, [inspect_query, in_fmt], in_export, api_name="export_inspect"
        )
        lat_export_btn.click(export_latent, [lat_id, lat_fmt], lat_export, api_name="export_latent")

        # ---------------------------------------------------------------- Steer wiring
        steer_start_outputs = [steer_query, st_desc, slider_latents, *sliders]

        def steer_start_values(query: Query) -> tuple:
            warn(query)
            top = explorer.top_latents(query, N_SLIDERS)
            updates, initial = [], []
            for i in range(N_SLIDERS):
                if i < len(top):
                    r = top.iloc[i]
                    value = round(float(r["value"]), SLIDER_DECIMALS)  # on the step grid
                    initial.append([int(r["latent"]), value])
                    updates.append(
                        gr.Slider(
                            minimum=0.0,
                            maximum=round(float(r["max"]), 4),
                            value=value,
                            step=SLIDER_STEP,
                            label=f"#{int(r['latent'])} {r['names']}",
                            visible=True,
                        )
                    )
                else:
                    updates.append(gr.Slider(visible=False, value=0))
            return (query, f"**Steering:** {query.description}", initial, *updates)

        @user_errors
        def steer_image(path):
            return steer_start_values(explorer.image_query(path))

        @user_errors
        def steer_text(text):
            return steer_start_values(explorer.text_query(text))

        @user_errors
        def steer_item(item):
            return steer_start_values(explorer.item_query(item))

        st_image.upload(steer_image, st_image, steer_start_outputs, api_name="steer_start_image")
        st_text_btn.click(steer_text, st_text, steer_start_outputs, api_name="steer_start_text")
        st_text.submit(steer_text, st_text, steer_start_outputs, api_visibility="private")
        st_item_btn.click(steer_item, st_item, steer_start_outputs, api_name="steer_start_item")

        @user_errors
        def add_edit(edits, latent, op, strength):
            edit = explorer.relative_edit(
                latent, op, strength if strength is not None else float("nan")
            )
            edit = edit._replace(value=round(edit.value, 6))
            edits = [e for e in (edits or []) if e[0] != edit.latent_id] + [list(edit)]
            return edits, pd.DataFrame(edits, columns=["latent", "op", "value"])

        def clear_edits():
            return [], pd.DataFrame(columns=["latent", "op", "value"])

        st_add_btn.click(
            add_edit,
            [extra_edits, st_add_latent, st_add_op, st_add_strength],
            [extra_edits, st_edits],
            api_name="add_edit",
        )
        st_clear_btn.click(clear_edits, None, [extra_edits, st_edits], api_visibility="private")

        @user_errors
        def decode(query, latents, edits, labels, *values):
            if query is None:
                raise ValueError("start from an image, text or corpus item first")
            slider_edits = moved_slider_edits(latents or [], values)
            result = explorer.steer(
                query, [*slider_edits, *(Edit(*e) for e in edits or [])], labels
            )
            return (
                f"**Cosine of the steered embedding to the original:** {result.cosine_to_original:.4f}",
                result.zero_shot,
                result.edits,
                thumbs_html(result.images_before),
                thumbs_html(result.images_after),
                result.neighbours_before,
                result.neighbours_after,
            )

        st_decode_btn.click(
            decode,
            [steer_query, slider_latents, extra_edits, st_labels, *sliders],
            [st_cosine, st_zero_shot, st_changes, st_before, st_after, st_before_df, st_after_df],
            api_name="steer",
        )

        @user_errors
        def sweep(query, latent, target, labels):
            if query is None:
                raise ValueError("start from an image, text or corpus item first")
            return explorer.sweep(query, latent, target, labels).figure

        st_sweep_btn.click(
            sweep,
            [steer_query, st_sweep_latent, st_sweep_target, st_labels],
            st_sweep_plot,
            api_name="sweep",
        )

        # ---------------------------------------------------------------- deep links
        def on_load(request: gr.Request):
            params = dict(request.query_params) if request is not None else {}
            tab = params.get("tab")
            skip_inspect = tuple(gr.skip() for _ in inspect_outputs)
            skip_latent = tuple(gr.skip() for _ in latent_outputs)
            try:
                if "latent" in params:
                    return (
                        gr.Tabs(selected="latent"),
                        *skip_inspect,
                        *latent_values(params["latent"]),
                    )
                if "text" in params:
                    values = inspect_values(explorer.text_query(params["text"]))
                    return (gr.Tabs(selected="inspect"), *values, *skip_latent)
                if "item" in params:
                    values = inspect_values(explorer.item_query(params["item"]))
                    return (gr.Tabs(selected="inspect"), *values, *skip_latent)
            except ValueError as e:
                gr.Warning(f"could not open the link: {e}")
            selected = gr.Tabs(selected=tab) if tab in TABS else gr.skip()
            return (selected, *skip_inspect, *skip_latent)

        demo.load(
            on_load, None, [tabs, *inspect_outputs, *latent_outputs], api_visibility="private"
        )
    return demo


def overview_markdown(stats: OverviewStats) -> str:
    levels = ", ".join(
        f"k={k}: cos {c:.3f} / FVU {f:.3g}"
        for k, c, f in zip(stats.levels, stats.level_cosine, stats.level_fvu)
    )
    return (
        f"**Corpus** {stats.n_items} items ({stats.n_images} images, {stats.n_texts} texts) · "
        f"**SAE** {stats.n_latents} latents · **L0** {stats.l0:.1f} · **FVU** {stats.fvu:.3g} · "
        f"**dead** {stats.dead_latents} · **dense** (> {stats.dense_threshold:.0%} of items) "
        f"{stats.dense_latents}  \n**Per level:** {levels}"
    )


# ---------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = config_from_env()
    parser = argparse.ArgumentParser(
        description="Serve the SAE explorer. Every flag also reads an environment variable "
        f"({ENV_PREFIX}CLIP, {ENV_PREFIX}SAE, ...); flags win.",
    )
    parser.add_argument("--clip", default=env.clip, help="open_clip model or builtin:shapes")
    parser.add_argument(
        "--pretrained", default=env.pretrained, help="open_clip pretrained tag or file"
    )
    parser.add_argument("--sae", default=env.sae, help="SAE source for load_sae, or 'auto'")
    parser.add_argument("--corpus", default=env.corpus, help="corpus source (folder, table, hf:..)")
    parser.add_argument("--max-items", type=int, default=env.max_items, help="corpus item cap")
    parser.add_argument("--cache-dir", default=env.cache_dir, help="index and dataset cache folder")
    parser.add_argument("--device", default=env.device, help="torch device for CLIP")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME"), help="bind address")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port"
    )
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument(
        "--demo", action="store_true", default=env.demo, help="built-in shapes world"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        default=env.strict,
        help="no fallback to the built-in world",
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests served at once"
    )
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> StartupConfig:
    return StartupConfig(
        clip=args.clip,
        pretrained=None if args.pretrained in (None, "", "none") else args.pretrained,
        sae=args.sae,
        corpus=args.corpus,
        max_items=args.max_items if args.max_items and args.max_items > 0 else None,
        cache_dir=args.cache_dir,
        device=args.device,
        demo=args.demo,
        strict=args.strict,
    )


def tqdm_progress():
    from tqdm.auto import tqdm

    bar = tqdm(total=100, desc="starting", unit="%", file=sys.stderr)

    def update(fraction: float, message: str) -> None:
        bar.n = round(100 * fraction)
        bar.set_description(message[:60], refresh=True)

    return bar, update


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    bar, progress = tqdm_progress()
    try:
        explorer = load_explorer(config_from_args(args), progress=progress)
    except StartupError as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 1
    bar.close()
    logger.info("serving %s", loaded_summary(explorer))
    demo = build_demo(explorer)
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, css=CSS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
