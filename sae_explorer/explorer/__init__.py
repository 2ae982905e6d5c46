"""The explorer: encoder, SAE and activation index behind one method per user action of the app.

``from sae_explorer.explorer import Explorer`` is the entry point; the modules of this package
each hold one job (CONTRIBUTING.md lists them).
"""

from sae_explorer.explorer.state import (
    DEFAULT_LABELS,
    DENSE_FREQUENCY,
    RELEASE_NAMES_COLUMN,
    SWEEP_STRENGTHS,
    THUMB_PX,
    Explorer,
    InspectResult,
    LatentPage,
    LevelMetrics,
    Overview,
    Query,
    Sources,
    SteerResult,
    SweepResult,
    Thumb,
    check_labels,
)

__all__ = [
    "DEFAULT_LABELS",
    "DENSE_FREQUENCY",
    "RELEASE_NAMES_COLUMN",
    "SWEEP_STRENGTHS",
    "THUMB_PX",
    "Explorer",
    "InspectResult",
    "LatentPage",
    "LevelMetrics",
    "Overview",
    "Query",
    "Sources",
    "SteerResult",
    "SweepResult",
    "Thumb",
    "check_labels",
]
