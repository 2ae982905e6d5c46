"""precompute on Ray, on a local cluster of worker processes (the same code path as a real
cluster): the merged index equals the single-process one; a worker killed mid-shard costs only
its shard; a shard that keeps failing stops the run, and the next run builds only that shard.

One ``ray.init`` for the module (start-up takes tens of seconds on 2 cores); faults are injected
into the workers by ``tests/_ray_faults.py``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install ray)")

from _precompute_helpers import assert_same_arrays  # noqa: E402
from _ray_faults import FAULTS_ENV  # noqa: E402

from sae_explorer.corpus import load_corpus  # noqa: E402
from sae_explorer.index.shards import SHARDS_DNAME  # noqa: E402
from sae_explorer.precompute import PrecomputeConfig, main, precompute  # noqa: E402
from sae_explorer.ray_engine import (  # noqa: E402
    ModelSpec,
    RayConfig,
    ShardsFailedError,
    precompute_on_ray,
)

pytestmark = pytest.mark.ray

SOURCE = "builtin:shapes?n=50"  # 100 items: 50 images and their 50 captions
CFG = PrecomputeConfig(
    top_k=16, top_m=6, n_samples=8, chunk_size=16, batch_size=16, n_workers=0, names=False
)
RAY_CFG = RayConfig(shard_size=32, cpus_per_actor=1, shard_retries=1)  # 4 shards: 32+32+32+4
MODELS = ModelSpec("builtin:shapes", "builtin:shapes", device="cpu")


@pytest.fixture(scope="module")
def cluster(repo_dpath, tmp_path_factory):
    """A local Ray cluster of 2 CPUs whose workers import this checkout and the fault hook;
    yields the folder whose files arm the faults."""
    faults = tmp_path_factory.mktemp("faults")
    paths = f"{repo_dpath}:{repo_dpath / 'tests'}"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env={
            "env_vars": {"PYTHONPATH": paths, FAULTS_ENV: str(faults)},
            "worker_process_setup_hook": "_ray_faults.install",
        },
    )
    yield faults
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(SOURCE)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The single-process build of the same corpus and settings."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.encoder import load_encoder

    encoder = load_encoder(MODELS.clip, device="cpu")
    return precompute(encoder, load_sae(MODELS.sae), corpus, tmp_path_factory.mktemp("ref"), CFG)


def assert_same_as_reference(reference, index) -> None:
    """Every file equal but the sums (equal up to float rounding order), the same items."""
    assert index.dpath.name == reference.dpath.name  # the same key: the app finds it
    assert set(index.manifest["files"]) == set(reference.manifest["files"])
    assert_same_arrays(reference.dpath, index.dpath, reference.manifest["files"], 1e-9)
    assert index.items.equals(reference.items)
    assert index.manifest["engine"]["name"] == "ray"


@pytest.fixture(scope="module")
def ray_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("ray_cache")


def test_faults_cost_only_their_shards_and_the_merge_equals_one_process(
    cluster, corpus, reference, ray_cache
):
    tmp_path = ray_cache
    # shard 1's worker dies in its second chunk (once); shard 2 raises in every attempt
    (cluster / "die-3").touch()
    (cluster / "raise-5").touch()
    with pytest.raises(ShardsFailedError, match=r"shard 2 \(items 64-95\).*injected fault"):
        precompute_on_ray(MODELS, corpus, tmp_path, CFG, RAY_CFG)
    assert not (cluster / "die-3").exists()  # the kill happened, and shard 1 was built again
    shards = next((tmp_path / "index").iterdir()) / SHARDS_DNAME
    finished = sorted(p.name for p in shards.iterdir() if not p.name.startswith("."))
    assert finished == ["00000", "00001", "00003", "plan.json"]

    (cluster / "raise-5").unlink()
    build = precompute_on_ray(MODELS, corpus, tmp_path, CFG, RAY_CFG)
    assert (build.computed, build.reused, build.retried) == ([2], [0, 1, 3], [])
    assert_same_as_reference(reference, build.index)
    assert not (build.index.dpath / SHARDS_DNAME).exists()

    again = precompute_on_ray(MODELS, corpus, tmp_path, CFG, RAY_CFG)  # finished: reused
    assert (again.computed, again.reused) == ([], [0, 1, 2, 3])


def test_cli_engine_ray(cluster, reference, ray_cache, capsys):
    """The CLI's path to the Ray build; it finds the index the test above built."""
    argv = ["--clip", "builtin:shapes", "--sae", "builtin:shapes", "--corpus", SOURCE]
    argv += ["--cache-dir", str(ray_cache), "--top-k", "16", "--top-m", "6", "--n-samples", "8"]
    argv += ["--chunk-size", "16", "--n-workers", "0", "--no-names"]
    assert main([*argv, "--ray-shard-size", "32"]) == 2
    assert "--ray-shard-size apply only with --engine ray" in capsys.readouterr().err
    assert main([*argv, "--engine", "ray", "--ray-shard-size", "24"]) == 2
    assert "must be a multiple of chunk_size" in capsys.readouterr().err
    ray_argv = ["--engine", "ray", "--ray-shard-size", "32", "--ray-cpus-per-actor", "1"]
    assert main([*argv, *ray_argv]) == 0
    assert "ray: 0 shards built, 4 found built" in capsys.readouterr().out
    index_dpath = next((ray_cache / "index").iterdir())
    from sae_explorer.index import ActivationIndex

    assert_same_as_reference(reference, ActivationIndex.load(index_dpath))


# --------------------------------------------------------------------------- from embeddings
def test_embeddings_on_ray_equal_the_single_process_index(cluster, tmp_path, capsys):
    """A .npy of precomputed embeddings built on Ray (no CLIP) into the index that
    ``index_embeddings`` writes from the same rows; a file of the wrong width is refused."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.precompute import index_embeddings
    from sae_explorer.ray_embeddings import index_embeddings_on_ray
    from sae_explorer.ray_embeddings import main as embeddings_main

    sae = load_sae(MODELS.sae)
    x_nd = np.random.default_rng(5).standard_normal((100, sae.n_inputs)).astype(np.float16)
    np.save(tmp_path / "x.npy", x_nd)
    reference = index_embeddings(sae, x_nd, tmp_path / "single", CFG)
    build = index_embeddings_on_ray(MODELS.sae, tmp_path / "x.npy", tmp_path / "ray", CFG, RAY_CFG)
    assert build.computed == [0, 1, 2, 3]
    assert build.index.manifest["key"] == reference.manifest["key"]
    assert_same_arrays(reference.dpath, build.index.dpath, reference.manifest["files"], 1e-9)
    assert build.index.items.equals(reference.items)
    assert build.index.manifest["engine"]["name"] == "ray"

    argv = ["--sae", MODELS.sae, "--embeddings", str(tmp_path / "x.npy"), "--out"]
    argv += [str(tmp_path / "ray"), "--top-k", "16", "--top-m", "6", "--n-samples", "8"]
    argv += ["--chunk-size", "16", "--engine", "ray", "--ray-shard-size", "32"]
    assert embeddings_main(argv) == 0  # the command finds the index built above
    assert "ray: 0 shards built, 4 found built" in capsys.readouterr().out

    np.save(tmp_path / "narrow.npy", x_nd[:, :8])
    with pytest.raises(ValueError, match="holds 8-d embeddings, the SAE takes"):
        index_embeddings_on_ray(MODELS.sae, tmp_path / "narrow.npy", tmp_path / "r2", CFG, RAY_CFG)
