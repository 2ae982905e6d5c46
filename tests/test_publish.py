"""Published indexes: ``publish`` uploads an index with a thumbnail of every image and a dataset
card, and ``--index hf-hub:org/name`` serves it with no corpus and no encoding at start, after
checking every file and that the models are the ones it was built with. huggingface_hub's
upload and download are faked over a local folder (``fake_hub_repos``); the rest is real."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from _explorer_helpers import builtin_world_trained, explorer_over

from sae_explorer import corpus as corpus_module
from sae_explorer import publish
from sae_explorer.__main__ import COMMANDS
from sae_explorer.checkpoints.project import save_sae
from sae_explorer.encoder import ClipEncoder
from sae_explorer.explorer.thumbnails import THUMB_SIZES
from sae_explorer.explorer_startup import load_explorer
from sae_explorer.hub_index import HubIndexRef, PublishedRecord
from sae_explorer.sae import SAE
from sae_explorer.startup_config import StartupConfig
from sae_explorer.worlds import shapes

pytestmark = pytest.mark.skipif(
    not builtin_world_trained(), reason="needs the built-in world's trained checkpoints"
)
REPO = "org/shapes-index"
N_IMAGES = 12


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An explorer over a folder of real image files (two label folders), its index built."""
    photos = tmp_path_factory.mktemp("photos")
    for i in range(N_IMAGES):
        item = shapes.make_item(i, seed=3)
        (photos / f"label{i % 2}").mkdir(exist_ok=True)
        item.image.save(photos / f"label{i % 2}" / f"{i}.png")
    explorer = explorer_over(str(photos), tmp_path_factory.mktemp("build-cache"))
    return explorer, photos


def publish_built(built) -> None:
    sources = publish.PublishSources("builtin:shapes", None, "builtin:shapes")
    url = publish.publish(built[0].index.dpath, REPO, sources)
    assert url.startswith(f"https://huggingface.co/datasets/{REPO}")


def serve(built, tmp_path, monkeypatch, **cfg):
    """Take the corpus files away, then start from the Hub copy with anything that would read
    the corpus or encode an image made to fail."""
    photos = built[1]
    hidden = tmp_path / "photos-away"
    shutil.move(photos, hidden)
    monkeypatch.setattr(corpus_module, "load_corpus", forbidden("load the corpus"))
    monkeypatch.setattr(corpus_module, "load_item_image", forbidden("read a corpus file"))
    monkeypatch.setattr(ClipEncoder, "encode_images", forbidden("encode an image"))
    config = {"clip": "builtin:shapes", "sae": "builtin:shapes", "index": f"hf-hub:{REPO}"}
    try:
        return load_explorer(
            StartupConfig(**{**config, **cfg}, cache_dir=str(tmp_path / "space-cache"), strict=True)
        )
    finally:
        shutil.move(hidden, photos)


def forbidden(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"serving a published index must not {what}")

    return fail


def test_a_published_index_serves_without_its_corpus(built, fake_hub_repos, tmp_path, monkeypatch):
    explorer, _ = built
    root, downloads = fake_hub_repos
    mine = explorer.inspect(explorer.text_query("a red circle"))  # before the corpus goes
    latent = int(mine.table["latent"].iloc[0])
    page_before = explorer.latent_page(latent)
    publish_built(built)
    served = serve(built, tmp_path, monkeypatch)
    assert downloads == [(REPO, None)]
    # the same index, read from the download
    assert served.index.dpath.is_relative_to(tmp_path / "space-cache" / "published")
    assert served.index_key == explorer.index_key and served.sae_hash == explorer.sae_hash
    assert served.corpus_hash == explorer.corpus_hash
    np.testing.assert_array_equal(served.index.embeddings, explorer.index.embeddings)
    # the same answers, with thumbnails that were published (no corpus file was read)
    theirs = served.inspect(served.text_query("a red circle"))
    assert list(theirs.table["latent"]) == list(mine.table["latent"])
    page = served.latent_page(latent)
    assert [im.item for im in page.top_images] == [im.item for im in page_before.top_images]
    for image, before in zip(page.top_images, page_before.top_images, strict=True):
        assert image.fpath.is_relative_to(served.thumbs_dpath)
        assert image.fpath.read_bytes() == before.fpath.read_bytes()
    assert "published as hf-hub:org/shapes-index" in served.sources.corpus
    # the repo: a card naming the models, corpus and hashes, and every thumbnail
    card = (root / REPO / "README.md").read_text()
    assert explorer.sae_hash in card and explorer.index_key in card
    assert explorer.corpus_hash in card and "builtin:shapes" in card
    record = PublishedRecord.read(root / REPO)
    for name, digest in record.sha256.items():
        assert f"| `{record.index_dir}/{name}` | `{digest}` |" in card
    n_thumbs = sum(1 for _ in (root / REPO / record.thumbs_dir).rglob("*.webp"))
    assert record.n_images == N_IMAGES and n_thumbs == N_IMAGES * len(THUMB_SIZES)


def test_a_published_index_refuses_other_models(built, fake_hub_repos, tmp_path, monkeypatch):
    explorer, _ = built
    other = SAE(explorer.sae.cfg, generator=torch.Generator().manual_seed(7))
    other_dpath = save_sae(other, tmp_path / "other-sae")
    publish_built(built)
    # (raised as it is: the built-in CLIP has no fallback; other models fall back, or --strict)
    with pytest.raises(ValueError, match=r"built with the SAE whose content hash is \w{12}; "):
        serve(built, tmp_path, monkeypatch, sae=str(other_dpath))


def test_a_damaged_download_is_refused(built, fake_hub_repos, tmp_path, monkeypatch):
    root, _ = fake_hub_repos
    publish_built(built)
    record = PublishedRecord.read(root / REPO)
    fpath = root / REPO / record.index_dir / "embeddings.npy"
    data = bytearray(fpath.read_bytes())
    data[-3] ^= 0xFF  # same size: only the checksum can tell
    fpath.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"embeddings\.npy does not have the SHA-256"):
        serve(built, tmp_path, monkeypatch)


def test_a_missing_thumbnail_is_refused(built, fake_hub_repos, tmp_path, monkeypatch):
    root, _ = fake_hub_repos
    publish_built(built)
    record = PublishedRecord.read(root / REPO)
    next((root / REPO / record.thumbs_dir / "128").glob("*.webp")).unlink()
    with pytest.raises(ValueError, match=f"{N_IMAGES - 1} thumbnails of 128 px"):
        serve(built, tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("source", "ref"),
    [("hf-hub:org/name", HubIndexRef("org/name")), ("hf-hub:org/n@v1", HubIndexRef("org/n", "v1"))],
)
def test_index_names(source, ref):
    assert HubIndexRef.parse(source) == ref and str(ref) == source


@pytest.mark.parametrize("source", ["org/name", "hf-hub:name", "hf-hub:org/name@", "hf-hub:a/b/c"])
def test_bad_index_names_are_refused(source):
    with pytest.raises(ValueError, match=r"hf-hub:org/name\[@revision\]"):
        HubIndexRef.parse(source)


def test_the_revision_is_downloaded(built, fake_hub_repos, tmp_path, monkeypatch):
    _, downloads = fake_hub_repos
    publish_built(built)
    serve(built, tmp_path, monkeypatch, index=f"hf-hub:{REPO}@v2")
    assert downloads == [(REPO, "v2")]


def test_publish_command_stages_a_publication(built, tmp_path, capsys):
    explorer, _ = built
    assert "publish" in COMMANDS
    out = tmp_path / "staged"
    assert publish.main([str(explorer.index.dpath), "--out", str(out), "--sae", "x"]) == 0
    record = json.loads((out / "published.json").read_text())
    assert record["sae"] == {"content_hash": explorer.sae_hash, "source": "x"}
    assert publish.main([str(explorer.index.dpath), "--out", str(out)]) == 2  # not empty
    assert "is not empty" in capsys.readouterr().err
    assert publish.main([str(explorer.index.dpath)]) == 2  # neither --repo nor --out
