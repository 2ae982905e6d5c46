"""An index built on Ray from precomputed embeddings: no CLIP anywhere, so a corpus embedded
elsewhere (MSAE's saved embeddings, a LAION dump, the synthetic 10M-item benchmark) is
indexed across a cluster.

The embeddings are one ``.npy`` file ``[n_items, d]`` (fp16 or fp32) on storage every node
reads; the driver and each actor open it memory-mapped, and an actor reads only its shard's
rows. The shards, their merge, resume and retries are :mod:`sae_explorer.ray_engine`'s; the
index is the one :func:`sae_explorer.precompute.index_embeddings` writes into the same folder
from the same file (same key, same files; items are texts named ``item<i>``, every row through
the checkpoint's input statistics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sae_explorer.index import shards as shard_files
from sae_explorer.index.build import IndexBuilder, StatsSource, Timer
from sae_explorer.index.cache import build_lock, clear_index_dpath, reuse_index
from sae_explorer.index.embed import ArrayEmbedder
from sae_explorer.index.shards import ShardIdentity, ShardMeta, shard_ranges
from sae_explorer.modality_stats import CHECKPOINT, ModalityStats, StatsPlan, embeddings_stats
from sae_explorer.ray_engine import (
    RayBuild,
    RayConfig,
    _computed_by_the_driver,
    _Driver,
    _import_ray,
    _quiet,
)

if TYPE_CHECKING:
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.progress import Progress
    from sae_explorer.sae import SAE

EMBEDDING_DTYPES = (np.float16, np.float32)


def open_embeddings(fpath: str | Path, n_inputs: int | None = None) -> np.ndarray:
    """A ``.npy`` file of embeddings ``[n, d]`` (fp16 or fp32), memory-mapped; ``ValueError``
    naming the problem for anything else (or a width other than the SAE's ``n_inputs``)."""
    fpath = Path(fpath)
    if fpath.suffix != ".npy" or not fpath.is_file():
        raise ValueError(f"embeddings must be an existing .npy file of [n, d] rows, got {fpath}")
    try:
        x_nd = np.load(fpath, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the embeddings {fpath}: {e}") from e
    if x_nd.ndim != 2 or x_nd.dtype not in EMBEDDING_DTYPES or len(x_nd) == 0:
        raise ValueError(
            f"{fpath} holds {x_nd.dtype} of shape {x_nd.shape}; embeddings must be a non-empty "
            "[n, d] array of float16 or float32"
        )
    if n_inputs is not None and x_nd.shape[1] != n_inputs:
        raise ValueError(
            f"{fpath} holds {x_nd.shape[1]}-d embeddings, the SAE takes {n_inputs}-d inputs"
        )
    return x_nd


class EmbeddingsShardWorker:
    """Builds shards of an embeddings file in one process of the cluster (a Ray actor): loads
    the SAE once and opens the file memory-mapped, then one shard per call."""

    def __init__(
        self,
        sae_source: str,
        embeddings_fpath: str,
        cfg: PrecomputeConfig,
        dpath: str,
        identity: ShardIdentity,
        plan: StatsPlan,
        threads: int,
    ) -> None:
        import torch

        from sae_explorer.checkpoints import load_sae
        from sae_explorer.precompute import NumberedTexts

        torch.set_num_threads(threads)
        self.sae = load_sae(sae_source)
        self.x_nd = open_embeddings(embeddings_fpath, self.sae.n_inputs)
        self.items = NumberedTexts(len(self.x_nd))
        self.cfg, self.dpath, self.identity, self.plan = cfg, Path(dpath), identity, plan
        self.stats = ModalityStats.load(self.dpath)

    def build(self, shard: int, start: int, stop: int) -> ShardMeta:
        stats = StatsSource(self.plan, _computed_by_the_driver)
        builder = IndexBuilder(
            self.sae, self.items, ArrayEmbedder(self.x_nd), self.cfg, self.dpath,
            self.identity.key, _quiet, {}, Timer(), stats,
        )  # fmt: skip
        builder.use_stats(self.stats)
        return shard_files.build_shard(builder, shard, range(start, stop), self.identity)


class _EmbeddingsDriver(_Driver):
    """One Ray build of an embeddings file into one index folder (under its build lock)."""

    def __init__(self, ray, sae_source: str, sae: SAE, x_nd: np.ndarray, fpath: Path, cfg,
                 ray_cfg: RayConfig, dpath: Path, key: str, plan: StatsPlan) -> None:  # fmt: skip
        from sae_explorer.precompute import NumberedTexts

        self.ray, self.sae_source, self.sae, self.x_nd = ray, sae_source, sae, x_nd
        self.fpath, self.cfg, self.ray_cfg = fpath, cfg, ray_cfg
        self.dpath, self.key, self.plan = Path(dpath), key, plan
        self.items = NumberedTexts(len(x_nd))
        self.ranges = shard_ranges(len(x_nd), ray_cfg.shard_size)

    def _stats_source(self, cache_root: Path, report: Progress) -> StatsSource:
        return StatsSource(
            self.plan, lambda: embeddings_stats(self.sae, self.x_nd, self.items, self.plan)
        )

    def _build_meta(self) -> dict:
        return {"encoder": {"model_id": "precomputed", "embed_dim": self.sae.n_inputs}}

    def _items(self):
        return self.items

    def _sources(self) -> tuple[str, str]:
        return "precomputed", self.key

    def _worker(self, identity: ShardIdentity, threads: int) -> tuple[type, tuple]:
        args = (self.sae_source, str(self.fpath), self.cfg, str(self.dpath), identity, self.plan)
        return EmbeddingsShardWorker, (*args, threads)

    def _shard_args(self, s: int) -> tuple:
        return s, self.ranges[s].start, self.ranges[s].stop


def index_embeddings_on_ray(
    sae_source: str | Path,
    embeddings_fpath: str | Path,
    dpath: str | Path,
    cfg: PrecomputeConfig | None = None,
    ray_cfg: RayConfig | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> RayBuild:
    """Build (or reuse, or finish) the index of the embeddings in ``embeddings_fpath`` (a
    ``.npy`` file ``[n, d]`` every node reads) with the SAE at ``sae_source`` (every actor
    loads it) into ``dpath``: the index :func:`~sae_explorer.precompute.index_embeddings`
    writes there from the same rows."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.precompute import NumberedTexts, PrecomputeConfig, _embeddings_key

    cfg, ray_cfg = cfg or PrecomputeConfig(), ray_cfg or RayConfig()
    if ray_cfg.shard_size % cfg.chunk_size:
        raise ValueError(
            f"shard_size ({ray_cfg.shard_size}) must be a multiple of chunk_size "
            f"({cfg.chunk_size}), so shards start where a single-process build's chunks do"
        )
    ray = _import_ray()
    sae = load_sae(sae_source)
    fpath = Path(embeddings_fpath).absolute()
    x_nd = open_embeddings(fpath, sae.n_inputs)
    plan = StatsPlan(CHECKPOINT, CHECKPOINT)
    t0 = time.perf_counter()
    key = _embeddings_key(sae, x_nd, NumberedTexts(len(x_nd)), plan, cfg)
    report = progress or _quiet
    report(0.0, f"embeddings hashed in {time.perf_counter() - t0:.1f}s")
    dpath = Path(dpath)
    with build_lock(dpath, report):
        if force and dpath.exists():
            clear_index_dpath(dpath)
        index = reuse_index(dpath, key)
        if index is not None:
            n_shards = len(shard_ranges(len(x_nd), ray_cfg.shard_size))
            result = RayBuild(index, [], list(range(n_shards)), [])
        else:
            driver = _EmbeddingsDriver(
                ray, str(sae_source), sae, x_nd, fpath, cfg, ray_cfg, dpath, key, plan
            )
            result = driver.run(dpath.parent, report)
        result.index.prepare_serving(report)
    return result


# --------------------------------------------------------------------------- CLI
def build_parser():
    import argparse

    from sae_explorer.cli import add_dataclass_args
    from sae_explorer.precompute import ENGINES, PrecomputeConfig

    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer index-embeddings",
        description="Build the latent activation index of precomputed CLIP embeddings (a .npy "
        "file [n, d], fp16 or fp32) with an SAE, in this process or on Ray; no CLIP needed.",
    )
    parser.add_argument("--sae", required=True, help="SAE: a folder, a file or a hub id")
    parser.add_argument("--embeddings", required=True, help=".npy file of [n, d] embeddings")
    parser.add_argument("--out", required=True, help="index folder to write (or reuse)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="(default: local)")
    parser.add_argument("--force", action="store_true", help="rebuild even if finished")
    add_dataclass_args(parser, PrecomputeConfig)
    add_dataclass_args(parser, RayConfig, "ray")
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    from sae_explorer.checkpoints import load_sae
    from sae_explorer.cli import dataclass_from_args
    from sae_explorer.index.cache import CacheError
    from sae_explorer.precompute import PrecomputeConfig, _check_engine, index_embeddings

    args = build_parser().parse_args(argv)
    try:
        cfg = dataclass_from_args(PrecomputeConfig, args)
        _check_engine(args)
        t0 = time.perf_counter()
        if args.engine == "ray":
            ray_cfg = dataclass_from_args(RayConfig, args, "ray")
            build = index_embeddings_on_ray(
                args.sae, args.embeddings, args.out, cfg, ray_cfg, force=args.force
            )
            index = build.index
            print(f"ray: {len(build.computed)} shards built, {len(build.reused)} found built")
        else:
            sae = load_sae(args.sae)
            x_nd = open_embeddings(args.embeddings, sae.n_inputs)
            if args.force:
                raise ValueError("--force applies only with --engine ray; delete the folder")
            index = index_embeddings(sae, x_nd, args.out, cfg)
    except (ValueError, CacheError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"index: {index.dpath}: {index.n_items} items, {index.n_latents} latents "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    return 0
