"""Server-side time of each view of the Latents and Latent tabs (the handler the page calls, no
network), on the built-in world and on synthetic indexes of 100,000 items or 24,576 latents.

    python benchmarks/bench_views.py                                  # 100,000 items, 6,144 latents
    python benchmarks/bench_views.py --items 20000 --latents 24576    # the widest MSAE
    python benchmarks/bench_views.py --umap                           # also time UMAP (minutes)

(Both synthetic sizes build in about 2 minutes on a 2-core CPU; 100,000 items with 24,576
latents takes about 20.)

The synthetic index: random unit-variance embeddings of the built-in world's CLIP width (64), half of
them "images" (drawn shapes, so thumbnails can be made) and half texts, with 10 random labels,
indexed through ``sae_explorer.precompute.index_embeddings`` with a random Matryoshka SAE whose
latent bias keeps ``--density`` of the latents active per item. Each view is called once cold (the first call
also writes thumbnails and, for the map, the projection's cache file), then ``--calls`` times;
the median and max of those are printed against the 300 ms target. One-off costs (the latent
table, the PCA map; UMAP with ``--umap``) are printed apart: they are computed once per SAE.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from explorer_ui import browse_tab, latent_tab  # noqa: E402
from explorer_ui.browse_tab import DEFAULT_FILTER_VALUES  # noqa: E402
from sae_explorer.explorer import Explorer  # noqa: E402
from sae_explorer.explorer_startup import world_explorer  # noqa: E402

TARGET_MS = 300.0


def no_progress(fraction: float, desc: str | None = None) -> None:
    pass


def views(explorer: Explorer, latent_id: int) -> dict[str, Callable[[], object]]:
    """Each view as the page calls it (the Latents tab's controls at their defaults unless named)."""
    filters = list(DEFAULT_FILTER_VALUES)
    level_name = list(filters)
    level_name[2], level_name[7] = [1, 2], "a"

    def browse(move: str, page: int, flt: list, sort_by: str) -> Callable[[], object]:
        return lambda: browse_tab.browse_view(
            explorer, move, page, *flt, sort_by, True, browse_tab.PAGE_SIZE
        )

    return {
        "Latents: first page (by frequency)": browse("first", 1, filters, "frequency"),
        "Latents: page 3 by label purity": browse("this", 3, filters, "label_purity"),
        "Latents: next page": browse("next", 1, filters, "max_act"),
        "Latents: levels 1-2 + name filter": browse("first", 1, level_name, "name_score"),
        "Latents: map (PCA, by level)": lambda: browse_tab.map_view(
            explorer, "pca", "level", *filters, progress=no_progress
        ),
        "Latents: map (PCA, by frequency)": lambda: browse_tab.map_view(
            explorer, "pca", "frequency", *filters, progress=no_progress
        ),
        "Latent: whole page": lambda: latent_tab.latent_view(explorer, latent_id),
        "Latent: label mix": lambda: explorer.label_mix(latent_id),
        "Latent: cross-modal agreement": lambda: explorer.cross_modal_agreement(latent_id),
    }


def timed(fn: Callable[[], object]) -> float:
    return timed_both(fn)[0]


def timed_both(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one call (CPU: every thread of this process; on a shared
    machine the wall time also counts waiting for a core, the CPU time does not)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def report(title: str, explorer: Explorer, calls: int, umap: bool) -> None:
    print(f"\n== {title}: {explorer.index.n_items} items, {explorer.n_latents} latents")
    print(f"  once per explorer: latent table {timed(lambda: explorer.latent_table):.0f} ms")
    fpath = explorer.decoder_map("pca").fpath
    fpath.unlink()
    print(f"  once per SAE:      PCA map {timed(lambda: explorer.decoder_map('pca')):.0f} ms")
    if umap:
        print(f"  once per SAE:      UMAP map {timed(lambda: explorer.decoder_map('umap')):.0f} ms")
    live = np.flatnonzero(explorer.frequency_l > 0)
    latent_id = int(live[np.argsort(explorer.frequency_l[live])[len(live) // 2]])  # median
    print(f"  latent {latent_id} (median frequency); times in ms, wall (CPU)")
    print(f"  {'view':38s} {'cold':>14s} {'median':>14s} {'max':>8s}  <= {TARGET_MS:.0f} ms")
    for name, fn in views(explorer, latent_id).items():
        cold = timed_both(fn)
        times = np.array([timed_both(fn) for _ in range(calls)])
        median, cpu = np.median(times, axis=0)
        verdict = "yes" if median <= TARGET_MS else ("CPU yes" if cpu <= TARGET_MS else "NO")
        print(
            f"  {name:38s} {cold[0]:6.0f} ({cold[1]:5.0f}) {median:6.0f} ({cpu:5.0f}) "
            f"{times[:, 0].max():8.0f}  {verdict}"
        )


def synthetic_explorer(cache_dpath: Path, n_items: int, n_latents: int, density: float) -> Explorer:
    """A random-embedding index of ``n_items`` (half images of the shapes world, half texts, 10
    labels) under a random Matryoshka SAE of the world's CLIP width (see the module docstring)."""
    from statistics import NormalDist

    import torch
    from tqdm import tqdm

    from sae_explorer.builtin import DEFAULT
    from sae_explorer.corpus import CorpusItem
    from sae_explorer.encoder import load_encoder
    from sae_explorer.explorer import Sources
    from sae_explorer.precompute import PrecomputeConfig, index_embeddings
    from sae_explorer.sae import SAE, SAEConfig

    encoder = load_encoder(DEFAULT.source, device="cpu")
    d = encoder.embed_dim
    cfg = SAEConfig.matryoshka(d, n_latents, k=32)
    sae = SAE(cfg, generator=torch.Generator().manual_seed(0)).eval()
    with torch.no_grad():
        sae.latent_bias.fill_(-NormalDist().inv_cdf(1.0 - density))
    rng = np.random.default_rng(0)
    x_nd = rng.standard_normal((n_items, d)).astype(
        np.float32
    )  # unit variance, as the bias expects
    labels = [f"class{i}" for i in rng.integers(0, 10, n_items)]
    items = [
        CorpusItem(f"{i}:image", "image", f"{DEFAULT.source}?seed=0&index={i}", labels[i])
        if i % 2 == 0
        else CorpusItem(f"{i}:text", "text", f"text number {i}", labels[i])
        for i in range(n_items)
    ]
    t0 = time.perf_counter()
    with tqdm(total=1000, desc="synthetic index", unit="‰", file=sys.stderr) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.update(int(fraction * 1000) - bar.n)

        dpath = cache_dpath / "index" / "synthetic"
        index = index_embeddings(sae, x_nd, dpath, PrecomputeConfig(), items, progress)
    print(f"(synthetic index built in {time.perf_counter() - t0:.0f} s)")
    return Explorer(encoder, sae, index, None, Sources(DEFAULT.source, "random", "synthetic"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--latents", type=int, default=6_144)
    parser.add_argument("--world-items", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=7)
    parser.add_argument("--density", type=float, default=0.002, help="synthetic: latents on")
    parser.add_argument("--umap", action="store_true", help="also time the UMAP projection")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = world_explorer(Path(tmp) / "world", args.world_items)
        report("built-in world", world, args.calls, args.umap)
        synthetic = synthetic_explorer(
            Path(tmp) / "synthetic", args.items, args.latents, args.density
        )
        report("synthetic index", synthetic, args.calls, args.umap)


if __name__ == "__main__":
    main()
