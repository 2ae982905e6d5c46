"""Where handlers meet Gradio: :func:`bind` makes a module-level handler ``fn(explorer, ...)`` an
event callback, :func:`warn` shows notes as toasts, :func:`markdown_text` makes a user's text safe
inside Markdown, :func:`static_text` reads ``static/``.

Handlers stay plain functions of the explorer that raise ``ValueError`` for a user mistake; the
popup is added here, once, rather than in each handler. Toasts render HTML, and messages quote
what the user typed (a deep link's ``?latent=<a href=...>``), so every toast is escaped here.
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import re
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import gradio as gr

from explorer_ui.serving import RUNNER
from sae_explorer.explorer import Explorer


def bind(fn: Callable[..., Any], explorer: Explorer, *args: Any) -> Callable[..., Any]:
    """``fn`` with ``explorer`` (and ``args``) bound as its first arguments, run by the shared
    request runner (one concurrency limit, a deadline), a ``ValueError`` or a missed deadline
    shown as an escaped ``gr.Error`` popup (the app keeps serving).

    Not a bare ``functools.partial``: Gradio finds the ``gr.Request`` / ``gr.EventData``
    parameters it fills in by their type hints, which a partial hides. The callback keeps ``fn``'s
    hints and shows the remaining parameters as its signature (also the API page's)."""
    bound = functools.partial(fn, explorer, *args)

    @functools.wraps(fn)
    def callback(*values: Any) -> Any:
        try:
            return RUNNER.run(bound, *values)
        except (ValueError, TimeoutError) as e:
            raise gr.Error(html.escape(str(e)), print_exception=False) from e

    signature = inspect.signature(fn)
    rest = list(signature.parameters.values())[1 + len(args) :]
    callback.__signature__ = signature.replace(parameters=rest)  # type: ignore[attr-defined]
    return callback


def warn(messages: Iterable[str]) -> None:
    """Each message as a yellow toast, escaped (outside a request: a Python warning)."""
    for message in messages:
        gr.Warning(html.escape(message))


MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~&$./-])")
"""What Markdown could read as syntax, Gradio's LaTeX delimiters (``$``) included, and what an
autolink needs (``.``, ``/``: ``www.x.example``, ``https://x.example``)."""


def markdown_text(text: str) -> str:
    """``text`` shown literally inside Markdown: every character Markdown could read as syntax
    backslash-escaped (CommonMark escapes any ASCII punctuation), line breaks as spaces. A
    deep link's ``?text=![](https://...)`` shows as typed and fetches nothing."""
    return MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def static_text(name: str) -> str:
    """A file of ``explorer_ui/static/`` (CSS, JS), as shipped with the package."""
    return resources.files("explorer_ui").joinpath("static", name).read_text(encoding="utf-8")


def plot_click_js(plot_id: str, key: str) -> str:
    """The script of a ``gr.HTML`` that fires 'click' with ``{key: customdata}`` when a point or
    bar of the ``gr.Plot`` with element id ``plot_id`` is clicked (``static/plot_click.js``)."""
    return (
        static_text("plot_click.js")
        .replace("__PLOT_ID__", json.dumps(plot_id))
        .replace("__KEY__", json.dumps(key))
    )
