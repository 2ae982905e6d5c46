"""``SteerSlider``: a Steer slider whose value may be left out, meaning "unchanged".

In a module of its own because Gradio writes a type stub (``steer_slider.pyi``, ignored by git)
beside any module that defines a component class."""

from __future__ import annotations

import gradio as gr


class SteerSlider(gr.Slider):
    """``gr.Slider`` with no value of its own until an input fills it. Gradio's API then lists
    the slider as optional with default None (a plain slider documents its layout value, 0,
    which would set the latent to zero when a client leaves it out), and None reaches the
    handler as "unchanged" instead of failing the range check."""

    is_template = True  # render with gr.Slider's own frontend (as Gradio's ClearButton does)

    def __init__(self, **kwargs) -> None:
        """``gr.Slider``'s keyword arguments (Gradio's component machinery drops positional
        ones of a subclass)."""
        super().__init__(**kwargs)
        self.value = None  # gr.Slider turns a value of None into its minimum

    def preprocess(self, payload: float | None) -> float | None:  # type: ignore[override]
        return None if payload is None else super().preprocess(payload)
