"""Inspect's "where in the image" panel: heatmaps of the inspected image's strongest latents (or
of chosen ones) through the vision tower, by any method of ``sae_explorer.attribution``."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr
from PIL import Image

from explorer_ui.wiring import bind
from sae_explorer.attribution import METHOD_HELP, METHODS, Method, overlay
from sae_explorer.explorer import Explorer, Query
from sae_explorer.explorer.heatmaps import N_TOP

METHODS_INFO = "; ".join(f"{method}: {METHOD_HELP[method]}" for method in METHODS)


class HeatmapControls(NamedTuple):
    latents: gr.Textbox
    method: gr.Radio
    button: gr.Button
    gallery: gr.Gallery


def layout() -> HeatmapControls:
    with gr.Accordion("Where in the image (heatmaps)", open=False):
        with gr.Row():
            latents = gr.Textbox(
                label=f"Latents (ids or names, commas between; empty: the {N_TOP} strongest)",
                elem_id="inspect-heat-latents",
            )
            method = gr.Radio(
                list(METHODS),
                value=METHODS[0],
                label="Method",
                info=METHODS_INFO,
                elem_id="inspect-heat-method",
            )
        button = gr.Button("Show where", size="sm", elem_id="inspect-heat")
        gallery = gr.Gallery(
            label="Heat over the image as the model saw it (resized, cropped)",
            columns=N_TOP,
            height="auto",
            format="png",  # lossless: the heat is shown as computed
            elem_id="inspect-heatmaps",
        )
    return HeatmapControls(latents, method, button, gallery)


def wire(explorer: Explorer, controls: HeatmapControls, query: gr.State, image: gr.Image) -> None:
    controls.button.click(
        bind(heatmap_gallery, explorer),
        [query, image, controls.latents, controls.method],
        controls.gallery,
        api_name="heatmaps",
    )


def heatmap_gallery(
    explorer: Explorer,
    query: Query | None,
    image: str | None,
    latents: str | None,
    method: Method,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 (Gradio's way to ask for progress)
) -> list[tuple[Image.Image, str]]:
    """One overlay per latent, captioned ``#id name · activation · method``; ``ValueError`` for a text
    input, unknown latents or an unknown method."""
    if query is None:
        raise ValueError("inspect an image first, then ask where its latents fire")
    ids = parse_latents(explorer, latents)
    maps = explorer.heatmaps(query, ids, method, image=image, progress=progress)
    return [
        (
            overlay(maps.image_hw3, map_hw),
            f"#{latent} {explorer.names_text(latent, 1) or '(unnamed)'} · {activation:.3f}"
            f" · {method}",
        )
        for latent, activation, map_hw in zip(maps.latent_ids, maps.activations_m, maps.maps_mhw)
    ]


def parse_latents(explorer: Explorer, text: str | None) -> list[int] | None:
    """Comma-separated latent ids or names -> ids (None when empty: the strongest)."""
    tokens = [t.strip() for t in (text or "").split(",") if t.strip()]
    return [explorer.resolve_latent(t) for t in tokens] or None
