"""``SteerSlider``: a Steer slider whose value may be left out, meaning "unchanged".

In a module of its own because Gradio writes a type stub (``steer_slider.pyi``, ignored by git)
beside any module that defines a component class."""

from __future__ import annotations

from typing import Any

import gradio as gr


class SteerSlider(gr.Slider):
    """``gr.Slider`` whose page config carries no value until an input fills it. Gradio's API
    then lists the slider as optional with default None (a plain slider documents its layout
    value, 0, which set the latent to zero when a client left it out), and None reaches the
    handler as "unchanged" instead of failing the range check."""

    is_template = True  # render with gr.Slider's own frontend (as Gradio's ClearButton does)

    def get_config(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        config = super().get_config(*args, **kwargs)
        config.pop("value", None)  # a hidden slider's layout value is no one's default
        return config

    def preprocess(self, payload: float | None) -> float | None:  # type: ignore[override]
        return None if payload is None else super().preprocess(payload)
