"""precompute on Ray against the single-process build, on the same corpus, in one run.

Builds the index of the built-in world (images and captions, tiny CLIP, MSAE) once in this
process and once with ``--engine ray`` on a local cluster (``--ray-address`` to use a running
one), then prints items/s of each, Ray's start-up apart, and checks that the two indexes hold
the same top-M items.

    python benchmarks/bench_ray.py                      # 4,000 items, local cluster
    python benchmarks/bench_ray.py --n 20000 --shard-size 4096 --ray-address auto
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sae_explorer.checkpoints import load_sae  # noqa: E402
from sae_explorer.corpus import load_corpus  # noqa: E402
from sae_explorer.encoder import load_encoder  # noqa: E402
from sae_explorer.precompute import PrecomputeConfig, precompute  # noqa: E402
from sae_explorer.ray_engine import ModelSpec, RayConfig, precompute_on_ray  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--n", type=int, default=2000, help="world items (each an image and a caption)")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--cpus-per-actor", type=int, default=1)
    p.add_argument("--ray-address", default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    corpus = load_corpus(f"builtin:shapes?n={args.n}")
    cfg = PrecomputeConfig(chunk_size=args.chunk_size, n_workers=0, names=False)
    print(
        f"{len(corpus):,} items on {os.cpu_count()} CPUs; shards of {args.shard_size}", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        encoder = load_encoder("builtin:shapes", device="cpu")
        t0 = time.perf_counter()
        one = precompute(encoder, load_sae("builtin:shapes"), corpus, Path(tmp) / "one", cfg)
        one_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ray.init(address=args.ray_address, include_dashboard=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})  # fmt: skip
        start_s = time.perf_counter() - t0
        n_cpus = int(ray.cluster_resources().get("CPU", 0))
        ray_cfg = RayConfig(shard_size=args.shard_size, cpus_per_actor=args.cpus_per_actor)
        models = ModelSpec("builtin:shapes", "builtin:shapes", device="cpu")
        t0 = time.perf_counter()
        build = precompute_on_ray(models, corpus, Path(tmp) / "ray", cfg, ray_cfg)
        ray_s = time.perf_counter() - t0
        ray.shutdown()
        same = all(
            np.array_equal(np.load(one.dpath / f), np.load(build.index.dpath / f))
            for f in ("latent_top_idx.npy", "latent_sample_idx.npy", "codes_ids.npy")
        )
    n = len(corpus)
    print(f"single process: {one_s:.1f} s, {n / one_s:,.0f} items/s")
    print(
        f"ray ({n_cpus} CPUs, {n_cpus // args.cpus_per_actor} actors, "
        f"{len(build.computed)} shards): {ray_s:.1f} s, {n / ray_s:,.0f} items/s "
        f"({one_s / ray_s:.2f}x single process); cluster start-up {start_s:.1f} s apart"
    )
    print(f"same top-M, samples and codes as the single-process index: {same}")


if __name__ == "__main__":
    main()
