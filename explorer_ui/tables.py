"""Tables of kept pages rendered once: ``gr.Dataframe`` turns a DataFrame into its JSON rows at
every request (``to_dict`` over every cell, a few ms a table); a page the page cache keeps is
sent again and again, unchanged, so its tables' rows are rendered once per table and reused.

:func:`freeze` marks a DataFrame as kept and never to be changed again (the page cache marks the
tables of every view it keeps); :class:`Table` is ``gr.Dataframe`` (drawn as one) that renders a
frozen frame once and any other value as ``gr.Dataframe`` does, every time.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import gradio as gr
import pandas as pd

_FROZEN: dict[int, tuple[weakref.ref, dict[int, Any]]] = {}
"""id(frame) -> (a weak reference to the frame, its rendering by table id)."""
_LOCK = threading.Lock()


def freeze(value: Any) -> None:
    """Mark ``value`` (a DataFrame, or a view: a tuple of fields) and the DataFrames in it as
    never to be changed again (their rendering may then be kept while they live)."""
    frames = [value] if isinstance(value, pd.DataFrame) else value
    if not isinstance(frames, (list, tuple)):
        return
    for frame in frames:
        if isinstance(frame, pd.DataFrame):
            key = id(frame)
            with _LOCK:
                if key not in _FROZEN:
                    _FROZEN[key] = (weakref.ref(frame, lambda _, k=key: _forget(k)), {})


def _forget(key: int) -> None:
    with _LOCK:
        _FROZEN.pop(key, None)


def _renderings(frame: Any) -> dict[int, Any] | None:
    entry = _FROZEN.get(id(frame))
    if entry is None or entry[0]() is not frame:
        return None
    return entry[1]


def frozen_count() -> int:
    """Frozen frames alive (for tests: they are forgotten when their frames go)."""
    return len(_FROZEN)


class Table(gr.Dataframe):
    """``gr.Dataframe`` rendering each frozen DataFrame once (see :func:`freeze`)."""

    is_template = True  # the front end draws it as the gr.Dataframe it is

    def postprocess(self, value: Any) -> Any:
        renderings = _renderings(value) if isinstance(value, pd.DataFrame) else None
        if renderings is None:
            return super().postprocess(value)
        rendered = renderings.get(self._id)
        if rendered is None:
            rendered = renderings[self._id] = super().postprocess(value)
        return rendered
