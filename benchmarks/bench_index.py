"""Sparse activation index vs MSAE's dense-latents-then-argsort, on the same synthetic data.

Baseline (what MSAE's scripts do): encode every embedding with the SAE, store the dense float32
latents ``[n_items, n_latents]`` (memmap), then argsort each latent's column for its top items.
Ours: :func:`sae_explorer.precompute.index_embeddings` (streaming top-M merge, per-item top-K
codes, statistics, histogram, samples). Each side runs in its own subprocess so peak RSS is its
own. Also measured: the SAE stage's throughput as a fraction of a bare ``torch.matmul`` of the
same shapes, and per-latent lookup latency (top examples + stats) on indexes of 100k and 1M
items. Prints ratios measured in this one run.

    python benchmarks/bench_index.py                 # 200,000 x 768 -> 6,144 (several minutes)
    python benchmarks/bench_index.py --n-items 50000 # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_sae(d: int, n_latents: int, activation: str, k: int, density: float, seed: int = 0):
    """A random SAE (contract: ``SAE(SAEConfig)``) whose latent bias makes about ``density`` of
    the full activations non-zero on unit-variance inputs, like a trained MSAE (~80% sparse)."""
    from statistics import NormalDist

    import torch

    from sae_explorer.sae import SAE, SAEConfig

    k_arg = k if activation.startswith("TopK") else None
    sae = SAE(
        SAEConfig(d, n_latents, activation, k=k_arg), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        sae.latent_bias.fill_(-NormalDist().inv_cdf(1.0 - density))
    return sae.eval()


class NpyRows:
    """Row slices of a 2-d ``.npy`` file read with plain file reads: unlike a memory map, rows
    already read do not stay in the reader's resident memory (both sides use this)."""

    def __init__(self, fpath: str) -> None:
        self.file = open(fpath, "rb")  # noqa: SIM115 (lives as long as the process)
        version = np.lib.format.read_magic(self.file)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        self.shape, _, self.dtype = read_header(self.file)
        self.offset = self.file.tell()
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        row_bytes = self.shape[1] * self.dtype.itemsize
        self.file.seek(self.offset + start * row_bytes)
        n = max(stop - start, 0)
        return np.fromfile(self.file, dtype=self.dtype, count=n * self.shape[1]).reshape(n, -1)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def dir_bytes(dpath: Path, exclude: tuple[str, ...] = ()) -> int:
    return sum(p.stat().st_size for p in dpath.rglob("*") if p.is_file() and p.name not in exclude)


# --------------------------------------------------------------------------- the two sides
def side_inputs(args):
    """What both sides start from, set up alike: the rows, the SAE, and the resident memory
    after them (the import baseline the peak is compared against)."""
    import torch

    torch.set_num_threads(args.threads)
    x = NpyRows(args.x_fpath)
    sae = make_sae(args.d, args.n_latents, args.activation, args.k, args.density)
    return x, sae, current_rss_mb()


def run_dense(args) -> dict:
    """MSAE's way: dense float32 latents memmap, then per-latent argsort (in column blocks)."""
    import torch

    x, sae, base_rss = side_inputs(args)
    out = Path(args.workdir) / "dense"
    out.mkdir(parents=True, exist_ok=True)
    t0, cpu0 = time.perf_counter(), cpu_s()
    z = np.lib.format.open_memmap(
        out / "latents.npy", mode="w+", dtype=np.float32, shape=(len(x), args.n_latents)
    )
    with torch.inference_mode():
        for s in range(0, len(x), args.batch):
            z[s : s + args.batch] = sae.encode(
                torch.from_numpy(np.asarray(x[s : s + args.batch], np.float32))
            ).numpy()
    z.flush()
    t_encode = time.perf_counter() - t0
    top_idx = np.empty((args.n_latents, args.top_m), dtype=np.int64)
    block = 64
    for j in range(0, args.n_latents, block):
        cols = np.asarray(z[:, j : j + block])
        order = np.argsort(cols, axis=0)[::-1][: args.top_m]
        top_idx[j : j + block] = order.T
    np.save(out / "top_idx.npy", top_idx)
    t_total = time.perf_counter() - t0
    return {
        "build_s": t_total,
        "cpu_s": cpu_s() - cpu0,
        "encode_write_s": t_encode,
        "argsort_s": t_total - t_encode,
        "peak_rss_mb": rss_mb(),
        "base_rss_mb": base_rss,
        "disk_bytes": dir_bytes(out),
        "top_idx_fpath": str(out / "top_idx.npy"),
    }


def run_index(args) -> dict:
    from sae_explorer.precompute import PrecomputeConfig, index_embeddings

    x, sae, base_rss = side_inputs(args)
    out = Path(args.workdir) / "index"
    shutil.rmtree(out, ignore_errors=True)
    cfg = PrecomputeConfig(
        top_m=args.top_m, chunk_size=args.chunk, sae_batch_size=args.index_batch, names=False
    )
    t0, cpu0 = time.perf_counter(), cpu_s()
    index = index_embeddings(sae, x, out, cfg)
    t_total = time.perf_counter() - t0
    np.save(Path(args.workdir) / "index_top_idx.npy", np.asarray(index._top_idx))
    emb_bytes = (out / "embeddings.npy").stat().st_size
    return {
        "build_s": t_total,
        "cpu_s": cpu_s() - cpu0,
        "timings": index.manifest["timings"],
        "peak_rss_mb": rss_mb(),
        "base_rss_mb": base_rss,
        "disk_bytes": dir_bytes(out, exclude=("embeddings.npy",)),
        "disk_bytes_with_embeddings": dir_bytes(out),
        "embeddings_bytes": emb_bytes,
        "codes_nnz": index.manifest["counts"]["codes_nnz"],
        "mean_frequency": float(index.frequency.mean()),
        "sae_workers": cfg.sae_workers,
    }


def run_sae_stage(args) -> dict:
    """Items/s of the SAE stage (encode + accumulate + top-K codes) vs a bare matmul.

    The machine is shared, so each batch is timed three ways back to back (bare matmul, SAE
    encode, accumulate + codes) and medians over batches are compared. The first batches cost
    more (every item still enters the top-M); the median is what a long run sees.
    """
    import torch

    from sae_explorer.index import LatentAccumulator, active_entries, top_codes

    torch.set_num_threads(args.threads)
    x = np.load(args.x_fpath, mmap_mode="r")
    n = min(len(x), args.stage_items)
    x_nd = torch.from_numpy(np.array(x[:n], np.float32))
    sae = make_sae(args.d, args.n_latents, args.activation, args.k, args.density)
    w_dl = sae.encoder.detach().clone()
    acc = LatentAccumulator(args.n_latents, args.top_m, 64)
    t_matmul, t_encode, t_index = [], [], []
    batch = args.index_batch
    with torch.inference_mode():
        for s in range(0, n - batch + 1, batch):
            x_bd = x_nd[s : s + batch]
            t0 = time.perf_counter()
            torch.matmul(x_bd, w_dl)
            t1 = time.perf_counter()
            z_bl = sae.encode(x_bd)
            t2 = time.perf_counter()
            entries = active_entries(z_bl)
            is_image = torch.zeros(len(z_bl), dtype=torch.bool)
            acc.update(entries, torch.arange(s, s + len(z_bl)), is_image)
            top_codes(entries, 128)
            t3 = time.perf_counter()
            t_matmul.append(t1 - t0)
            t_encode.append(t2 - t1)
            t_index.append(t3 - t2)
    med = {
        k: float(np.median(v))
        for k, v in (("matmul", t_matmul), ("encode", t_encode), ("index", t_index))
    }
    return {
        "batch": batch,
        "n_batches": len(t_matmul),
        "matmul_items_per_s": batch / med["matmul"],
        "sae_encode_items_per_s": batch / med["encode"],
        "sae_stage_items_per_s": batch / (med["encode"] + med["index"]),
    }


def run_lookup(args) -> dict:
    """Load time and per-latent lookup latency on a synthetic index of ``args.lookup_n`` items."""
    from sae_explorer.index import ActivationIndex

    dpath = Path(args.workdir) / f"lookup-{args.lookup_n}"
    write_fake_index(dpath, args.lookup_n, args.n_latents, args.d, args.top_m)
    t0 = time.perf_counter()
    index = ActivationIndex.load(dpath)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = index.items
    items_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    latencies = []
    for latent in rng.integers(0, args.n_latents, 300):
        t0 = time.perf_counter()
        index.top_examples(int(latent))
        index.latent_summary(int(latent))
        index.histogram(int(latent))
        index.quantile_samples(int(latent))
        latencies.append(time.perf_counter() - t0)
    lat = np.array(latencies[20:]) * 1e3
    shutil.rmtree(dpath)
    return {
        "n_items": args.lookup_n,
        "load_s": load_s,
        "items_table_s": items_s,
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
    }


def write_fake_index(dpath: Path, n_items: int, n_latents: int, d: int, top_m: int) -> None:
    """A well-formed index with random contents (lookup cost does not depend on the values)."""
    import pandas as pd

    from sae_explorer.atomic import atomic_write_json
    from sae_explorer.index import (
        CODES_NAMES,
        EMBEDDINGS_NAME,
        HIST_N_BINS,
        ITEMS_NAME,
        MANIFEST_NAME,
        SCHEMA,
        NpyAppender,
        file_records,
        write_latent_arrays,
    )

    shutil.rmtree(dpath, ignore_errors=True)
    dpath.mkdir(parents=True)
    rng = np.random.default_rng(0)
    emb = NpyAppender(dpath / EMBEDDINGS_NAME, np.float16, (d,))
    for s in range(0, n_items, 100_000):
        emb.append(
            rng.standard_normal((min(100_000, n_items - s), d), dtype=np.float32).astype(np.float16)
        )
    emb.close()
    k = 32
    np.save(dpath / CODES_NAMES[0], np.arange(n_items + 1, dtype=np.int64) * k)
    np.save(dpath / CODES_NAMES[1], rng.integers(0, n_latents, n_items * k, dtype=np.int32))
    np.save(dpath / CODES_NAMES[2], rng.random(n_items * k, dtype=np.float32).astype(np.float16))
    write_latent_arrays(
        dpath,
        {
            "latent_count": rng.integers(1, n_items, n_latents),
            "latent_count_image": rng.integers(0, 2, n_latents),
            "latent_sum": rng.random(n_latents),
            "latent_max": rng.random(n_latents).astype(np.float32) + 1,
            "latent_level": rng.integers(-1, 5, n_latents).astype(np.int8),
            "latent_top_idx": rng.integers(0, n_items, (n_latents, top_m)).astype(np.int32),
            "latent_top_val": np.sort(rng.random((n_latents, top_m)), 1)[:, ::-1].astype(
                np.float32
            ),
            "latent_sample_idx": rng.integers(0, n_items, (n_latents, 64)).astype(np.int32),
            "latent_sample_val": np.sort(rng.random((n_latents, 64)), 1)[:, ::-1].astype(
                np.float32
            ),
            "latent_hist": rng.integers(0, 100, (n_latents, HIST_N_BINS)).astype(np.int32),
        },
    )
    items = pd.DataFrame(
        {
            "item_id": [f"img/{i:07d}.jpg" for i in range(n_items)],
            "modality": pd.Categorical(
                np.where(rng.random(n_items) < 0.5, "image", "text"), categories=["image", "text"]
            ),
            "source": [f"/data/images/{i:07d}.jpg" for i in range(n_items)],
            "label": pd.Categorical(rng.choice(["cat", "dog", "ship"], n_items)),
            "corpus_idx": np.arange(n_items),
            "n_active": rng.integers(0, 2000, n_items).astype(np.int32),
        }
    )
    items.to_parquet(dpath / ITEMS_NAME, index=False)
    manifest = {
        "schema": SCHEMA,
        "key": "fake",
        "counts": {"n_items": n_items, "n_latents": n_latents, "embed_dim": d},
        **file_records(dpath),
    }
    atomic_write_json(dpath / MANIFEST_NAME, manifest)


# --------------------------------------------------------------------------- driver
def child(args) -> None:
    fn = {"dense": run_dense, "index": run_index, "stage": run_sae_stage, "lookup": run_lookup}[
        args.role
    ]
    print("RESULT " + json.dumps(fn(args)), flush=True)


def spawn(args, role: str, **extra) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--role",
        role,
        "--x-fpath",
        args.x_fpath,
        "--workdir",
        args.workdir,
    ]
    for name in (
        "n_items",
        "d",
        "n_latents",
        "activation",
        "k",
        "density",
        "top_m",
        "batch",
        "index_batch",
        "chunk",
        "threads",
        "stage_items",
    ):
        cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name, value in extra.items():
        cmd += [f"--{name.replace('_', '-')}", str(value)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{role} failed:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    print(f"  [{role}] done in {time.perf_counter() - t0:.1f}s: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n-items", type=int, default=200_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--n-latents", type=int, default=6144)
    p.add_argument("--activation", default="TopKReLU")
    p.add_argument("--k", type=int, default=64)
    p.add_argument(
        "--density", type=float, default=0.2, help="fraction of non-zero full activations"
    )
    p.add_argument("--top-m", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024, help="dense baseline's encode batch")
    p.add_argument(
        "--index-batch", type=int, default=512, help="our SAE batch (PrecomputeConfig default)"
    )
    p.add_argument("--chunk", type=int, default=4096)
    p.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 2)))
    p.add_argument("--stage-items", type=int, default=32768)
    p.add_argument("--lookup-sizes", default="100000,1000000")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--workdir", default=None)
    p.add_argument("--role", default=None, help=argparse.SUPPRESS)
    p.add_argument("--x-fpath", default=None, help=argparse.SUPPRESS)
    p.add_argument("--lookup-n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role:
        child(args)
        return
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench_index_")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    args.x_fpath = str(work / "x.npy")
    print(
        f"synthetic embeddings {args.n_items:,} x {args.d} -> {args.n_latents:,} latents "
        f"({args.activation} k={args.k}, ~{args.density:.0%} active), top-M={args.top_m}, "
        f"{args.threads} torch threads, workdir {work}",
        flush=True,
    )
    rng = np.random.default_rng(0)
    x = np.lib.format.open_memmap(
        args.x_fpath, mode="w+", dtype=np.float32, shape=(args.n_items, args.d)
    )
    for s in range(0, args.n_items, 50_000):
        x[s : s + 50_000] = rng.standard_normal(
            (min(50_000, args.n_items - s), args.d), dtype=np.float32
        )
    x.flush()
    del x

    ours = spawn(args, "index")
    if not args.skip_dense:
        dense = spawn(args, "dense")
        same = np.load(work / "index_top_idx.npy")
        ref = np.load(dense["top_idx_fpath"])
        agree = float((np.sort(same, 1) == np.sort(ref, 1)).all(1).mean())
        print("\n== build: sparse index vs dense baseline ==")
        print(
            f"  build time   index {ours['build_s']:.1f}s   dense {dense['build_s']:.1f}s "
            f"(encode+write {dense['encode_write_s']:.1f}s, argsort {dense['argsort_s']:.1f}s)"
            f"   -> index {dense['build_s'] / ours['build_s']:.2f}x faster (target >= 5x)"
        )
        print(
            f"  CPU time     index {ours['cpu_s']:.1f}s   dense {dense['cpu_s']:.1f}s   -> "
            f"{dense['cpu_s'] / ours['cpu_s']:.2f}x less (robust to the shared machine's load); "
            f"index stages (s): {ours['timings']}"
        )
        print(
            f"  peak RSS     index {ours['peak_rss_mb']:.0f} MB   dense {dense['peak_rss_mb']:.0f} MB"
            f"   -> {dense['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x less in total (target >= 10x)"
        )
        d_extra = dense["peak_rss_mb"] - dense["base_rss_mb"]
        o_extra = ours["peak_rss_mb"] - ours["base_rss_mb"]
        print(
            f"               above the {ours['base_rss_mb']:.0f} MB held after imports (torch, SAE): "
            f"index {o_extra:.0f} MB, dense {d_extra:.0f} MB -> {d_extra / o_extra:.1f}x less "
            "(target >= 10x; the common import baseline is the same on both sides)"
        )
        print(
            f"  disk         index {ours['disk_bytes'] / 1e6:.0f} MB (+{ours['embeddings_bytes'] / 1e6:.0f} MB fp16 "
            f"embeddings)   dense {dense['disk_bytes'] / 1e6:.0f} MB   -> "
            f"{ours['disk_bytes'] / dense['disk_bytes']:.1%} of dense (target <= 5%); "
            f"{ours['disk_bytes_with_embeddings'] / dense['disk_bytes']:.1%} with embeddings"
        )
        print(f"  top-{args.top_m} sets identical to the dense argsort for {agree:.2%} of latents")
    stage = spawn(args, "stage")
    print("\n== SAE stage throughput ==")
    print(
        f"  bare matmul {stage['matmul_items_per_s']:,.0f} items/s; sae.encode {stage['sae_encode_items_per_s']:,.0f}; "
        f"encode+accumulate+codes {stage['sae_stage_items_per_s']:,.0f} -> "
        f"{stage['sae_stage_items_per_s'] / stage['matmul_items_per_s']:.0%} of matmul (target >= 50%)"
    )
    build_rate = args.n_items / ours["timings"]["sae_index_s"]
    print(
        f"  in the build above ({ours['sae_workers']} SAE workers overlapping matmul and indexing): "
        f"{build_rate:,.0f} items/s -> {build_rate / stage['matmul_items_per_s']:.0%} of matmul"
    )
    print("\n== per-latent lookup (top examples + summary + histogram + quantile samples) ==")
    for n in [int(v) for v in args.lookup_sizes.split(",") if v]:
        r = spawn(args, "lookup", lookup_n=n)
        print(
            f"  {n:>9,} items: load {r['load_s'] * 1e3:.0f} ms (+items table {r['items_table_s'] * 1e3:.0f} ms), "
            f"lookup p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms"
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
