"""The progress callback every long library function accepts.

``progress(fraction, message)`` with ``fraction`` in [0, 1]: the command line feeds it to tqdm,
the app to ``gr.Progress``, so the library reports progress without knowing which one listens.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
