"""The line above the tabs naming what is loaded, yellow with the reason when the app fell back
to the built-in world."""

from __future__ import annotations

import html

import gradio as gr

from explorer_ui.wiring import static_text
from sae_explorer.explorer import Explorer
from sae_explorer.explorer.overview import public_id

BANNER_CSS = static_text("banner.css")


def loaded_summary(explorer: Explorer, public: bool = False) -> str:
    """One line naming what is loaded (for the log; ``public``: for the banner, local paths by
    their names only)."""
    s, sae = explorer.sources, explorer.sae
    shown = public_id if public else str
    return (
        f"CLIP {shown(explorer.encoder.model_id)} · SAE {shown(s.sae)} ({sae.n_inputs}→"
        f"{sae.n_latents}, {sae.cfg.architecture}, {explorer.sae_hash[:10]}) · corpus "
        f"{shown(s.corpus)} ({len(explorer.items)} items)"
    )


def banner_html(explorer: Explorer) -> str:
    """Yellow with the reason when the app fell back; a plain line otherwise (``--demo`` is what
    the user asked for, not a warning)."""
    text = html.escape(loaded_summary(explorer, public=True))
    note = explorer.sources.note
    if note:
        return f'<div class="banner fallback" id="banner">⚠ {html.escape(note)}<br>{text}</div>'
    mode = explorer.sources.details.get("mode")
    prefix = f"Showing {html.escape(mode)}: " if mode else ""
    return f'<div class="banner" id="banner">{prefix}{text}</div>'


def banner(explorer: Explorer) -> gr.HTML:
    return gr.HTML(banner_html(explorer), css_template=BANNER_CSS)
