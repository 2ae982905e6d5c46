"""precompute(): tiny random CLIP + random SAE, checked against direct encoding and brute force."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from _precompute_helpers import assert_same_index, build_sae, write_image, write_truncated_jpeg

from sae_explorer.corpus import Corpus, load_corpus
from sae_explorer.index import MANIFEST_NAME, ActivationIndex
from sae_explorer.precompute import PrecomputeConfig, cache_key, precompute

CFG = PrecomputeConfig(top_k=16, top_m=5, n_samples=12, chunk_size=24, batch_size=8, n_words=50)


@pytest.fixture(scope="module")
def encoder():
    from sae_explorer.encoder import load_encoder
    from sae_explorer.worlds import shapes

    return load_encoder(shapes.CLIP_ARCH, device="cpu")


@pytest.fixture(scope="module")
def sae(encoder):
    return build_sae(encoder.embed_dim, 80, matryoshka=4)


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory):
    """Shapes items, a few image files (one truncated) and a text file: 20 + 6 + 4 items."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(5):
        write_image(root / "photos" / ("a" if i < 3 else "b") / f"{i}.png", seed=i)
    write_truncated_jpeg(root / "photos" / "b" / "broken.jpg")
    (root / "texts.txt").write_text("a red circle\na blue square\na dog\nthe sea\n")
    return load_corpus(["builtin:shapes?n=10", root / "photos", root / "texts.txt"])


@pytest.fixture(scope="module")
def built(encoder, sae, mixed_corpus, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    calls = []
    index = precompute(
        encoder, sae, mixed_corpus, cache, CFG, progress=lambda f, m: calls.append(f)
    )
    return index, cache, calls


def test_items_skips_and_manifest(built, mixed_corpus, encoder, sae):
    index, _, calls = built
    manifest = index.manifest
    assert manifest["counts"]["n_items"] == len(mixed_corpus) - 1 == 29
    assert manifest["counts"]["n_skipped"] == 1
    assert manifest["skipped"][0]["item_id"] == "1:b/broken.jpg"
    assert "broken.jpg" in manifest["skipped"][0]["error"]
    assert manifest["encoder"]["model_id"] == encoder.model_id
    assert manifest["sae"]["content_hash"] == sae.content_hash
    assert manifest["corpus"]["manifest_hash"] == mixed_corpus.manifest_hash
    assert {"build_s", "clip_image_s", "clip_text_s", "sae_index_s", "finish_s"} <= set(
        manifest["timings"]
    )
    items = index.items
    assert "1:b/broken.jpg" not in set(items["item_id"])
    photo = int(np.flatnonzero(items["item_id"] == "1:b/4.png")[0])
    assert items["corpus_idx"].iloc[-1] == len(items)  # rows after the skipped file shift by one
    expected = mixed_corpus.load_image(int(items.loc[photo, "corpus_idx"]))
    assert np.array_equal(np.asarray(index.load_image(photo)), np.asarray(expected))
    with pytest.raises(ValueError, match="is a text, not an image"):
        index.load_image(int(np.flatnonzero(items["modality"] == "text")[0]))
    assert items["modality"].value_counts().to_dict() == {"image": 15, "text": 14}
    assert items.loc[0, "attr_color"] == mixed_corpus.items[0].attributes["color"]
    assert calls == sorted(calls) and calls[-1] == 1.0


def test_embeddings_and_latents_match_direct_encoding(built, mixed_corpus, encoder, sae):
    index, _, _ = built
    items = index.items
    positions = items["corpus_idx"].to_numpy()
    x = []
    for pos in positions:
        item = mixed_corpus.items[pos]
        if item.modality == "image":
            x.append(encoder.encode_images([mixed_corpus.load_image(pos)])[0])
        else:
            x.append(encoder.encode_texts([item.source])[0])
    x = torch.stack(x)
    assert np.allclose(np.asarray(index.embeddings, np.float32), x.numpy(), atol=2e-2, rtol=1e-2)
    with torch.inference_mode():
        z = sae.encode(x).numpy()
    # top-M per latent equals a brute-force argsort of the dense activations
    for latent in range(sae.n_latents):
        top = index.top_examples(latent)
        want = np.argsort(-z[:, latent], kind="stable")[:5]
        want = want[z[want, latent] > 0]
        assert np.allclose(top["value"], z[want, latent], rtol=1e-4, atol=1e-5)
    assert np.allclose(index.frequency, (z > 0).mean(0))
    is_image = (items["modality"] == "image").to_numpy()
    active = (z > 0).sum(0)
    frac = np.divide((z[is_image] > 0).sum(0), active, where=active > 0, out=np.full(80, np.nan))
    assert np.allclose(index.image_fraction, frac, equal_nan=True)
    levels = sae.latent_levels(torch.from_numpy(z)).numpy()
    for latent in range(sae.n_latents):
        kept = np.sort(levels[:, latent][levels[:, latent] >= 0])
        assert index.levels[latent] == (kept[(len(kept) - 1) // 2] if len(kept) else -1)
    ids, values = index.item_codes(3)
    assert ids.tolist() == np.argsort(-z[3], kind="stable")[: len(ids)].tolist()
    assert np.allclose(values, z[3, ids], rtol=1e-3)


def test_names_are_stored(built, sae, encoder, monkeypatch):
    index, cache, _ = built
    names = ActivationIndex.load(index.dpath).names
    assert names is not None and names.n_latents == sae.n_latents
    assert "red" in names.vocabulary and "circle" in names.vocabulary  # shapes world words
    assert len(names.top(0)) == 5
    # the vocabulary's embeddings are cached per CLIP model and reused by the next SAE
    assert len(list((cache / "vocab").glob("*.npy"))) == 1
    monkeypatch.setattr(encoder, "encode_texts", lambda *a, **k: pytest.fail("re-embedded"))
    other = precompute(
        encoder,
        build_sae(encoder.embed_dim, 8),
        load_corpus("builtin:shapes?n=2&modality=image"),
        cache,
        CFG,
    )
    assert other.names.n_latents == 8


def test_second_call_reuses_the_index(built, encoder, sae, mixed_corpus, monkeypatch):
    index, cache, _ = built
    from sae_explorer.index.build import IndexBuilder

    monkeypatch.setattr(IndexBuilder, "run", lambda *a, **k: pytest.fail("rebuilt a valid index"))
    again = precompute(encoder, sae, mixed_corpus, cache, CFG)
    assert again.dpath == index.dpath and again.manifest["created"] == index.manifest["created"]


def test_corrupt_manifest_triggers_rebuild(built, encoder, sae, mixed_corpus, tmp_path, caplog):
    first, cache, _ = built
    shutil.copytree(cache, tmp_path, dirs_exist_ok=True)
    top = first.top_examples(1)
    dpath = tmp_path / first.dpath.relative_to(cache)
    (dpath / MANIFEST_NAME).write_text('{"schema": 1, "files": {"items.parquet": 3}')
    with caplog.at_level(logging.WARNING, logger="sae_explorer.index.cache"):
        second = precompute(encoder, sae, mixed_corpus, tmp_path, CFG)
    assert "rebuilding" in caplog.text and second.dpath == dpath
    assert json.loads((second.dpath / MANIFEST_NAME).read_text())["counts"]["n_items"] == 29
    assert second.top_examples(1).equals(top)


def test_resume_after_interruption_is_identical(built, encoder, sae, mixed_corpus, tmp_path):
    reference = built[0]
    with pytest.raises(InterruptedError):
        precompute(encoder, sae, mixed_corpus, tmp_path / "b", CFG, stop_after_chunks=1)
    partial = next(p for p in (tmp_path / "b" / "index").iterdir() if p.is_dir())
    assert not (partial / MANIFEST_NAME).exists() and (partial / "progress.json").exists()
    resumed = precompute(encoder, sae, mixed_corpus, tmp_path / "b", CFG)
    assert_same_index(reference, resumed)
    assert resumed.manifest["skipped"] == reference.manifest["skipped"]


def test_cache_key_tracks_inputs(encoder, sae, mixed_corpus):
    key = cache_key(encoder.model_id, sae.content_hash, mixed_corpus.manifest_hash, CFG)
    other_sae = build_sae(encoder.embed_dim, 80, seed=1)
    assert key != cache_key(
        encoder.model_id, other_sae.content_hash, mixed_corpus.manifest_hash, CFG
    )
    assert key != cache_key(encoder.model_id, sae.content_hash, "other", CFG)
    changed = PrecomputeConfig(top_k=17)
    assert cache_key("m", "s", "c", changed) != cache_key("m", "s", "c", PrecomputeConfig())
    faster = PrecomputeConfig(batch_size=3, n_workers=1, chunk_size=5)
    assert cache_key("m", "s", "c", faster) == cache_key("m", "s", "c", PrecomputeConfig())


def test_bad_inputs_raise_value_errors(encoder, sae, tmp_path):
    with pytest.raises(ValueError, match="corpus is empty"):
        precompute(encoder, sae, Corpus([], "nothing"), tmp_path, CFG)
    wide = build_sae(encoder.embed_dim + 1, 16)
    texts = load_corpus("builtin:shapes?n=2&modality=text")
    with pytest.raises(ValueError, match="SAE expects 65-d inputs"):
        precompute(encoder, wide, texts, tmp_path, CFG)
    (tmp_path / "bad").mkdir()
    write_truncated_jpeg(tmp_path / "bad" / "x.jpg")
    with pytest.raises(ValueError, match="none of the 1 corpus items could be read"):
        precompute(encoder, sae, load_corpus(tmp_path / "bad"), tmp_path, CFG)

    class ImageOnlyEncoder:
        model_id, embed_dim = "image-only", encoder.embed_dim
        check_sae = encoder.check_sae
        encode_pixels = encoder.encode_pixels

    with pytest.raises(ValueError, match="has text items but the encoder 'image-only' cannot"):
        precompute(ImageOnlyEncoder(), sae, texts, tmp_path, CFG)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        PrecomputeConfig(top_k=0)


def test_cli(encoder, sae, tmp_path, capsys):
    from sae_explorer.checkpoints import save_sae
    from sae_explorer.precompute import main
    from sae_explorer.worlds import shapes

    sae_dpath = save_sae(sae, tmp_path / "sae")
    (tmp_path / "t.txt").write_text("a red circle\na star\n")
    argv = [
        "--clip", shapes.CLIP_ARCH, "--sae", str(sae_dpath), "--corpus", "builtin:shapes?n=4",
        "--corpus", str(tmp_path / "t.txt"), "--cache-dir", str(tmp_path / "cache"),
        "--device", "cpu", "--chunk-size", "4", "--no-names",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "10 items (4 images, 6 texts), 0 skipped, 80 latents" in out
    dpath = next(p for p in (tmp_path / "cache" / "index").iterdir() if p.is_dir())
    assert ActivationIndex.load(dpath).names is None
    assert main([*argv[:4], "--corpus", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_force_clears_the_index_only_under_its_build_lock(encoder, sae, tmp_path, caplog):
    """--force rebuilds a finished index, but deletes it only once it holds the folder's build
    lock: while another process holds it (reading the index to reuse it, or building it), the
    forced run waits and the index stays whole."""
    import threading

    from sae_explorer.checkpoints import save_sae
    from sae_explorer.index.cache import build_lock
    from sae_explorer.precompute import main
    from sae_explorer.worlds import shapes

    sae_dpath = save_sae(sae, tmp_path / "sae")
    argv = [
        "--clip", shapes.CLIP_ARCH, "--sae", str(sae_dpath), "--corpus", "builtin:shapes?n=4",
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-names",
    ]  # fmt: skip
    assert main(argv) == 0
    dpath = next(p for p in (tmp_path / "cache" / "index").iterdir() if p.is_dir())
    manifest = json.loads((dpath / MANIFEST_NAME).read_text())
    manifest["timings"]["marker"] = 1.0  # gone once the index is rebuilt
    (dpath / MANIFEST_NAME).write_text(json.dumps(manifest))
    exit_codes: list[int] = []
    with caplog.at_level(logging.INFO), build_lock(dpath):  # "the other process"
        forced = threading.Thread(target=lambda: exit_codes.append(main([*argv, "--force"])))
        forced.start()
        for _ in range(1200):
            if "waiting for it" in caplog.text:
                break
            threading.Event().wait(0.05)
        assert "another process is building" in caplog.text
        assert ActivationIndex.load(dpath).manifest == manifest  # untouched while we hold it
    forced.join(timeout=120)
    assert exit_codes == [0]
    assert "marker" not in ActivationIndex.load(dpath).manifest["timings"]  # rebuilt


def test_real_photos_and_captions(encoder, shared_data_dpath, tmp_path):
    corpus = load_corpus(
        [shared_data_dpath / "cifar10-test", shared_data_dpath / "flickr8k-1k" / "captions.txt"],
        max_items=20,
    )
    sae = build_sae(encoder.embed_dim, 64, seed=5)
    index = precompute(encoder, sae, corpus, tmp_path, PrecomputeConfig(chunk_size=32, names=False))
    counts = index.manifest["counts"]
    assert counts["n_items"] == len(corpus) and counts["n_skipped"] == 0
    assert counts["n_images"] == corpus.n_images and counts["n_texts"] == corpus.n_texts
    assert set(index.items["label"].dropna()) == {
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    }  # fmt: skip
    assert index.top_examples(0)["source"].str.len().gt(0).all()
    busiest = int(np.argmax(index.frequency))
    assert len(index.top_examples(busiest)) == 32
    assert index.nearest(index.embeddings[0], k=1)["item_idx"].tolist() == [0]


def test_in_order_merges_in_sequence_whoever_delivers():
    import random
    import threading

    from sae_explorer.precompute import InOrder

    merged: list[int] = []
    in_order = InOrder(lambda key, result: merged.append((key, result)))
    order = list(range(200))
    random.Random(0).shuffle(order)
    threads = [
        threading.Thread(target=lambda part=order[w::4]: [in_order.deliver(i, i, -i) for i in part])
        for w in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert merged == [(i, -i) for i in range(200)] and not in_order.parked

    def fail_on_two(key, result):
        if key == 2:
            raise RuntimeError("merge failed")
        merged.append(key)

    merged.clear()
    failing = InOrder(fail_on_two)
    failing.deliver(1, 1, None)
    failing.deliver(0, 0, None)  # merges 0 and 1
    with pytest.raises(RuntimeError, match="merge failed"):
        failing.deliver(2, 2, None)
    failing.deliver(3, 3, None)  # dropped: the run has failed
    assert merged == [0, 1]
