"""The app's reads at 10 million items: an index built on Ray from precomputed embeddings, then
opened and read as the app reads it.

1. Synthetic clustered embeddings ``[n, 512]`` fp16 (ViT-B/32's width), written in blocks to a
   ``.npy`` under ``--data-dir``: items around ``n / 2,500`` centres, each varying along a
   16-d subspace of its own plus small isotropic noise (low intrinsic dimension, as CLIP
   embeddings have; uniform noise would make every neighbour list arbitrary).
2. A random SAE 512 -> 6,144 whose bias makes ``--density`` of the latents active.
3. ``index_embeddings_on_ray`` (local Ray cluster, ``--actors`` actors of one CPU): shards,
   merge, the ANN index (faiss IVF-PQ). The source embeddings are deleted afterwards (the
   index holds its own copy) unless ``--keep-source``.
4. In a fresh process (its own RSS): opening the index (manifest, memory maps, items table
   footer, ANN index), the latent page's index reads (summary, top 32 items with their rows,
   quantile samples, histogram) over random latents, neighbours (k=10, approximate above the
   ANN threshold) over queries drawn from the same distribution, recall@10 of those against
   exact search, and the peak RSS.

    nice -n 10 python benchmarks/bench_10m.py --n-items 10000000 --data-dir /work/scale-data
    python benchmarks/bench_10m.py --n-items 100000 --data-dir /work/scale-data   # minutes
    python benchmarks/bench_10m.py --measure-only --n-items 10000000 ...          # step 4 only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

D, N_LATENTS, ROWS_PER_BLOCK, CLUSTER_SIZE, SUBSPACE = 512, 6144, 262144, 2500, 16


def centres_and_bases(n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n_items // CLUSTER_SIZE)
    centres_cd = rng.standard_normal((n_clusters, D)).astype(np.float32)
    bases_csd = rng.standard_normal((n_clusters, SUBSPACE, D)).astype(np.float32) * 0.25
    return centres_cd, bases_csd


def draw(centres_cd, bases_csd, n: int, rng) -> np.ndarray:
    """``n`` embeddings: a centre, a point of its subspace, and noise."""
    c_n = rng.integers(0, len(centres_cd), n)
    z_ns = rng.standard_normal((n, SUBSPACE)).astype(np.float32)
    x_nd = centres_cd[c_n] + 0.05 * rng.standard_normal((n, D)).astype(np.float32)
    order = np.argsort(c_n, kind="stable")
    starts = np.flatnonzero(np.diff(c_n[order], prepend=-1))
    for lo, hi in zip(starts, [*starts[1:], n]):  # one matmul per cluster present
        rows = order[lo:hi]
        x_nd[rows] += z_ns[rows] @ bases_csd[c_n[rows[0]]]
    return x_nd


def write_embeddings(fpath: Path, n_items: int, seed: int) -> None:
    from tqdm import tqdm

    if fpath.is_file() and np.load(fpath, mmap_mode="r").shape == (n_items, D):
        return
    centres_cd, bases_csd = centres_and_bases(n_items, seed)
    rng = np.random.default_rng(seed + 1)
    tmp = fpath.with_suffix(".partial.npy")
    x_nd = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_items, D))
    for lo in tqdm(range(0, n_items, ROWS_PER_BLOCK), desc="embeddings", unit="block"):
        hi = min(lo + ROWS_PER_BLOCK, n_items)
        x_nd[lo:hi] = draw(centres_cd, bases_csd, hi - lo, rng).astype(np.float16)
    x_nd.flush()
    del x_nd
    tmp.rename(fpath)


def build(args: argparse.Namespace) -> Path:
    import torch
    from bench_index import make_sae
    from tqdm import tqdm

    from sae_explorer.checkpoints.project import save_sae
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.ray_embeddings import index_embeddings_on_ray
    from sae_explorer.ray_engine import RayConfig

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    x_fpath, index_dpath = data / f"embeddings_{args.n_items}.npy", data / f"index_{args.n_items}"
    t0 = time.perf_counter()
    write_embeddings(x_fpath, args.n_items, args.seed)
    print(f"embeddings: {args.n_items} x {D} fp16 in {time.perf_counter() - t0:.0f}s", flush=True)
    sae_dpath = data / "sae_512x6144"
    if not (sae_dpath / "config.json").is_file():
        torch.manual_seed(args.seed)
        save_sae(make_sae(D, N_LATENTS, "ReLU", 0, args.density, args.seed), sae_dpath)
    cfg = PrecomputeConfig(top_k=args.top_k, chunk_size=4096, sae_workers=1, names=False)
    ray_cfg = RayConfig(shard_size=args.shard_size, n_actors=args.actors, cpus_per_actor=1)
    t0 = time.perf_counter()
    with tqdm(total=1000, unit="‰", file=sys.stderr) as bar:

        def progress(frac: float, message: str) -> None:
            bar.n = int(1000 * frac)
            bar.set_description(message[:60], refresh=True)

        result = index_embeddings_on_ray(sae_dpath, x_fpath, index_dpath, cfg, ray_cfg, progress)
    build_s = time.perf_counter() - t0
    timings = result.index.manifest["timings"]
    print(
        f"ray build: {build_s:.0f}s ({args.n_items / build_s:,.0f} items/s; shards built "
        f"{len(result.computed)}, found {len(result.reused)}; merge+assembly "
        f"{timings.get('finish_s', 0):.0f}s)",
        flush=True,
    )
    if not args.keep_source:
        x_fpath.unlink()  # the index holds its own copy of the embeddings
    size = sum(f.stat().st_size for f in index_dpath.iterdir() if f.is_file())
    print(f"index on disk: {size / 1e9:.2f} GB in {index_dpath}", flush=True)
    return index_dpath


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(args: argparse.Namespace) -> dict:
    """Step 4, in this (fresh) process."""
    from sae_explorer.index import ActivationIndex
    from sae_explorer.index.ann import AnnConfig

    index_dpath = Path(args.data_dir) / f"index_{args.n_items}"
    t0 = time.perf_counter()
    index = ActivationIndex.load(index_dpath)
    index.item_table  # noqa: B018 (the footer: what a page needs to read rows)
    index.prepare_serving()
    open_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed + 2)
    page_s, page_cpu_s = [], []
    for latent in rng.choice(index.n_latents, args.n_pages, replace=False):
        t0, c0 = time.perf_counter(), time.process_time()
        index.latent_summary(int(latent))
        index.top_examples(int(latent), 32)
        index.quantile_samples(int(latent))
        index.histogram(int(latent))
        page_s.append(time.perf_counter() - t0)
        page_cpu_s.append(time.process_time() - c0)
    centres_cd, bases_csd = centres_and_bases(args.n_items, args.seed)
    q_qd = draw(centres_cd, bases_csd, args.n_queries, rng)
    nn_s, nn_cpu_s, got = [], [], []
    for q_d in q_qd:
        t0, c0 = time.perf_counter(), time.process_time()
        got.append(index.nearest(q_d, 10)["item_idx"].to_numpy())
        nn_s.append(time.perf_counter() - t0)
        nn_cpu_s.append(time.process_time() - c0)
    serving_rss_mb = rss_mb()  # before the exact passes map every embedding
    exact = ActivationIndex.load(index_dpath)
    exact.ann_cfg = AnnConfig(min_items=10**12)
    recalls, exact_s = [], []
    for q_d, ids in list(zip(q_qd, got))[: args.n_recall]:
        t0 = time.perf_counter()
        want = exact.nearest(q_d, 10)["item_idx"].to_numpy()
        exact_s.append(time.perf_counter() - t0)
        recalls.append(len(set(ids) & set(want)) / 10)
    return {
        "n_items": index.n_items,
        "approximate": index.searches_approximately,
        "open_s": open_s,
        "page_p50_ms": 1e3 * float(np.median(page_s)),
        "page_p95_ms": 1e3 * float(np.percentile(page_s, 95)),
        "page_first_ms": 1e3 * page_s[0],
        "neighbours_p50_ms": 1e3 * float(np.median(nn_s)),
        "neighbours_p95_ms": 1e3 * float(np.percentile(nn_s, 95)),
        "neighbours_first_ms": 1e3 * nn_s[0],
        "exact_p50_ms": 1e3 * float(np.median(exact_s)),
        "page_cpu_p50_ms": 1e3 * float(np.median(page_cpu_s)),
        "neighbours_cpu_p50_ms": 1e3 * float(np.median(nn_cpu_s)),
        "recall_at_10": float(np.mean(recalls)),
        "rss_mb": serving_rss_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=10_000_000)
    parser.add_argument("--data-dir", default="/work/scale-data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--density", type=float, default=0.05, help="share of active latents")
    parser.add_argument("--top-k", type=int, default=32, help="codes kept per item")
    parser.add_argument("--shard-size", type=int, default=1 << 20)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--keep-source", action="store_true")
    parser.add_argument("--measure-only", action="store_true")
    parser.add_argument("--n-pages", type=int, default=200)
    parser.add_argument("--n-queries", type=int, default=100)
    parser.add_argument("--n-recall", type=int, default=20)
    parser.add_argument("--ann-min-items", type=int, help="ANN threshold (default: library's)")
    parser.add_argument("--json", action="store_true", help="step 4 only, as JSON (internal)")
    args = parser.parse_args()
    if args.ann_min_items is not None:
        from sae_explorer.index import ActivationIndex
        from sae_explorer.index.ann import AnnConfig

        ActivationIndex.ann_cfg = AnnConfig(min_items=args.ann_min_items)
    if args.json:
        print(json.dumps(measure(args)))
        return
    need_gb = args.n_items * D * 2 * 3.4 / 1e9  # the source, the shards, the index; codes twice
    free_gb = shutil.disk_usage(Path(args.data_dir).parent).free / 1e9
    if not args.measure_only and need_gb > free_gb:
        raise SystemExit(f"needs ~{need_gb:.0f} GB free under {args.data_dir}, has {free_gb:.0f}")
    if not args.measure_only:
        build(args)
    cmd = [sys.executable, __file__, "--json", *sys.argv[1:]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
    m = json.loads(out.strip().splitlines()[-1])
    kind = "ANN (faiss IVF-PQ, re-ranked)" if m["approximate"] else "exact"
    print(f"\n{m['n_items']:,} items x {N_LATENTS} latents, d={D}; neighbours: {kind}")
    print(f"open the index:        {m['open_s'] * 1e3:8.0f} ms   (target <= 1000)")
    print(
        f"latent page p50:       {m['page_p50_ms']:8.1f} ms   (target <= 30; p95 "
        f"{m['page_p95_ms']:.1f}, first {m['page_first_ms']:.1f})"
    )
    print(
        f"neighbours p50:        {m['neighbours_p50_ms']:8.1f} ms   (target <= 50; p95 "
        f"{m['neighbours_p95_ms']:.1f}, first {m['neighbours_first_ms']:.1f}; exact "
        f"{m['exact_p50_ms']:.0f})"
    )
    print(
        f"CPU time p50 (what a free core would take): latent page "
        f"{m['page_cpu_p50_ms']:.1f} ms, neighbours {m['neighbours_cpu_p50_ms']:.1f} ms"
    )
    print(f"recall@10 vs exact:    {m['recall_at_10']:8.3f}      (target >= 0.95)")
    print(
        f"RSS: {m['rss_mb']:.0f} MB serving (after the pages and queries), "
        f"{m['peak_rss_mb']:.0f} MB peak (with the exact passes' mapped embeddings)"
    )
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
