"""Training speed: Matryoshka SAE vs plain TopK SAE on the same synthetic data, same run.

Default: 100k x 512 embeddings -> 4096 latents, one epoch each, on CPU (a memory-mapped .npy, as
the CLI reads it). Prints seconds per epoch, samples/s and the MSAE / TopK time ratio. Absolute
numbers depend on the machine and its load; the ratio is measured back to back in one process.

    python benchmarks/bench_train.py [--n-samples 100000] [--n-inputs 512] [--n-latents 4096]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sae_explorer.train import TrainConfig, train_sae


def synthetic_embeddings(
    fpath: Path, n: int, d: int, n_dirs: int = 8192, s: int = 16
) -> np.ndarray:
    """Sparse non-negative combinations of random unit directions, written as a memmapped .npy."""
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(n_dirs, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 10_000):
        m = min(10_000, n - start)
        chosen = rng.integers(0, n_dirs, size=(m, s))
        coef = rng.exponential(1.0, size=(m, s)).astype(np.float32)
        out[start : start + m] = np.einsum("ms,msd->md", coef, dirs[chosen]) + 0.5
    out.flush()
    return np.load(fpath, mmap_mode="r")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument("--n-inputs", type=int, default=512)
    parser.add_argument("--n-latents", type=int, default=4096)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        x_nd = synthetic_embeddings(Path(tmp) / "x.npy", args.n_samples, args.n_inputs)
        print(
            f"data {x_nd.shape} float32 (memmapped); {args.n_inputs} -> {args.n_latents} latents, "
            f"k={args.k}, batch {args.batch_size}, {args.epochs} epoch(s), device {args.device}, "
            f"{torch.get_num_threads()} torch threads"
        )
        seconds = {}
        for arch in ("topk", "matryoshka"):
            cfg = TrainConfig(
                n_latents=args.n_latents,
                architecture=arch,
                k=args.k,
                epochs=args.epochs,
                batch_size=args.batch_size,
                device=args.device,
            )
            started = time.perf_counter()
            result = train_sae(x_nd, cfg)
            total = time.perf_counter() - started
            m = result.metrics
            seconds[arch] = m["train_seconds"]
            val = m["val"]
            print(
                f"{arch:>10}: {m['train_seconds'] / args.epochs:7.1f} s/epoch  "
                f"{m['samples_per_second']:8.0f} samples/s  ({m['steps']} steps; "
                f"{total:.1f} s incl. stats+eval)  held-out FVU {val['fvu']:.3f} "
                f"L0 {val['l0']:.0f} dead {val['dead_latents']}"
            )
            if arch == "matryoshka":
                levels = ", ".join(f"k={lv['k']}: {lv['fvu']:.3f}" for lv in val["levels"])
                print(f"            per-level FVU: {levels}")
        print(f"MSAE / TopK training-time ratio: {seconds['matryoshka'] / seconds['topk']:.2f}")


if __name__ == "__main__":
    main()
