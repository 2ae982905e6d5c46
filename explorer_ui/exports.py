"""Export controls (format, button, file) and the one folder their files go to: beside the
cache's indexes, reused by every start and bounded (see ``sae_explorer.explorer.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import gradio as gr

from sae_explorer.explorer import export

if TYPE_CHECKING:
    from sae_explorer.explorer import Explorer

ExportFormat = Literal["json", "csv"]


class ExportControls(NamedTuple):
    format: gr.Radio
    button: gr.Button
    file: gr.File


def export_controls(button_label: str) -> ExportControls:
    """One row: the format, the button, and the file to download."""
    with gr.Row():
        return ExportControls(
            gr.Radio(list(get_args(ExportFormat)), value="json", label="Export format"),
            gr.Button(button_label, size="sm"),
            gr.File(label="Export", interactive=False),
        )


def export_dpath(explorer: Explorer) -> Path:
    """The exports folder of ``explorer``'s cache, trimmed to its newest files before each
    export (so it never grows without bound and survives a killed process intact)."""
    dpath = export.exports_dpath_for(explorer.index.dpath)
    dpath.mkdir(parents=True, exist_ok=True)
    export.prune_exports(dpath, export.MAX_EXPORT_FILES - 1)
    return dpath
