"""The MSAE release's own latent names: finding a checkpoint's Concept_Interpreter matrix and
vocabulary in the repo listing, reading the matrix in either orientation, its top words per latent
against a direct argsort, fetching from a fake Hub and from a temporary local cache, falling back
to our own names, and both names side by side in the explorer and the app. Nothing leaves the
machine."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from _builders import tiny_startup_cfg, write_msae_pth
from _explorer_helpers import launched_app
from gradio_client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from sae_explorer import hub, release_names
from sae_explorer.explorer import RELEASE_NAMES_COLUMN
from sae_explorer.explorer_startup import StartupConfig, load_explorer
from sae_explorer.release_names import (
    ReleaseFiles,
    concept_layout,
    fetch_release_names,
    find_release_files,
    read_release_names,
    top_words,
)
from sae_explorer.worlds import shapes

REPO = hub.MSAE_REPO
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAIL = "cc3m_ViT-L~14_train_image_2905936_768"
STEM_L = f"6144_768_TopKReLU_64_RW_False_False_0.0_{TAIL}"
CONCEPTS_TAIL = "_disect_ViT-L~14_-1_text_20000_768.npy"
LISTING = [
    "README.md",
    "clip_disect_20k.txt",
    f"ViT-L_14/centered/{STEM_L}.pth",
    f"ViT-L_14/centered/Concept_Interpreter_{STEM_L}{CONCEPTS_TAIL}",
    # a longer stem starting with the same text, and the same checkpoint name in another folder
    f"ViT-L_14/centered/{STEM_L}_more.pth",
    f"ViT-L_14/centered/Concept_Interpreter_{STEM_L}_more{CONCEPTS_TAIL}",
    f"ViT-L_14/not_centered/{STEM_L}.pth",
    f"ViT-L_14/not_centered/Concept_Interpreter_{STEM_L}{CONCEPTS_TAIL}",
    f"ViT-L_14/centered/24576_768_TopKReLU_64_RW_False_False_0.0_{TAIL}.pth",  # no names
    f"ViT-L_14/centered/Concept_Interpreter_24576_768_TopKReLU_64_RW_False_False_0.0_{TAIL}_x"
    f"{CONCEPTS_TAIL}",  # (of a longer name)
]

N_INPUTS, N_LATENTS, N_WORDS = 64, 128, 40
WORLD_STEM = "128_64_TopKReLU_8_RW_False_False_0.0_shapes_train_image_100_64"
WORLD_SAE = f"{shapes.CLIP_ARCH}/centered/{WORLD_STEM}.pth"
WORLD_CONCEPTS = (
    f"{shapes.CLIP_ARCH}/centered/Concept_Interpreter_{WORLD_STEM}"
    f"_disect_{shapes.CLIP_ARCH}_-1_text_{N_WORDS}_{N_INPUTS}.npy"
)
WORLD_VOCABULARY = "clip_disect_20k.txt"
WORDS = tuple(f"word{i:02d}" for i in range(N_WORDS))


def scores_wl(seed: int = 0, n_words: int = N_WORDS, n_latents: int = N_LATENTS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n_words, n_latents)).astype(np.float32)


def direct_top_ids(scores_wl: np.ndarray, k: int = 5) -> np.ndarray:
    """[n_latents, k] word ids, best first, by a plain argsort of the whole matrix."""
    return np.argsort(-scores_wl, axis=0, kind="stable")[:k].T


def write_release(dpath: Path, scores: np.ndarray, words=WORDS) -> None:
    """The world's release laid out as the repo is: SAE, concept matrix, vocabulary at the root."""
    write_msae_pth(dpath / WORLD_SAE, N_INPUTS, N_LATENTS)
    np.save(dpath / WORLD_CONCEPTS, scores)
    (dpath / WORLD_VOCABULARY).write_text("".join(f"{w}\n" for w in words))


def snapshot(cache_dpath: Path, repo_id: str = REPO) -> Path:
    """The folder huggingface_hub keeps ``repo_id`` at ``main`` in, once downloaded."""
    storage = cache_dpath / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    dpath = storage / "snapshots" / COMMIT
    dpath.mkdir(parents=True, exist_ok=True)
    return dpath


def listing_of(dpath: Path):
    return lambda repo_id: sorted(f.relative_to(dpath).as_posix() for f in dpath.rglob("*.*"))


# --------------------------------------------------------------------------- finding the files
def test_finds_the_concept_file_and_vocabulary_beside_the_checkpoint():
    files = find_release_files(f"hf-hub:{REPO}/{LISTING[2]}", LISTING)
    assert files == ReleaseFiles(REPO, None, LISTING[2], LISTING[3], "clip_disect_20k.txt")
    other = find_release_files(f"hf-hub:{REPO}@v1/{LISTING[6]}", LISTING)
    assert (other.revision, other.concepts) == ("v1", LISTING[7])
    assert other.concepts_source == f"hf-hub:{REPO}@v1/{LISTING[7]}"
    nearer = find_release_files(
        f"hf://{REPO}/{LISTING[2]}", [*LISTING, "ViT-L_14/clip_disect_20k.txt"]
    )
    assert nearer.vocabulary == "ViT-L_14/clip_disect_20k.txt"


def test_missing_concept_file_or_vocabulary_is_named():
    with pytest.raises(FileNotFoundError, match=r"no Concept_Interpreter_24576_768_.*_disect_\*"):
        find_release_files(f"hf-hub:{REPO}/{LISTING[-2]}", LISTING)
    without_vocabulary = [f for f in LISTING if not f.endswith(".txt")]
    with pytest.raises(FileNotFoundError, match=r"no clip_disect_20k\.txt in ViT-L_14/centered"):
        find_release_files(f"hf-hub:{REPO}/{LISTING[2]}", without_vocabulary)
    with pytest.raises(ValueError, match="not a Hub source"):
        find_release_files(f"/local/{LISTING[2]}", LISTING)


# --------------------------------------------------------------------------- reading the matrix
@pytest.mark.parametrize(
    ("shape", "layout"),
    [((20, 8), "words_latents"), ((8, 20), "latents_words"), ((20, 20), "words_latents")],
)
def test_layout_is_read_from_the_shape(shape, layout):
    n_latents = 20 if shape == (20, 20) else 8
    assert concept_layout(shape, 20, n_latents) == layout


def test_a_wrong_shape_is_refused_naming_both_shapes(tmp_path):
    expected = r"expected \(40, 128\) \(words x latents\) or \(128, 40\) \(latents x words\)"
    with pytest.raises(ValueError, match=r"has shape \(40, 127\); " + expected):
        concept_layout((40, 127), N_WORDS, N_LATENTS)
    np.save(tmp_path / "c.npy", scores_wl())
    (tmp_path / "v.txt").write_text("".join(f"{w}\n" for w in WORDS[:-1]))  # one word short
    with pytest.raises(ValueError, match=r"c\.npy: the concept matrix has shape \(40, 128\)"):
        read_release_names(tmp_path / "c.npy", tmp_path / "v.txt", N_LATENTS)


@pytest.mark.parametrize("layout", ["words_latents", "latents_words"])
@pytest.mark.parametrize("block_bytes", [1, 3 * N_LATENTS * 4, 1 << 30])
def test_top_words_match_a_direct_argsort(layout, block_bytes):
    m_wl = scores_wl(seed=1)
    scores = m_wl if layout == "words_latents" else np.ascontiguousarray(m_wl.T)
    top = top_words(scores, layout, 5, block_bytes=block_bytes)
    expected = direct_top_ids(m_wl)
    np.testing.assert_array_equal(top.ids_lk, expected)
    np.testing.assert_array_equal(top.scores_lk, np.take_along_axis(m_wl.T, expected, 1))


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n_words=st.integers(1, 30),
    n_latents=st.integers(1, 12),
    block_rows=st.integers(1, 31),
    k=st.integers(1, 8),
)
def test_top_words_of_any_matrix_in_any_blocks(seed, n_words, n_latents, block_rows, k):
    m_wl = scores_wl(seed, n_words, n_latents)
    top = top_words(m_wl, "words_latents", k, block_bytes=block_rows * n_latents * 4)
    np.testing.assert_array_equal(top.ids_lk, direct_top_ids(m_wl, k))
    m_lw = np.ascontiguousarray(m_wl.T)
    top = top_words(m_lw, "latents_words", k, block_bytes=block_rows * n_words * 4)
    np.testing.assert_array_equal(top.ids_lk, direct_top_ids(m_wl, k))


def test_nan_scores_rank_last():
    m_wl = scores_wl(seed=2, n_words=8, n_latents=3)
    m_wl[0] = np.nan
    m_wl[1] = 100.0
    top = top_words(m_wl, "words_latents", 8)
    assert (top.ids_lk[:, 0] == 1).all() and (top.ids_lk[:, -1] == 0).all()


@pytest.mark.parametrize("transposed", [False, True])
def test_names_from_files_in_either_orientation(tmp_path, transposed):
    m_wl = scores_wl(seed=3)
    np.save(tmp_path / "c.npy", m_wl.T.copy() if transposed else m_wl)
    (tmp_path / "v.txt").write_text("\n".join(WORDS) + "\n")
    names = read_release_names(tmp_path / "c.npy", tmp_path / "v.txt", N_LATENTS, "src")
    expected = direct_top_ids(m_wl)
    latent = 17
    assert [n.word for n in names.top(latent)] == [WORDS[i] for i in expected[latent]]
    assert names.top(latent)[0].cosine == pytest.approx(float(m_wl[expected[latent, 0], latent]))
    assert names.text(latent, 2).startswith(f"{WORDS[expected[latent, 0]]} (")
    assert names.n_latents == N_LATENTS and names.source == "src"


# --------------------------------------------------------------------------- fetching
def test_fetch_downloads_both_files_at_the_checkpoint_revision(fake_hub):
    root, calls = fake_hub
    root = root / REPO
    m_wl = scores_wl(seed=4)
    write_release(root, m_wl)
    source = f"hf-hub:{REPO}@v2/{WORLD_SAE}"
    lookup = fetch_release_names(source, N_LATENTS, listing_of(root))
    assert lookup.reason == "" and lookup.names is not None
    assert calls == [(REPO, WORLD_CONCEPTS, "v2"), (REPO, WORLD_VOCABULARY, "v2")]
    assert lookup.names.source == f"hf-hub:{REPO}@v2/{WORLD_CONCEPTS}"
    np.testing.assert_array_equal(lookup.names.top_ids_lk, direct_top_ids(m_wl))


def test_offline_the_names_come_from_the_local_cache(hf_cache):
    m_wl = scores_wl(seed=5)
    write_release(snapshot(hf_cache), m_wl)
    with hub.offline_mode():  # real hf_hub_download, answering from the cache only
        lookup = fetch_release_names(
            f"hf-hub:{REPO}/{WORLD_SAE}", N_LATENTS, hub.list_cached_repo_files
        )
    assert lookup.names is not None, lookup.reason
    np.testing.assert_array_equal(lookup.names.top_ids_lk, direct_top_ids(m_wl))


def test_without_the_files_we_keep_our_own_names(fake_hub, caplog):
    root, _ = fake_hub
    root = root / REPO
    write_release(root, scores_wl())
    source = f"hf-hub:{REPO}/{WORLD_SAE}"
    listed = listing_of(root)
    with caplog.at_level(logging.WARNING, logger=release_names.__name__):
        no_file = fetch_release_names(
            source, N_LATENTS, lambda r: [f for f in listed(r) if "Concept" not in f]
        )
    assert no_file.names is None and "no Concept_Interpreter_" in no_file.reason
    assert "showing our own latent names only" in caplog.text
    wrong = fetch_release_names(source, N_LATENTS + 1, listed)
    assert wrong.names is None and "expected (40, 129)" in wrong.reason
    assert fetch_release_names("builtin:shapes", N_LATENTS, listed).names is None
    (root / WORLD_VOCABULARY).unlink()  # still listed, but the download fails
    failed = fetch_release_names(source, N_LATENTS, lambda r: [*listed(r), WORLD_VOCABULARY])
    assert failed.names is None and "EntryNotFoundError" in failed.reason


# --------------------------------------------------------------------------- explorer and app
def release_cfg(tmp_path) -> StartupConfig:
    """Auto SAE selection over the world's tiny CLIP architecture (random weights)."""
    return tiny_startup_cfg(tmp_path, strict=True)


def offline() -> hub.HubStatus:
    return hub.HubStatus(False, "test: offline")


@pytest.fixture
def release_explorer(tmp_path, hf_cache):
    write_release(snapshot(hf_cache), scores_wl(seed=6))
    return load_explorer(release_cfg(tmp_path), hub_status=offline)


def test_explorer_shows_the_release_names_beside_ours(release_explorer):
    explorer = release_explorer
    names = explorer.release_names
    assert names is not None and names.source == f"hf-hub:{REPO}/{WORLD_CONCEPTS}"
    assert explorer.sources.details["release_names"] == names.source
    direct = direct_top_ids(scores_wl(seed=6))
    table = explorer.inspect(explorer.item_query(0)).table
    assert list(table.columns[:3]) == ["latent", "names", RELEASE_NAMES_COLUMN]
    for latent, text in zip(table["latent"], table[RELEASE_NAMES_COLUMN]):
        assert text.split(" (")[0] == WORDS[direct[latent, 0]]
    page = explorer.latent_page(7)
    assert list(page.names.columns) == [
        "name",
        "AUROC",
        "named",
        "cosine",
        "MSAE name",
        "MSAE cosine",
    ]
    assert page.names["MSAE name"].tolist() == [WORDS[i] for i in direct[7]]
    assert len(page.names["name"].iloc[0]) > 0  # ours still there
    assert page.summary.msae_names == names.text(7, 5)
    assert RELEASE_NAMES_COLUMN in explorer.similar_latents(7).columns
    assert RELEASE_NAMES_COLUMN in explorer.top_latents(explorer.item_query(0)).columns
    assert RELEASE_NAMES_COLUMN in explorer.search_latents("red").columns


def test_without_release_files_the_explorer_is_unchanged(tmp_path, hf_cache):
    dpath = snapshot(hf_cache)
    write_msae_pth(dpath / WORLD_SAE, N_INPUTS, N_LATENTS)
    explorer = load_explorer(release_cfg(tmp_path), hub_status=offline)
    assert explorer.release_names is None
    assert explorer.sources.details["release_names"].startswith("none (FileNotFoundError: no ")
    assert list(explorer.latent_page(7).names.columns) == ["name", "AUROC", "named", "cosine"]
    assert RELEASE_NAMES_COLUMN not in explorer.inspect(explorer.item_query(0)).table.columns


@pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")
def test_app_latent_page_shows_both_names(release_explorer):
    with launched_app(release_explorer) as url:
        result = Client(url, verbose=False).predict(7, api_name="/latent")
    summary, names = result[1], result[5]
    assert f"MSAE release names: {release_explorer.release_names.text(7, 5)}" in summary
    assert names["headers"] == ["name", "AUROC", "named", "cosine", "MSAE name", "MSAE cosine"]
