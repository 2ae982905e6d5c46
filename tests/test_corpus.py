"""Corpus sources: folders, tables, text files, the built-in world, HF datasets (offline)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from _precompute_helpers import write_image, write_truncated_jpeg

from sae_explorer.corpus import load_corpus, load_item_image


def test_folder_recursive_labels_and_ids(tmp_path):
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            write_image(tmp_path / cls / f"{i}.png", seed=i)
    write_image(tmp_path / "dog" / "puppies" / "p.jpg", seed=7)
    (tmp_path / "notes.txt").write_text("not an image")
    corpus = load_corpus(tmp_path)
    assert [it.item_id for it in corpus.items] == [
        "cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png", "dog/puppies/p.jpg",
    ]  # fmt: skip
    assert [it.label for it in corpus.items] == ["cat"] * 3 + ["dog"] * 2 + ["puppies"]
    assert {it.modality for it in corpus.items} == {"image"}
    image = corpus.load_image(0)
    assert image.mode == "RGB" and image.size == (24, 20)
    assert np.array_equal(np.asarray(image), np.asarray(load_item_image(corpus.items[0])))


def test_capped_folder_keeps_every_class(tmp_path):
    for cls in "abcd":
        for i in range(10):
            write_image(tmp_path / cls / f"{i:02d}.png", seed=i, size=(4, 4))
    corpus = load_corpus(tmp_path, max_items=8)
    assert len(corpus) == 8
    assert sorted({it.label for it in corpus.items}) == list("abcd")


def test_manifest_hash_is_stable_and_sees_edits(tmp_path):
    fpath = write_image(tmp_path / "a" / "x.png", seed=1)
    write_image(tmp_path / "a" / "y.png", seed=2)
    first = load_corpus(tmp_path).manifest_hash
    assert load_corpus(tmp_path).manifest_hash == first
    write_image(fpath, seed=3, size=(30, 30))  # replaced file, same name
    os.utime(fpath, ns=(1, 1))
    assert load_corpus(tmp_path).manifest_hash != first


def test_csv_with_images_texts_and_labels(tmp_path):
    write_image(tmp_path / "images" / "a.png", seed=1)
    write_image(tmp_path / "b.png", seed=2)
    table = pd.DataFrame(
        {
            "image": ["a.png", "a.png", "b.png"],
            "caption": ["a red thing", "something red", "a blue thing"],
            "label": ["red", "red", "blue"],
        }
    )
    table.to_csv(tmp_path / "data.csv", index=False)
    corpus = load_corpus(tmp_path / "data.csv")
    assert [(it.modality, it.item_id, it.label) for it in corpus.items] == [
        ("image", "a.png", "red"),
        ("text", "row1", "red"),
        ("text", "row2", "red"),
        ("image", "b.png", "blue"),
        ("text", "row3", "blue"),
    ]
    assert corpus.items[0].source == str(tmp_path / "images" / "a.png")  # found in images/
    assert corpus.items[1].source == "a red thing"
    assert corpus.load_image(3).size == (24, 20)


def test_jsonl_and_parquet_with_named_columns(tmp_path):
    rows = [{"uid": f"u{i}", "sentence": f"text number {i}", "cls": str(i % 2)} for i in range(4)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_corpus(f"{tmp_path / 't.jsonl'}?id=uid&label=cls")
    assert [it.item_id for it in corpus.items] == ["u0", "u1", "u2", "u3"]
    assert [it.label for it in corpus.items] == ["0", "1", "0", "1"]
    assert corpus.n_texts == 4 and corpus.n_images == 0
    pd.DataFrame(rows).to_parquet(tmp_path / "t.parquet")
    corpus = load_corpus(f"{tmp_path / 't.parquet'}?text=sentence")
    assert [it.source for it in corpus.items] == [r["sentence"] for r in rows]


def test_table_errors_name_the_problem(tmp_path):
    pd.DataFrame({"foo": [1], "bar": [2]}).to_csv(tmp_path / "x.csv", index=False)
    with pytest.raises(ValueError, match=r"no image column .* columns are \['foo', 'bar'\]"):
        load_corpus(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="text column 'missing' not in the table"):
        load_corpus(f"{tmp_path / 'x.csv'}?text=missing")
    with pytest.raises(ValueError, match=r"unknown table options \['colour'\]"):
        load_corpus(f"{tmp_path / 'x.csv'}?colour=1")


def test_text_file_and_csv_sniffing(tmp_path):
    (tmp_path / "words.txt").write_text("a dog\n\n  a cat  \nimage,caption\n")
    corpus = load_corpus(tmp_path / "words.txt")
    assert [it.source for it in corpus.items] == ["a dog", "a cat", "image,caption"]
    assert [it.item_id for it in corpus.items] == ["line1", "line3", "line4"]
    write_image(tmp_path / "images" / "p.jpg", seed=0)
    (tmp_path / "captions.txt").write_text("image,caption\np.jpg,a photo\np.jpg,the same photo\n")
    corpus = load_corpus(tmp_path / "captions.txt")
    assert [it.modality for it in corpus.items] == ["image", "text", "text"]


def test_empty_and_unsupported_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        load_corpus(tmp_path / "empty")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ValueError, match="no non-empty lines"):
        load_corpus(tmp_path / "blank.txt")
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(ValueError, match="unsupported corpus file"):
        load_corpus(tmp_path / "x.docx")
    with pytest.raises(ValueError, match="not found"):
        load_corpus(tmp_path / "nope")
    with pytest.raises(ValueError, match=r"unknown built-in world .planets.*builtin:shapes"):
        load_corpus("builtin:planets")


def test_builtin_shapes_regenerates_items():
    from sae_explorer.worlds import shapes

    corpus = load_corpus("builtin:shapes?n=6&seed=3")
    assert len(corpus) == 12 and corpus.n_images == 6 and corpus.n_texts == 6
    for index in (0, 5):
        item = shapes.make_item(index, seed=3)
        image_item, text_item = corpus.items[2 * index], corpus.items[2 * index + 1]
        assert image_item.item_id == f"3/{index}:image" and text_item.item_id == f"3/{index}:text"
        assert text_item.source == item.caption
        assert image_item.attributes == item.attributes == text_item.attributes
        assert np.array_equal(np.asarray(corpus.load_image(2 * index)), np.asarray(item.image))
    assert corpus.attribute_names == list(shapes.ATTRIBUTES)
    assert load_corpus("builtin:shapes?n=6&seed=4").manifest_hash != corpus.manifest_hash
    texts = load_corpus("builtin:shapes?n=6&seed=3&modality=text")
    assert texts.n_images == 0 and texts.n_texts == 6


def test_several_sources_get_unique_ids(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("three\n")
    corpus = load_corpus([tmp_path / "a.txt", tmp_path / "b.txt", "builtin:shapes?n=1"])
    assert [it.item_id for it in corpus.items] == [
        "0:line1", "0:line2", "1:line1", "2:0/0:image", "2:0/0:text",
    ]  # fmt: skip


def test_truncated_image_raises_naming_the_file(tmp_path):
    write_truncated_jpeg(tmp_path / "imgs" / "broken.jpg")
    corpus = load_corpus(tmp_path / "imgs")
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        corpus.load_image(0)


# --------------------------------------------------------------------------- Hugging Face
def _local_hf_dataset(tmp_path):
    import datasets

    features = datasets.Features(
        {
            "img": datasets.Image(),
            "caption": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["circle", "square"]),
        }
    )
    images = [str(write_image(tmp_path / "src" / f"{i}.png", seed=i)) for i in range(5)]
    ds = datasets.Dataset.from_dict(
        {"img": images, "caption": [f"caption {i}" for i in range(5)], "label": [0, 1, 0, 1, 1]},
        features=features,
    )
    root = tmp_path / "my_dataset"
    (root / "data").mkdir(parents=True)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def test_hf_dataset_streamed_capped_and_cached(tmp_path, monkeypatch):
    import datasets

    root = _local_hf_dataset(tmp_path)
    cache = tmp_path / "cache"
    corpus = load_corpus(f"hf:{root}", max_items=3, cache_dpath=cache)
    assert [(it.item_id, it.modality, it.label) for it in corpus.items] == [
        ("train/0:image", "image", "circle"), ("train/0:text", "text", "circle"),
        ("train/1:image", "image", "square"), ("train/1:text", "text", "square"),
        ("train/2:image", "image", "circle"), ("train/2:text", "text", "circle"),
    ]  # fmt: skip
    assert corpus.items[3].source == "caption 1"
    original = np.asarray(load_item_image(load_corpus(tmp_path / "src").items[1]))
    assert np.array_equal(np.asarray(corpus.load_image(2)), original)  # bytes kept as they were

    def no_network(*args, **kwargs):
        raise AssertionError("the materialised corpus must be reused")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    again = load_corpus(f"hf:{root}", max_items=3, cache_dpath=cache)
    assert again.manifest_hash == corpus.manifest_hash


def test_hf_image_folder_and_errors(tmp_path):
    for cls in ("ants", "bees"):
        for i in range(2):
            write_image(tmp_path / "folder" / "train" / cls / f"{i}.png", seed=i)
    corpus = load_corpus(f"hf:{tmp_path / 'folder'}", cache_dpath=tmp_path / "cache")
    assert [it.label for it in corpus.items] == ["ants", "ants", "bees", "bees"]
    assert corpus.n_images == 4
    with pytest.raises(ValueError, match="unknown options"):
        load_corpus(f"hf:{tmp_path / 'folder'}?colour=red", cache_dpath=tmp_path / "cache")
    with pytest.raises(ValueError, match="cannot"):
        load_corpus(f"hf:{tmp_path / 'does-not-exist'}", cache_dpath=tmp_path / "cache")


# --------------------------------------------------------------------------- real data
def test_cifar_folder(shared_data_dpath):
    corpus = load_corpus(shared_data_dpath / "cifar10-test", max_items=50)
    assert len(corpus) == 50
    assert len({it.label for it in corpus.items}) == 10
    assert corpus.load_image(0).size == (32, 32)


def test_flickr_captions(shared_data_dpath):
    corpus = load_corpus(shared_data_dpath / "flickr8k-1k" / "captions.txt")
    assert corpus.n_images == 1000 and corpus.n_texts == 5000
    assert len({it.item_id for it in corpus.items}) == 6000
    first_image = next(i for i, it in enumerate(corpus.items) if it.modality == "image")
    assert corpus.load_image(first_image).mode == "RGB"
