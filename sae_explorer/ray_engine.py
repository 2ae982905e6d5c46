"""Precompute on Ray: the corpus split into shards that actors build across a cluster, merged
into the index a single-process :func:`~sae_explorer.precompute.precompute` writes.

The driver (the process that calls :func:`precompute_on_ray`) lists the corpus, computes the
key and the input statistics, and holds the index folder's build lock; actors
(:class:`ShardWorker`, one per GPU of the cluster, else one per ``cpus_per_actor`` CPUs) load
CLIP and the SAE from their sources themselves and build shards of consecutive items
(:mod:`sae_explorer.index.shards`) into ``<index>/shards/``, so the cache folder must be on
storage every node writes (a shared filesystem). Finished shards are kept: a rerun builds only
the missing ones. A shard whose actor dies or raises is retried on a fresh actor up to
``shard_retries`` times; if some still fail, the run stops with :class:`ShardsFailedError`
naming them, and the next run redoes only those.

``ray`` is an optional dependency (``pip install 'sae-explorer[ray]'``); this module imports it
only when a build runs.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import sae_explorer
from sae_explorer.atomic import atomic_write_json
from sae_explorer.cli import doc
from sae_explorer.corpus import Corpus, CorpusItem, default_cache_dpath
from sae_explorer.index import ActivationIndex
from sae_explorer.index import shards as shard_files
from sae_explorer.index.build import IndexBuilder, StatsSource, Timer
from sae_explorer.index.cache import build_lock, clear_index_dpath, index_dpath, reuse_index
from sae_explorer.index.embed import CorpusEmbedder
from sae_explorer.index.files import SCHEMA
from sae_explorer.index.names import ensure_names
from sae_explorer.index.shards import (
    SHARDS_DNAME,
    OffsetItems,
    ShardIdentity,
    ShardMeta,
    identity_difference,
    input_stats_digest,
    merge_shards,
    read_shard,
    remove_partial_shards,
    shard_dpath,
    shard_ranges,
)
from sae_explorer.modality_stats import ModalityStats, StatsPlan
from sae_explorer.progress import Progress

if TYPE_CHECKING:
    from sae_explorer.precompute import PrecomputeConfig

log = logging.getLogger(__name__)

PLAN_NAME = "plan.json"
"""In ``<index>/shards/``: the :class:`ShardIdentity` the shards there were started with."""


@dataclass(frozen=True)
class RayConfig:
    """How a build runs on Ray (``--engine ray``); nothing here changes the index."""

    address: str | None = field(
        default=None,
        metadata=doc(
            "Ray cluster to join: auto (the one `ray start` runs on this node), host:6379 or "
            "ray://host:10001; none starts a local one on this machine"
        ),
    )
    shard_size: int = field(
        default=65536, metadata=doc("items per shard (a multiple of --chunk-size)")
    )
    n_actors: int = field(
        default=0,
        metadata=doc(
            "actors building shards (0: one per GPU of the cluster, else one per "
            "--ray-cpus-per-actor CPUs)"
        ),
    )
    cpus_per_actor: int = field(
        default=2, metadata=doc("CPUs each actor asks for (and its torch threads) without GPUs")
    )
    shard_retries: int = field(
        default=2, metadata=doc("times a failed shard is built again before the run gives up")
    )

    def __post_init__(self) -> None:
        for name in ("shard_size", "cpus_per_actor"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_actors < 0 or self.shard_retries < 0:
            raise ValueError("n_actors and shard_retries must be >= 0")


class ModelSpec(NamedTuple):
    """Where every actor loads the models from (what ``--clip``, ``--pretrained``, ``--sae``
    and ``--device`` name): models are never shipped between nodes."""

    clip: str
    sae: str
    pretrained: str | None = None
    device: str | None = None  # None: each actor's best device (its GPU where it has one)


class RayBuild(NamedTuple):
    """A finished Ray build: the index, and which shards this run built or found built."""

    index: ActivationIndex
    computed: list[int]  # shards built by this run
    reused: list[int]  # shards an earlier run had finished
    retried: list[int]  # shards that failed at least once in this run before they were built


class ShardsFailedError(RuntimeError):
    """Shards that failed more often than ``shard_retries``; finished ones are kept."""


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ValueError(
            "--engine ray needs the ray package: pip install 'sae-explorer[ray]' (or ray)"
        ) from e
    return ray


# --------------------------------------------------------------------------- the actor
class ShardWorker:
    """Builds shards in one process of the cluster (a Ray actor): loads CLIP and the SAE once,
    then one :func:`~sae_explorer.index.shards.build_shard` per call."""

    def __init__(
        self,
        models: ModelSpec,
        cfg: PrecomputeConfig,
        dpath: str,
        identity: ShardIdentity,
        plan: StatsPlan,
        threads: int,
    ) -> None:
        import torch

        from sae_explorer.checkpoints import load_sae
        from sae_explorer.encoder import load_encoder

        torch.set_num_threads(threads)
        self.encoder = load_encoder(models.clip, models.pretrained, models.device)
        self.sae = load_sae(models.sae, device=self.encoder.device)
        self.cfg, self.dpath, self.identity, self.plan = cfg, Path(dpath), identity, plan
        self.stats = ModalityStats.load(self.dpath)

    def build(self, shard: int, start: int, items: list[CorpusItem]) -> ShardMeta:
        timer = Timer()
        corpus = Corpus(OffsetItems(items, start), f"shard {shard}")
        embedder = CorpusEmbedder(self.encoder, corpus, self.cfg, timer)
        stats = StatsSource(self.plan, _computed_by_the_driver)
        try:
            builder = IndexBuilder(
                self.sae, corpus.items, embedder, self.cfg, self.dpath,
                self.identity.key, _quiet, {}, timer, stats,
            )  # fmt: skip
            builder.use_stats(self.stats)
            positions = range(start, start + len(items))
            return shard_files.build_shard(builder, shard, positions, self.identity)
        finally:
            embedder.close()


def _computed_by_the_driver() -> ModalityStats:
    raise AssertionError("a shard worker uses the statistics the driver saved")


def _quiet(frac: float, message: str) -> None:
    pass


# --------------------------------------------------------------------------- the driver
def precompute_on_ray(
    models: ModelSpec,
    corpus: Corpus,
    cache_root: str | Path | None = None,
    cfg: PrecomputeConfig | None = None,
    ray_cfg: RayConfig = RayConfig(),
    progress: Progress | None = None,
    force: bool = False,
) -> RayBuild:
    """Build (or reuse, or finish) the index of ``corpus`` on Ray: the same folder and the same
    index as :func:`~sae_explorer.precompute.precompute` with these models and settings."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.encoder import load_encoder
    from sae_explorer.precompute import PrecomputeConfig, check_inputs, corpus_key

    cfg = cfg or PrecomputeConfig()
    if ray_cfg.shard_size % cfg.chunk_size:
        raise ValueError(
            f"shard_size ({ray_cfg.shard_size}) must be a multiple of chunk_size "
            f"({cfg.chunk_size}), so shards start where a single-process build's chunks do"
        )
    ray = _import_ray()
    encoder = load_encoder(models.clip, models.pretrained, "cpu")
    sae = load_sae(models.sae)
    check_inputs(encoder, sae, corpus)
    cache_root = Path(cache_root) if cache_root is not None else default_cache_dpath()
    key, plan = corpus_key(encoder, sae, corpus, cfg)
    dpath = index_dpath(cache_root, key)
    report = progress or _quiet
    with build_lock(dpath, report):
        if force and dpath.exists():
            clear_index_dpath(dpath)
        index = reuse_index(dpath, key)
        if index is not None:
            n_shards = len(shard_ranges(len(corpus), ray_cfg.shard_size))
            result = RayBuild(index, [], list(range(n_shards)), [])
        else:
            driver = _Driver(ray, models, encoder, sae, corpus, cfg, ray_cfg, dpath, key, plan)
            result = driver.run(cache_root, report)
        ensure_names(result.index, encoder, sae, corpus, cfg, report, cache_root)
        result.index.prepare_serving(report)
    return result


class _Driver:
    """One Ray build of one index folder (under its build lock)."""

    def __init__(self, ray, models, encoder, sae, corpus, cfg, ray_cfg, dpath, key, plan):
        self.ray, self.models, self.encoder, self.sae = ray, models, encoder, sae
        self.corpus, self.cfg, self.ray_cfg = corpus, cfg, ray_cfg
        self.dpath, self.key, self.plan = Path(dpath), key, plan
        self.ranges = shard_ranges(len(corpus), ray_cfg.shard_size)

    # what differs between a corpus build and a build from precomputed embeddings
    def _stats_source(self, cache_root: Path, report: Progress) -> StatsSource:
        from sae_explorer.precompute import corpus_stats_source

        return corpus_stats_source(
            self.encoder, self.sae, self.corpus, self.cfg, self.plan, cache_root, report
        )

    def _build_meta(self) -> dict:
        from sae_explorer.precompute import build_meta

        return build_meta(self.encoder, self.corpus)

    def _items(self) -> Sequence[CorpusItem]:
        return self.corpus.items

    def _sources(self) -> tuple[str, str]:
        """The identity's ``encoder`` and ``corpus``."""
        return self.encoder.cache_id, self.corpus.manifest_hash

    def _worker(self, identity: ShardIdentity, threads: int) -> tuple[type, tuple]:
        """The actor class and its constructor's arguments."""
        return ShardWorker, (self.models, self.cfg, str(self.dpath), identity, self.plan, threads)

    def _shard_args(self, s: int) -> tuple:
        """The arguments of the actor's ``build`` for shard ``s``."""
        r = self.ranges[s]
        return s, r.start, self.corpus.items[r.start : r.stop]

    def run(self, cache_root: Path, report: Progress) -> RayBuild:
        t0 = time.perf_counter()
        self.dpath.mkdir(parents=True, exist_ok=True)
        stats = self._stats_source(cache_root, report)
        meta = self._build_meta()
        meta["engine"] = {"name": "ray", "shard_size": self.ray_cfg.shard_size}
        builder = IndexBuilder(
            self.sae, self._items(), _no_embedder, self.cfg, self.dpath, self.key,
            report, meta, Timer(), stats,
        )  # fmt: skip
        identity = self._start(builder, stats)
        if n_partial := remove_partial_shards(self.dpath):
            log.info("removed %d shards left unfinished by workers that died", n_partial)
        metas = {s: read_shard(shard_dpath(self.dpath, s), identity, r)
                 for s, r in enumerate(self.ranges)}  # fmt: skip
        reused = sorted(s for s, m in metas.items() if m is not None)
        pending = sorted(s for s, m in metas.items() if m is None)
        log.info(
            "%d shards: %d finished earlier, %d to build", len(metas), len(reused), len(pending)
        )
        retried: list[int] = []
        if pending:
            built, retried = self._build_shards(pending, identity, report)
            metas.update(built)
        report(0.9, f"merging {len(metas)} shards")
        merge_shards(builder, [metas[s] for s in range(len(metas))], time.perf_counter() - t0)
        return RayBuild(ActivationIndex.load(self.dpath), pending, reused, sorted(set(retried)))

    def _identity(self) -> ShardIdentity:
        cfg = self.cfg
        return ShardIdentity(
            schema=SCHEMA,
            key=self.key,
            encoder=self._sources()[0],
            sae=self.sae.content_hash,
            corpus=self._sources()[1],
            top_k=cfg.top_k,
            top_m=cfg.top_m,
            n_samples=cfg.n_samples,
            seed=cfg.seed,
            chunk_size=cfg.chunk_size,
            shard_size=self.ray_cfg.shard_size,
            input_stats=input_stats_digest(self.dpath),
        )

    def _start(self, builder: IndexBuilder, stats: StatsSource) -> ShardIdentity:
        """Go on with the shards an earlier run left (refused if they are another build's), or
        start afresh: statistics computed and saved for the actors, the plan written."""
        plan_fpath = self.dpath / SHARDS_DNAME / PLAN_NAME
        if plan_fpath.is_file():
            builder.use_stats(ModalityStats.load(self.dpath))
            identity = self._identity()
            try:
                recorded = json.loads(plan_fpath.read_text())
            except (ValueError, UnicodeDecodeError):
                recorded = None
            difference = identity_difference(identity, recorded)
            if difference is None:
                return identity
            if recorded is not None:
                raise ValueError(
                    f"{self.dpath} holds the shards of another build: {difference}. Rerun with "
                    "the same settings, or pass --force to start over"
                )
        clear_index_dpath(self.dpath, keep=True)
        builder.use_stats(stats.compute())
        builder.stats.save(self.dpath)
        identity = self._identity()
        plan_fpath.parent.mkdir(exist_ok=True)
        atomic_write_json(plan_fpath, identity._asdict())
        return identity

    # ------------------------------------------------------------------ shards on the cluster
    def _build_shards(
        self, pending: list[int], identity: ShardIdentity, report: Progress
    ) -> tuple[dict[int, ShardMeta], list[int]]:
        """Build ``pending`` shards on actors, each actor taking the next shard when it is free;
        a failed shard goes back in the queue (on a fresh actor when its actor died)."""
        ray, started = self.ray, _connect(self.ray, self.ray_cfg.address)
        try:
            make_actor, n_actors = self._actor_factory(identity)
            idle = [make_actor() for _ in range(min(n_actors, len(pending)))]
            queue, running = deque(pending), {}
            built: dict[int, ShardMeta] = {}
            failures: dict[int, list[str]] = {}
            while queue or running:
                while queue and idle:
                    actor, s = idle.pop(), queue.popleft()
                    running[actor.build.remote(*self._shard_args(s))] = (actor, s)
                (ref,), _ = ray.wait(list(running), num_returns=1)
                actor, s = running.pop(ref)
                try:
                    built[s] = ray.get(ref)
                    idle.append(actor)
                except ray.exceptions.RayActorError as e:  # the process died: a fresh actor
                    self._failed(s, e, failures, queue)
                    idle.append(make_actor())
                except ray.exceptions.RayError as e:
                    self._failed(s, e, failures, queue)
                    idle.append(actor)
                report(0.9 * len(built) / len(pending), f"built {len(built)}/{len(pending)} shards")
        finally:
            if started:
                ray.shutdown()
        lost = sorted(set(failures) - set(built))
        if lost:
            raise ShardsFailedError(
                f"{len(lost)} shards failed {self.ray_cfg.shard_retries + 1} times: "
                + "; ".join(f"shard {s} (items {self.ranges[s].start}-{self.ranges[s].stop - 1}): "
                            f"{failures[s][-1]}" for s in lost)
                + f". The {len(built)} built are kept in {self.dpath / SHARDS_DNAME}: run the "
                "same command again to build only the failed ones"
            )  # fmt: skip
        return built, sorted(failures)

    def _failed(self, s: int, error: Exception, failures: dict, queue: deque) -> None:
        message = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        failures.setdefault(s, []).append(message)
        log.warning("shard %d failed (attempt %d): %s", s, len(failures[s]), message)
        if len(failures[s]) <= self.ray_cfg.shard_retries:
            queue.append(s)

    def _actor_factory(self, identity: ShardIdentity) -> tuple[Callable, int]:
        """A function starting one actor, and how many to start: one per GPU when the cluster
        has GPUs (each actor sees only its own), else one per ``cpus_per_actor`` CPUs."""
        ray, rc = self.ray, self.ray_cfg
        resources = ray.cluster_resources()
        n_gpus = int(resources.get("GPU", 0))
        if n_gpus:
            options, n_actors, threads = {"num_gpus": 1, "num_cpus": 1}, n_gpus, rc.cpus_per_actor
        else:
            options = {"num_cpus": rc.cpus_per_actor}
            n_actors = max(1, int(resources.get("CPU", 1)) // rc.cpus_per_actor)
            threads = rc.cpus_per_actor
        worker_cls, args = self._worker(identity, threads)
        actor_cls = ray.remote(worker_cls).options(max_restarts=0, **options)
        return (lambda: actor_cls.remote(*args)), (rc.n_actors or n_actors)


def _no_embedder(positions: range):
    raise AssertionError("the driver merges shards; it embeds nothing")


def _connect(ray, address: str | None) -> bool:
    """Join ``address`` (None: start a local cluster) unless this process is already connected;
    True if this call connected (and so should disconnect). The driver's copy of this package
    is shipped to the workers, so every node runs the same code."""
    if ray.is_initialized():
        return False
    package_dpath = str(Path(sae_explorer.__file__).parent)
    ray.init(
        address=address,
        runtime_env={"py_modules": [package_dpath]},
        include_dashboard=False,
        logging_level=logging.WARNING,
    )
    return True
