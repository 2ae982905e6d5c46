"""The index stage against bare ``sae.encode`` on the same device (issue 12, item 2).

For each SAE width: bare ``sae.encode`` over the rows already on the device (the ceiling), then
:func:`sae_explorer.precompute.index_embeddings` over the same rows with the codes and
statistics computed on the device (``index_on="device"``) and, for comparison, in numpy on the
host (``index_on="host"``). Prints rows/s and each index stage's ratio to the bare encode: the
whole build (embeddings written, codes, statistics, the per-latent arrays and items table at the
end) and its SAE stage alone (the manifest's ``sae_index_s``). Target on a GPU: the index stage
at >= 50% of bare encode at 1M x 768 -> 6,144 (and 24,576).

    python benchmarks/bench_index_device.py                       # 1M rows, best device
    python benchmarks/bench_index_device.py --n-items 50000       # a CPU-sized run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_index import make_sae  # noqa: E402

from sae_explorer.precompute import PrecomputeConfig, index_embeddings  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def bare_encode_rows_s(sae, x_nd: np.ndarray, batch: int, device: torch.device) -> float:
    """Rows per second of ``sae.encode`` alone over rows resident on the device."""
    n_resident = min(len(x_nd), 65536)  # the same rows, cycled: no host transfer in the loop
    x_device = torch.from_numpy(x_nd[:n_resident]).to(device)
    with torch.inference_mode():
        sae.encode(x_device[:batch])  # warm-up (kernels, allocator)
        sync(device)
        t0 = time.perf_counter()
        for s in range(0, len(x_nd), batch):
            lo = s % n_resident
            sae.encode(x_device[lo : lo + batch])
        sync(device)
    return len(x_nd) / (time.perf_counter() - t0)


def index_rows_s(sae, x_nd: np.ndarray, index_on: str, args, dpath: Path) -> tuple[float, float]:
    """Rows per second of the whole ``index_embeddings`` and of its SAE stage alone."""
    cfg = PrecomputeConfig(
        top_k=args.top_k,
        top_m=args.top_m,
        chunk_size=args.chunk,
        sae_batch_size=args.batch,
        index_on=index_on,
    )
    t0 = time.perf_counter()
    index = index_embeddings(sae, x_nd, dpath, cfg)
    total_s = time.perf_counter() - t0
    stage_s = index.manifest["timings"]["sae_index_s"]
    return len(x_nd) / total_s, len(x_nd) / stage_s


def index_differences(host_dpath: Path, device_dpath: Path, sum_rtol: float = 1e-5) -> str:
    """Where the device-built index differs from the host-built one: top-M sets, counts,
    maxima, histograms, samples and codes equal; sums within ``sum_rtol``; '' when none does."""
    found = []
    for fpath in sorted(host_dpath.glob("*.npy")):
        a, b = np.load(fpath), np.load(device_dpath / fpath.name)
        if fpath.name == "latent_sum.npy":
            same = np.allclose(b, a, rtol=sum_rtol, atol=0)
        elif fpath.name == "latent_top_idx.npy":  # a set per latent (ties may order apart)
            same = np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1))
        else:
            same = a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
        if not same:
            found.append(fpath.name)
    return ", ".join(found) and f"no, they differ in {', '.join(found)}"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n-items", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--n-latents", default="6144,24576", help="comma-separated SAE widths")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="SAE batch (default: 4096 GPU, 512 CPU)")
    p.add_argument("--chunk", type=int, default=None, help="rows per chunk (default: 16 batches)")
    p.add_argument("--modes", default="device,host", help="index_on settings to measure")
    p.add_argument("--top-k", type=int, default=128)
    p.add_argument("--top-m", type=int, default=32)
    p.add_argument("--density", type=float, default=0.2, help="non-zero share of activations")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    args.batch = args.batch or (4096 if device.type == "cuda" else 512)
    args.chunk = args.chunk or 16 * args.batch
    x_nd = np.random.default_rng(0).standard_normal((args.n_items, args.d), dtype=np.float32)
    print(
        f"{time.strftime('%Y-%m-%d')} on {device_name(device)} (torch {torch.__version__}); "
        f"{args.n_items:,} rows x {args.d}, SAE batch {args.batch}, chunk {args.chunk}",
        flush=True,
    )
    figures = []
    for n_latents in (int(w) for w in args.n_latents.split(",")):
        sae = make_sae(args.d, n_latents, "TopKReLU", 64, args.density).to(device)
        bare = bare_encode_rows_s(sae, x_nd, args.batch, device)
        print(f"  {args.d} -> {n_latents:,}: bare sae.encode {bare:,.0f} rows/s", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench_index_device_") as tmp:
            for mode in args.modes.split(","):
                whole, stage = index_rows_s(sae, x_nd, mode, args, Path(tmp) / mode)
                print(
                    f"    index_on={mode:6s} build {whole:,.0f} rows/s ({whole / bare:.0%} of "
                    f"bare); SAE stage {stage:,.0f} rows/s ({stage / bare:.0%} of bare)",
                    flush=True,
                )
                figures.append(
                    {"n_latents": n_latents, "index_on": mode, "bare_rows_s": bare}
                    | {"build_rows_s": whole, "stage_rows_s": stage}
                )
            if {"device", "host"} <= set(args.modes.split(",")):
                differences = index_differences(Path(tmp) / "host", Path(tmp) / "device")
                print(f"    device index == host index: {differences or 'yes'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
