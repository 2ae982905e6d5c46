"""The Latent tab's figure button: the latent's card for a paper (``sae_explorer.figures``) as a
PNG (300 dpi), SVG or PDF file to download, written into the exports folder."""

from __future__ import annotations

from typing import NamedTuple

import gradio as gr

from explorer_ui.exports import export_dpath
from sae_explorer.explorer import Explorer
from sae_explorer.figures import FIGURE_FORMATS, FigureFormat, export_figure


class FigureControls(NamedTuple):
    format: gr.Radio
    button: gr.Button
    file: gr.File


def figure_controls() -> FigureControls:
    """One row: the file format, the button, and the file to download."""
    with gr.Row():
        return FigureControls(
            gr.Radio(list(FIGURE_FORMATS), value="png", label="Figure format"),
            gr.Button("Figure for a paper (card)", size="sm"),
            gr.File(label="Figure", interactive=False, elem_id="latent-figure-file"),
        )


def latent_figure(explorer: Explorer, latent: float | str | None, fmt: FigureFormat) -> str:
    """The path of the latent's card in format ``fmt``, stamped with its provenance."""
    if latent is None or (isinstance(latent, str) and not latent.strip()):
        raise ValueError("open a latent first (type its id and press Open)")
    latent_id = explorer.check_latent(latent)
    return str(export_figure(explorer, [latent_id], export_dpath(explorer), [fmt]).paths[0])
