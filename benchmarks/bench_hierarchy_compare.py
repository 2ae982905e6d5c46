"""Speed and memory of the Matryoshka hierarchy and of matching two SAEs.

    python benchmarks/bench_hierarchy_compare.py [--items 100000] [--latents 24576] [--sizes 1024 2048 4096]

Hierarchy: synthetic index codes (``--items`` items, at most 128 codes each, latent popularity
falling as a power law, levels doubling with the latent id as in a width-nested Matryoshka SAE):
building the co-activation matrices once (time, memory added), then one latent's parents and
children and a descendant tree (depth 2, 5 children), p50 / p95 / max over latents of every
frequency. Matching: two random 768-d dictionaries of each size: the float64 cost matrix, the
Hungarian assignment (time) and the peak memory added; then activation correlations of two
6,144-latent SAEs (items / s).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer.coactivation import Coactivations
from sae_explorer.latent_matching import activation_correlation, match_latents, modality_saes
from sae_explorer.sae import SAE, SAEConfig


def synthetic_codes(n_items: int, n_latents: int, k: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_latents + 1) ** 0.8
    ids = rng.choice(n_latents, size=(n_items, k), p=p / p.sum()).astype(np.int32)
    ids.sort(axis=1)
    repeat = np.zeros_like(ids, dtype=bool)
    repeat[:, 1:] = ids[:, 1:] == ids[:, :-1]
    indptr = np.concatenate([[0], np.cumsum((~repeat).sum(1))]).astype(np.int64)
    levels = np.log2(np.arange(n_latents) // 64 + 1).astype(np.int64)  # 64, 128, 256, ...
    return indptr, ids[~repeat], levels


def percentiles(ms: list[float]) -> str:
    a = np.asarray(ms)
    return f"p50 {np.median(a):.1f} ms / p95 {np.percentile(a, 95):.1f} ms / max {a.max():.1f} ms"


def bench_hierarchy(n_items: int, n_latents: int) -> None:
    indptr, ids, levels = synthetic_codes(n_items, n_latents)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    co = Coactivations(indptr, ids, n_latents, levels)
    build = time.perf_counter() - t0
    added = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(
        f"hierarchy, {n_items:,} items x {n_latents:,} latents, {len(ids):,} codes: "
        f"co-activation matrices built in {build:.2f} s, +{added:.0f} MB peak RSS"
    )
    order = np.argsort(-co.count_l)
    sample = np.unique(
        np.concatenate([order[:10], order[np.linspace(0, n_latents - 1, 190).astype(int)]])
    )
    family_ms, tree_ms = [], []
    for latent in sample:
        t0 = time.perf_counter()
        co.family(int(latent))
        family_ms.append(1000 * (time.perf_counter() - t0))
    for latent in order[:50]:  # the most frequent latents: the biggest trees
        t0 = time.perf_counter()
        co.descendants(int(latent), max_depth=2, max_children=5)
        tree_ms.append(1000 * (time.perf_counter() - t0))
    print(f"  one latent's parents and children ({len(sample)} latents): {percentiles(family_ms)}")
    print(f"  descendant tree of the 50 most frequent latents: {percentiles(tree_ms)}")


def bench_matching(sizes: list[int], d: int = 768) -> None:
    gen = torch.Generator().manual_seed(0)
    for n in sizes:
        a_ld = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
        b_ld = torch.nn.functional.normalize(torch.randn(n, d, generator=gen), dim=1)
        tracemalloc.start()
        t0 = time.perf_counter()
        match_latents(a_ld, b_ld, max_cells=n * n)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        print(
            f"matching {n:,} x {n:,} random {d}-d directions: {seconds:.1f} s, "
            f"peak +{peak:.0f} MiB (cost matrix {n * n * 8 / 2**20:.0f} MiB)"
        )


def bench_correlation(n_items: int = 20_000, n_latents: int = 6144, d: int = 768) -> None:
    saes = [
        SAE(SAEConfig.matryoshka(d, n_latents, 64), generator=torch.Generator().manual_seed(s))
        for s in (0, 1)
    ]
    x_nd = np.random.default_rng(0).normal(size=(n_items, d)).astype(np.float32)
    flags = np.ones(n_items, dtype=bool)
    views = [modality_saes(sae.eval(), x_nd, flags) for sae in saes]
    pairs = np.arange(n_latents)
    t0 = time.perf_counter()
    activation_correlation(*views, x_nd, flags, pairs, pairs)
    seconds = time.perf_counter() - t0
    print(
        f"activation correlations, two {d} -> {n_latents:,} SAEs over {n_items:,} items: "
        f"{seconds:.1f} s ({n_items / seconds:,.0f} items / s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--latents", type=int, default=24_576)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096])
    args = parser.parse_args(argv)
    bench_hierarchy(args.items, args.latents)
    bench_matching(args.sizes)
    bench_correlation()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
