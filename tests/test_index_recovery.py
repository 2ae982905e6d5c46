"""A damaged, read-only or full cache ends in a working app, never a crash loop: one test per
finding of the hosted-Space review. Each test copies a finished built-in-world cache, damages
it as the review did, and starts the app's explorer (``load_explorer``, the ``app.py --demo``
path) on it; the explorer must then serve the same index as an undamaged start."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _explorer_helpers import builtin_world_trained
from _precompute_helpers import assert_same_index

from sae_explorer import builtin, startup_config
from sae_explorer.explorer_startup import TEMPORARY, StartupConfig, load_explorer
from sae_explorer.index import MANIFEST_NAME, ActivationIndex, CorruptIndexError
from sae_explorer.index import files as index_files
from sae_explorer.index.appender import NpyAppender
from sae_explorer.index.cache import CacheError
from sae_explorer.index.verify import main as verify_main
from sae_explorer.naming import NAMES_FILE
from sae_explorer.precompute import PrecomputeConfig, precompute

pytestmark = pytest.mark.skipif(
    not builtin_world_trained(), reason="needs the trained builtin:shapes models"
)

CORPUS = "builtin:shapes?n=40"


@pytest.fixture(autouse=True)
def small_builtin_corpus(monkeypatch):
    monkeypatch.setattr(startup_config, "BUILTIN_CORPUS", CORPUS)


def start(cache_dpath: Path):
    """The explorer ``app.py --demo --cache-dir cache_dpath`` serves."""
    return load_explorer(StartupConfig(demo=True, cache_dir=str(cache_dpath), device="cpu"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An undamaged start, and its cache to copy."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(startup_config, "BUILTIN_CORPUS", CORPUS)
        cache = tmp_path_factory.mktemp("cache")
        return start(cache), cache


def copied_cache(reference, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the reference cache (modification times kept, as a backup restore would) and
    its index folder."""
    explorer, cache = reference
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    return copy, copy / explorer.index.dpath.relative_to(cache)


def assert_serves_the_reference(explorer, reference) -> None:
    """Same index, same names, and the pages work."""
    ref = reference[0]
    assert_same_index(ref.index, explorer.index)
    assert np.array_equal(explorer.max_act_l, ref.max_act_l)
    assert explorer.names is not None
    assert explorer.names.to_frame().equals(ref.names.to_frame())
    latent = int(np.argmax(ref.max_act_l))
    assert explorer.latent_page(latent).summary.max_activation == pytest.approx(
        float(ref.max_act_l[latent])
    )
    assert explorer.inspect(explorer.text_query("a red circle")).table.equals(
        ref.inspect(ref.text_query("a red circle")).table
    )


# ----------------------------------------------------------------------- resume state
def truncate(fpath: Path) -> None:
    fpath.write_bytes(fpath.read_bytes()[: fpath.stat().st_size // 2])


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: truncate(d / "state.npz"), id="state.npz truncated"),
        pytest.param(lambda d: (d / "progress.json").write_text("{not json"), id="progress bad"),
        pytest.param(lambda d: (d / "progress.json").write_text("[1, 2]"), id="progress a list"),
    ],
)
def test_damaged_resume_state_starts_over(reference, tmp_path, damage, caplog):
    """Before: a truncated state.npz raised an uncaught BadZipFile at every start."""
    explorer, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(reference[1] / "vocab", cache / "vocab")
    world = builtin.world_of(explorer.encoder.model_id)
    with pytest.raises(InterruptedError):  # a real unfinished build, stopped at its checkpoint
        precompute(
            explorer.encoder,
            explorer.sae,
            explorer.corpus,
            cache,
            PrecomputeConfig(n_words=world.n_words),
            stop_after_chunks=0,
        )
    dpath = cache / "index" / explorer.index.dpath.name
    assert (dpath / "state.npz").is_file() and not (dpath / MANIFEST_NAME).exists()
    damage(dpath)
    with caplog.at_level(logging.WARNING):
        again = start(cache)
    assert "starting over" in caplog.text
    assert_serves_the_reference(again, reference)


# ----------------------------------------------------------------------- finished files
def test_garbage_names_are_rebuilt_alone(reference, tmp_path, caplog):
    """Before: a garbage names.npz failed every start and was never rebuilt."""
    _, dpath = copied_cache(reference, tmp_path)
    names = dpath / NAMES_FILE
    names.write_bytes(np.random.default_rng(0).bytes(names.stat().st_size))
    manifest_before = (dpath / MANIFEST_NAME).read_bytes()
    with caplog.at_level(logging.WARNING):
        again = start(tmp_path / "cache")
    assert "damaged latent names" in caplog.text and "rebuilding the index" not in caplog.text
    assert (dpath / MANIFEST_NAME).read_bytes() == manifest_before  # the index was kept
    assert_serves_the_reference(again, reference)
    assert ActivationIndex.load(dpath).names is not None  # and the names saved again


def flip_bytes(fpath: Path, at: int = -64) -> None:
    data = bytearray(fpath.read_bytes())
    data[at : at + 8] = bytes(255 - b for b in data[at : at + 8])
    fpath.write_bytes(bytes(data))


def resave(name: str, change) -> callable:
    """Damage of the same size: the array written again with ``change`` applied."""

    def damage(dpath: Path) -> None:
        array = np.load(dpath / name)
        change(array)
        np.save(dpath / name, array)

    return damage


SAME_SIZE_DAMAGE = [
    pytest.param(lambda d: flip_bytes(d / "embeddings.npy"), id="embeddings flipped"),
    pytest.param(lambda d: flip_bytes(d / "items.parquet", 200), id="items.parquet flipped"),
    pytest.param(resave("latent_max.npy", lambda a: a.__setitem__(3, np.nan)), id="latent_max NaN"),
    pytest.param(
        resave("latent_top_idx.npy", lambda a: a.__setitem__((2, 0), 10**6)),
        id="top index out of range",
    ),
]


@pytest.mark.parametrize("damage", SAME_SIZE_DAMAGE)
def test_same_size_damage_is_rebuilt(reference, tmp_path, damage, caplog):
    """Before: flipped bytes changed the overview's FVU, a NaN maximum showed "max nan", an
    out-of-range top item was served, a damaged items table stopped every start."""
    _, dpath = copied_cache(reference, tmp_path)
    damage(dpath)
    with caplog.at_level(logging.WARNING):
        again = start(tmp_path / "cache")
    assert "rebuilding the index" in caplog.text
    assert_serves_the_reference(again, reference)


@pytest.mark.parametrize("damage", SAME_SIZE_DAMAGE[2:])
def test_served_values_are_checked_even_where_the_time_was_kept(reference, tmp_path, damage):
    """Damage that kept the files' modification times skips the checksums at an open; the
    cheap checks of the values still refuse what would be served wrong."""
    _, dpath = copied_cache(reference, tmp_path)
    times = {p: p.stat().st_mtime_ns for p in dpath.iterdir()}
    damage(dpath)
    for fpath, mtime_ns in times.items():
        os.utime(fpath, ns=(mtime_ns, mtime_ns))
    with pytest.raises(CorruptIndexError, match="the index is damaged"):
        ActivationIndex.load(dpath)


def test_codes_pointers_out_of_order_are_refused_where_they_are_read(reference, tmp_path):
    """An open checks only the ends of the codes pointers (reading all 80 MB of them at 10M
    items cost a cold open ~0.1-0.4 s); the order between is checked wherever codes are read:
    an item's own pointers, all of them by a whole reader and by ``verify``."""
    from sae_explorer.coactivation import Coactivations

    _, dpath = copied_cache(reference, tmp_path)
    indptr = np.load(dpath / "codes_indptr.npy")
    indptr[5] = indptr[7] + 1  # item 5's codes would run backwards
    mtime_ns = (dpath / "codes_indptr.npy").stat().st_mtime_ns
    np.save(dpath / "codes_indptr.npy", indptr)
    os.utime(dpath / "codes_indptr.npy", ns=(mtime_ns, mtime_ns))  # unseen by the checksums
    index = ActivationIndex.load(dpath)
    assert len(index.item_codes(0).ids) == indptr[1] - indptr[0]
    with pytest.raises(
        CorruptIndexError, match=r"is out of order: item 5's codes run from \d+ to \d+"
    ):
        index.item_codes(5)
    for read_whole in (index.check_codes, lambda: Coactivations.from_index(index)):
        with pytest.raises(CorruptIndexError, match=r"codes_indptr.npy in .* is out of order"):
            read_whole()


def test_verify_command_names_every_damaged_file(reference, tmp_path, capsys):
    _, dpath = copied_cache(reference, tmp_path)
    assert verify_main([str(dpath)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {dpath}")
    times = {p: p.stat().st_mtime_ns for p in dpath.iterdir()}
    flip_bytes(dpath / "embeddings.npy")
    flip_bytes(dpath / "codes_values.npy")
    for fpath, mtime_ns in times.items():  # bit rot: no time changes, an open would not see it
        os.utime(fpath, ns=(mtime_ns, mtime_ns))
    ActivationIndex.load(dpath)
    assert verify_main([str(dpath)]) == 1
    err = capsys.readouterr().err
    assert "embeddings.npy" in err and "codes_values.npy" in err and "damaged" in err


def test_a_copied_cache_is_hashed_once(reference, tmp_path, monkeypatch):
    """Files whose times changed (a plain copy) are hashed; intact, their new times go into the
    manifest, so the next start hashes nothing."""
    explorer, cache = reference
    shutil.copytree(cache, tmp_path / "cache", copy_function=shutil.copy)  # new times
    hashed = []
    checksum = index_files.file_checksum
    monkeypatch.setattr(index_files, "file_checksum", lambda f: hashed.append(f) or checksum(f))
    start(tmp_path / "cache")
    assert len(hashed) == len(explorer.index.manifest["files"])
    hashed.clear()
    assert_serves_the_reference(start(tmp_path / "cache"), reference)
    assert hashed == []


def test_an_index_without_checksums_is_rebuilt(reference, tmp_path, caplog):
    """A manifest from before checksums were recorded cannot be checked: rebuilt, not trusted."""
    _, dpath = copied_cache(reference, tmp_path)
    manifest = json.loads((dpath / MANIFEST_NAME).read_text())
    del manifest["sha256"]
    (dpath / MANIFEST_NAME).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        again = start(tmp_path / "cache")
    assert "no sha256" in caplog.text
    assert_serves_the_reference(again, reference)


# ----------------------------------------------------------------------- read-only, full
@pytest.fixture
def read_only(monkeypatch):
    """``read_only(root)``: writing, creating, renaming or deleting anything under ``root``
    fails with EROFS, as on a read-only mount (chmod does not stop root, who runs CI)."""
    roots: list[Path] = []

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        p = Path(os.fsdecode(path)).absolute()
        return any(p == r or r in p.parents for r in roots)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    real_open, real_os_open = io.open, os.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def guarded_os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    for name in ("mkdir", "unlink", "remove", "rmdir", "utime"):
        real = getattr(os, name)

        def guarded(path, *args, _real=real, **kwargs):
            if under(path):
                refuse(path)
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, guarded)
    for name in ("replace", "rename"):
        real = getattr(os, name)

        def guarded2(src, dst, *args, _real=real, **kwargs):
            if under(src) or under(dst):
                refuse(dst)
            return _real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, name, guarded2)
    return lambda root: roots.append(Path(root).absolute())


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def test_a_read_only_cache_serves_its_finished_index(reference, tmp_path, read_only, caplog):
    """Before: the lock file could not be created, so the start failed with the index there."""
    cache, dpath = copied_cache(reference, tmp_path)
    for lock in (cache / "index").glob(".*.lock"):
        lock.unlink()  # the lock file is not needed to read
    before = listing(cache)
    read_only(cache)
    with caplog.at_level(logging.WARNING):
        again = start(cache)
    assert "without the lock" in caplog.text
    assert again.index.dpath == dpath and again.sources.note == ""  # this cache, no fallback
    assert_serves_the_reference(again, reference)
    assert not again.thumbs_dpath.is_relative_to(cache)  # thumbnails: a temporary folder
    assert listing(cache) == before  # nothing written


def test_a_read_only_cache_without_the_index_runs_on_a_temporary_one(tmp_path, read_only):
    cache = tmp_path / "cache"
    cache.mkdir()
    read_only(cache)
    explorer = start(cache)
    assert TEMPORARY in explorer.sources.note  # said on the banner
    assert not explorer.index.dpath.is_relative_to(cache)
    assert listing(cache) == {}
    assert explorer.latent_page(0).latent_id == 0


@pytest.fixture
def full_disk(monkeypatch):
    """``full_disk(root, where)``: writes under ``root`` by ``where`` ("append": the build's
    growing files; "save": the arrays written whole) fail with ENOSPC."""

    def arm(root: Path, where: str) -> None:
        root = root.absolute()

        def no_space(path) -> None:
            if Path(path).absolute().is_relative_to(root):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

        if where == "append":
            real_append = NpyAppender.append

            def append(self, rows):
                if self.n_rows > 0:  # once something was written
                    no_space(self.tmp)
                return real_append(self, rows)

            monkeypatch.setattr(NpyAppender, "append", append)
        else:
            real_save = np.save

            def save(file, arr, *args, **kwargs):
                no_space(getattr(file, "name", file))
                return real_save(file, arr, *args, **kwargs)

            monkeypatch.setattr(np, "save", save)

    return arm


@pytest.mark.parametrize("where", ["append", "save"])
def test_a_full_disk_leaves_no_partial_files_and_says_so(reference, tmp_path, full_disk, where):
    """Before: a raw OSError traceback, and the partial files left on the full disk."""
    explorer, _ = reference
    cache = tmp_path / "cache"
    full_disk(cache, where)
    world = builtin.world_of(explorer.encoder.model_id)
    with pytest.raises(CacheError, match=r"is full .*unfinished index was removed.*--cache-dir"):
        precompute(
            explorer.encoder,
            explorer.sae,
            explorer.corpus,
            cache,
            PrecomputeConfig(n_words=world.n_words, names=False),
        )
    assert [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []
    again = start(cache)  # the app: on a temporary cache, said on the banner
    assert TEMPORARY in again.sources.note and not again.index.dpath.is_relative_to(cache)
    assert_serves_the_reference(again, reference)
