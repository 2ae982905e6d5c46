"""The SAE explorer's web page (Gradio) over a loaded :class:`sae_explorer.explorer.Explorer`.

``build_demo(explorer)`` is the entry point (``app.py`` serves it); CONTRIBUTING.md lists the
modules, one per tab plus what the tabs share.
"""

from explorer_ui.page import build_demo

__all__ = ["build_demo"]
