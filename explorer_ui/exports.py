"""Export controls (format, button, file) and the one folder per process their files go to."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from typing import Literal, NamedTuple, get_args

import gradio as gr

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


@functools.cache
def export_dpath() -> str:
    """One folder per process for export files (removed at exit), not one per export."""
    dpath = tempfile.mkdtemp(prefix="sae-explorer-exports-")
    atexit.register(shutil.rmtree, dpath, ignore_errors=True)
    return dpath
