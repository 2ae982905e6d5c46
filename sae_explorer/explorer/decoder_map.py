"""A 2-D map of the SAE's decoder directions (one point per latent), projected once per SAE and
method and cached on disk beside the indexes: ``<cache>/maps/<sae hash>-<method>.npy``.

Methods (``MapMethod``): ``pca`` (scikit-learn, a second at 24,576 latents) and ``umap``
(umap-learn, cosine metric: neighbours in the map are latents with similar directions; minutes
at 24,576 latents on a CPU, so the app computes it only when asked, with progress). The
directions are unit-normalised first, so a latent's place says where it points, not how long
its decoder row is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import numpy as np
import plotly.graph_objects as go

from sae_explorer.atomic import atomic_save_npy
from sae_explorer.explorer import plots

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer
    from sae_explorer.progress import Progress

MapMethod = Literal["pca", "umap"]
MAP_METHODS: tuple[MapMethod, ...] = get_args(MapMethod)
MAP_SEED = 0
MapColour = Literal["level", "frequency"]
MAP_COLOURS: tuple[MapColour, ...] = get_args(MapColour)
MAP_VERSION = 1
"""Part of the cache file name: bump it when a method's settings change."""


class DecoderMap(NamedTuple):
    xy_l2: np.ndarray  # float32 [n_latents, 2]
    method: MapMethod
    fpath: Path  # the cached file


def check_method(method: str) -> MapMethod:
    if method not in MAP_METHODS:
        raise ValueError(f"unknown map method {method!r}; allowed: {', '.join(MAP_METHODS)}")
    return method  # type: ignore[return-value]


def project(w_ld: np.ndarray, method: MapMethod, seed: int = MAP_SEED) -> np.ndarray:
    """float32 [n, 2]: the unit-normalised rows of ``w_ld`` projected by ``method``."""
    check_method(method)
    w_ld = np.asarray(w_ld, dtype=np.float32)
    if w_ld.ndim != 2 or len(w_ld) < 3:
        raise ValueError(f"need at least 3 directions to map, got shape {w_ld.shape}")
    unit_ld = w_ld / np.linalg.norm(w_ld, axis=1, keepdims=True).clip(min=1e-12)
    if method == "pca":
        from sklearn.decomposition import PCA

        solver = "randomized" if min(unit_ld.shape) > 64 else "full"
        xy = PCA(2, svd_solver=solver, random_state=seed).fit_transform(unit_ld)
    elif method == "umap":
        import umap

        reducer = umap.UMAP(
            n_components=2,
            metric="cosine",
            n_neighbors=min(15, len(unit_ld) - 1),
            random_state=seed,
            n_jobs=1,
        )
        xy = reducer.fit_transform(unit_ld)
    else:
        raise AssertionError(method)
    return np.asarray(xy, dtype=np.float32)


def maps_dpath_for(index_dpath: Path) -> Path:
    """Where maps live: ``<cache>/maps`` for an index in the cache (``<cache>/index/<key>``),
    else a ``maps`` folder beside the index folder."""
    parent = Path(index_dpath).parent
    return parent.parent / "maps" if parent.name == "index" else parent / "maps"


def map_fpath(explorer: Explorer, method: MapMethod) -> Path:
    return maps_dpath_for(explorer.index.dpath) / (
        f"{explorer.sae_hash[:32]}-{method}-s{MAP_SEED}-v{MAP_VERSION}.npy"
    )


def decoder_map(
    explorer: Explorer, method: str = "pca", progress: Progress | None = None
) -> DecoderMap:
    """The map of ``explorer``'s decoder directions: read from the cache, else projected and
    written there atomically (a file of the wrong shape is recomputed)."""
    method = check_method(method)
    fpath = map_fpath(explorer, method)
    cached = read_map(fpath, explorer.n_latents)
    if cached is not None:
        return DecoderMap(cached, method, fpath)
    if progress is not None:
        progress(0.0, f"projecting {explorer.n_latents} decoder directions with {method}")
    xy = project(explorer.dictionary_ld.numpy(), method)
    fpath.parent.mkdir(parents=True, exist_ok=True)
    atomic_save_npy(fpath, xy)
    if progress is not None:
        progress(1.0, f"map of {explorer.n_latents} latents cached")
    return DecoderMap(xy, method, fpath)


def read_map(fpath: Path, n_latents: int) -> np.ndarray | None:
    """The cached map, or None when it is missing, unreadable or not ``[n_latents, 2]`` finite."""
    try:
        xy = np.load(fpath, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if xy.shape != (n_latents, 2) or not np.isfinite(xy).all():
        return None
    return xy.astype(np.float32)


def map_figure(
    explorer: Explorer,
    method: str = "pca",
    colour_by: str = "level",
    latents: np.ndarray | None = None,
    progress: Progress | None = None,
) -> go.Figure:
    """The map of ``latents`` (default: all), coloured by Matryoshka level or by log10
    frequency (dead latents at the floor, half an item's share); a click reports the latent."""
    if colour_by not in MAP_COLOURS:
        raise ValueError(f"cannot colour the map by {colour_by!r}; allowed: {MAP_COLOURS}")
    xy_l2 = decoder_map(explorer, method, progress).xy_l2
    latents_table = explorer.latent_table
    shown = np.arange(explorer.n_latents) if latents is None else np.asarray(latents, np.int64)
    hover = latents_table.hover_l[shown]
    if colour_by == "level":
        colour, title = explorer.levels_l[shown], "level"
    else:
        floor = 0.5 / max(explorer.index.n_items, 1)
        colour, title = np.log10(np.maximum(explorer.frequency_l[shown], floor)), "log10 freq."
    return plots.decoder_map(
        xy_l2[shown], shown, colour, title, hover, categorical=colour_by == "level"
    )
