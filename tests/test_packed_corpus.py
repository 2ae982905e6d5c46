"""Corpora packed in shard files: WebDataset tars and Parquet with image bytes (img2dataset's
layouts), made here from the built-in world's images and real photos; unreadable shards are
skipped and listed, never fatal."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sae_explorer.corpus import load_corpus, load_item_image
from sae_explorer.worlds import shapes


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def world_samples(n: int, start: int = 0) -> list[tuple[str, bytes, str, str]]:
    """(key, JPEG bytes, caption, label) of built-in world items."""
    out = []
    for i in range(start, start + n):
        item = shapes.make_item(i)
        out.append((f"{i:09d}", jpeg_bytes(item.image), item.caption, item.attributes["shape"]))
    return out


def write_tar(fpath: Path, samples, with_labels: bool = True) -> Path:
    """A WebDataset shard as img2dataset writes it: <key>.jpg, <key>.txt (and <key>.cls)."""
    fpath.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fpath, "w") as tar:
        for key, image, caption, label in samples:
            members = {"jpg": image, "txt": caption.encode(), "json": b"{}"}
            if with_labels:
                members["cls"] = label.encode()
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return fpath


def write_parquet(fpath: Path, samples, row_group_size: int = 2) -> Path:
    """img2dataset's Parquet output: key, jpg (bytes), txt; several row groups."""
    fpath.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "key": [s[0] for s in samples],
        "jpg": pa.array([s[1] for s in samples], pa.binary()),
        "txt": [s[2] for s in samples],
        "status": ["success"] * len(samples),
    })  # fmt: skip
    pq.write_table(table, fpath, row_group_size=row_group_size)
    return fpath


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_webdataset_shard_lists_images_captions_labels_and_reads_each_image(tmp_path):
    samples = world_samples(5)
    corpus = load_corpus(write_tar(tmp_path / "shard-00000.tar", samples))
    images = [item for item in corpus.items if item.modality == "image"]
    texts = [item for item in corpus.items if item.modality == "text"]
    assert [i.item_id for i in images] == [f"shard-00000/{s[0]}" for s in samples]
    assert [t.source for t in texts] == [s[2] for s in samples]
    assert [i.label for i in images] == [s[3] for s in samples]
    for item, sample in zip(images[::-1], samples[::-1]):  # any order: each read on its own
        assert np.array_equal(np.asarray(load_item_image(item)), decoded(sample[1]))
    assert corpus.unreadable == ()


def test_real_photos_in_a_tar_and_a_parquet_read_back_exactly(tmp_path, shared_data_dpath):
    fpaths = sorted((shared_data_dpath / "flickr8k-1k" / "images").glob("*.jpg"))[:4]
    samples = [(p.stem, p.read_bytes(), f"photo {p.stem}", "") for p in fpaths]
    for source in (
        write_tar(tmp_path / "a.tar", samples, False),
        write_parquet(tmp_path / "a.parquet", samples),
    ):
        corpus = load_corpus(source)
        images = [item for item in corpus.items if item.modality == "image"]
        assert len(images) == 4
        for item, fpath in zip(images, fpaths):
            assert np.array_equal(np.asarray(load_item_image(item)), decoded(fpath.read_bytes()))


def test_parquet_with_image_bytes_across_row_groups(tmp_path):
    samples = world_samples(5)
    corpus = load_corpus(write_parquet(tmp_path / "part-0.parquet", samples))
    images = [item for item in corpus.items if item.modality == "image"]
    texts = [item for item in corpus.items if item.modality == "text"]
    assert [i.item_id for i in images] == [f"part-0/{s[0]}" for s in samples]
    assert [t.item_id for t in texts] == [f"part-0/{s[0]}:text" for s in samples]
    for item, sample in zip(images[::-1], samples[::-1]):
        assert np.array_equal(np.asarray(load_item_image(item)), decoded(sample[1]))


def test_parquet_of_image_paths_stays_a_table(tmp_path):
    shapes.make_item(0).image.save(tmp_path / "a.png")
    pq.write_table(pa.table({"image": ["a.png"], "caption": ["a thing"]}), tmp_path / "t.parquet")
    corpus = load_corpus(tmp_path / "t.parquet")
    assert [(i.modality, Path(i.source).name if i.modality == "image" else i.source)
            for i in corpus.items] == [("image", "a.png"), ("text", "a thing")]  # fmt: skip


def test_unreadable_shards_are_skipped_and_listed(tmp_path):
    dpath = tmp_path / "cc3m"
    write_tar(dpath / "00000.tar", world_samples(3))
    write_tar(dpath / "00001.tar", world_samples(3, start=3))
    good = (dpath / "00001.tar").read_bytes()
    (dpath / "00001.tar").write_bytes(good[: len(good) // 2])  # cut short mid-member
    (dpath / "00002.tar").write_bytes(b"this is not a tar file" * 40)
    write_tar(dpath / "00004.tar", world_samples(2, start=8), with_labels=False)
    with tarfile.open(dpath / "00004.tar") as tar:  # cut inside the last image's bytes, which
        last = [m for m in tar if m.name.endswith(".jpg")][-1]  # listing does not read
    data = (dpath / "00004.tar").read_bytes()
    (dpath / "00004.tar").write_bytes(data[: last.offset_data + last.size // 2])
    write_tar(dpath / "00003.tar", world_samples(2, start=6))
    (dpath / "00000.parquet").write_bytes(b"img2dataset's per-shard metadata sits beside tars")
    corpus = load_corpus(dpath)
    assert corpus.n_images == 5 and corpus.n_texts == 5
    bad = {Path(u.source).name: u.error for u in corpus.unreadable}
    assert set(bad) == {"00001.tar", "00002.tar", "00004.tar"}
    assert "runs past the end of the file" in bad["00004.tar"]
    assert "cannot list the WebDataset shard" in bad["00002.tar"]
    # a glob names shards too; Parquet files that cannot be read are listed the same way
    write_parquet(tmp_path / "pq" / "a.parquet", world_samples(2))
    (tmp_path / "pq" / "b.parquet").write_bytes(b"PAR1 but not really")
    corpus = load_corpus(f"{tmp_path / 'pq'}/*.parquet")
    assert corpus.n_images == 2
    assert [Path(u.source).name for u in corpus.unreadable] == ["b.parquet"]
    with pytest.raises(ValueError, match="no images or texts in the 1 shard files"):
        load_corpus(dpath / "00002.tar")


def test_precompute_over_shards_lists_unreadable_shards_and_images(tmp_path):
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.encoder import load_encoder
    from sae_explorer.precompute import PrecomputeConfig, precompute

    samples = world_samples(4)
    samples[2] = (samples[2][0], samples[2][1][:200], *samples[2][2:])  # a truncated JPEG
    write_tar(tmp_path / "shards" / "0.tar", samples)
    (tmp_path / "shards" / "1.tar").write_bytes(b"\0" * 10)
    corpus = load_corpus(tmp_path / "shards")
    encoder = load_encoder("builtin:shapes", device="cpu")
    cfg = PrecomputeConfig(top_k=8, chunk_size=8, n_workers=0, names=False)
    index = precompute(encoder, load_sae("builtin:shapes"), corpus, tmp_path / "cache", cfg)
    assert index.manifest["counts"]["n_skipped"] == 1
    assert index.manifest["skipped"][0]["item_id"] == f"0/{samples[2][0]}"
    unreadable = index.manifest["corpus"]["unreadable_sources"]
    assert [Path(u["source"]).name for u in unreadable] == ["1.tar"]
    row = int(np.flatnonzero(index.items["modality"] == "image")[0])
    assert np.array_equal(np.asarray(index.load_image(row)), decoded(samples[0][1]))
