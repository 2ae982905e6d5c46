"""The explorer: encoder, SAE and activation index behind one method per user action of the app,
each returning plain data (DataFrames, plotly figures, file paths, NamedTuples).

``from sae_explorer.explorer import Explorer`` is the entry point; each module of this package
holds one job (CONTRIBUTING.md lists them).
"""

from sae_explorer.explorer.export import Stamp
from sae_explorer.explorer.inspect import Diagnostics, InspectResult
from sae_explorer.explorer.latent_page import LatentPage, LatentPageSummary
from sae_explorer.explorer.names import RELEASE_NAMES_COLUMN
from sae_explorer.explorer.overview import DENSE_FREQUENCY, ModelRow, Overview, OverviewStats
from sae_explorer.explorer.quality import LevelMetrics
from sae_explorer.explorer.queries import Query
from sae_explorer.explorer.state import Explorer, Sources
from sae_explorer.explorer.steer import (
    DEFAULT_LABEL_TEXT,
    DEFAULT_LABELS,
    SWEEP_STRENGTHS,
    LabelGroups,
    SteerResult,
    SweepResult,
    check_labels,
)
from sae_explorer.explorer.thumbnails import THUMB_PX, CaptionedImage, Thumb

__all__ = [
    "DEFAULT_LABELS",
    "DEFAULT_LABEL_TEXT",
    "DENSE_FREQUENCY",
    "RELEASE_NAMES_COLUMN",
    "SWEEP_STRENGTHS",
    "THUMB_PX",
    "CaptionedImage",
    "Diagnostics",
    "Explorer",
    "InspectResult",
    "LabelGroups",
    "LatentPage",
    "LatentPageSummary",
    "LevelMetrics",
    "ModelRow",
    "Overview",
    "OverviewStats",
    "Query",
    "Sources",
    "Stamp",
    "SteerResult",
    "SweepResult",
    "Thumb",
    "check_labels",
]
