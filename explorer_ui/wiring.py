"""Where handlers meet Gradio: :func:`bind` makes a module-level handler ``fn(explorer, ...)`` an
event callback, :func:`warn` shows notes as toasts, :func:`static_text` reads ``static/``.

Handlers stay plain functions of the explorer that raise ``ValueError`` for a user mistake; the
popup is added here, once, rather than in each handler.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

import gradio as gr

from sae_explorer.explorer import Explorer


def bind(fn: Callable[..., Any], explorer: Explorer, *args: Any) -> Callable[..., Any]:
    """``fn`` with ``explorer`` (and ``args``) bound as its first arguments, a ``ValueError``
    shown as a ``gr.Error`` popup (the app keeps serving).

    Not a bare ``functools.partial``: Gradio finds the ``gr.Request`` / ``gr.EventData``
    parameters it fills in by their type hints, which a partial hides. The callback keeps ``fn``'s
    hints and shows the remaining parameters as its signature (also the API page's)."""
    bound = functools.partial(fn, explorer, *args)

    @functools.wraps(fn)
    def callback(*values: Any) -> Any:
        try:
            return bound(*values)
        except ValueError as e:
            raise gr.Error(str(e), print_exception=False) from e

    signature = inspect.signature(fn)
    rest = list(signature.parameters.values())[1 + len(args) :]
    callback.__signature__ = signature.replace(parameters=rest)  # type: ignore[attr-defined]
    return callback


def warn(messages: Iterable[str]) -> None:
    """Each message as a yellow toast (outside a request: a Python warning)."""
    for message in messages:
        gr.Warning(message)


def static_text(name: str) -> str:
    """A file of ``explorer_ui/static/`` (CSS, JS), as shipped with the package."""
    return resources.files("explorer_ui").joinpath("static", name).read_text(encoding="utf-8")
