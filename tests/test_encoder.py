"""The CLIP encoder wrapper on the world's tiny architecture (random init: no downloads)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sae_explorer import SAE, SAEConfig
from sae_explorer.encoder import (
    ClipEncoder,
    ModelDownloadError,
    load_encoder,
    pick_device,
)
from sae_explorer.images import check_image, to_rgb
from sae_explorer.worlds import shapes
from sae_explorer.worlds.train_shapes import create_world_clip, save_clip


@pytest.fixture(scope="module")
def enc() -> ClipEncoder:
    return load_encoder(shapes.CLIP_ARCH, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    return [it.image for it in shapes.make_items(7, seed=3)]


def test_random_init_is_reproducible_and_described(enc: ClipEncoder) -> None:
    again = load_encoder(shapes.CLIP_ARCH, device="cpu")
    texts = ["a small red circle on a white background", "a star"]
    torch.testing.assert_close(enc.encode_texts(texts), again.encode_texts(texts), rtol=0, atol=0)
    assert enc.model_id == f"{shapes.CLIP_ARCH}/random-init"
    assert enc.embed_dim == open_clip.get_model_config(shapes.CLIP_ARCH)["embed_dim"]
    assert enc.device == torch.device("cpu")


def test_embeddings_shapes_dtype_and_normalize_flag(enc, images) -> None:
    raw = enc.encode_images(images)
    unit = enc.encode_images(images, normalize=True)
    assert raw.shape == (len(images), enc.embed_dim) and raw.dtype == torch.float32
    assert raw.device.type == "cpu"
    norms = raw.norm(dim=1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=1e-3)  # raw means unnormalised
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(len(images)))
    torch.testing.assert_close(unit, raw / norms[:, None])
    texts = ["a large blue star on a black background", "something green", ""]
    t_raw = enc.encode_texts(texts)
    torch.testing.assert_close(
        enc.encode_texts(texts, normalize=True), t_raw / t_raw.norm(dim=1, keepdim=True)
    )
    assert enc.encode_texts([]).shape == (0, enc.embed_dim)
    assert enc.encode_images([]).shape == (0, enc.embed_dim)


def test_batching_does_not_change_results(enc, images) -> None:
    whole = enc.encode_images(images, batch_size=64)
    torch.testing.assert_close(enc.encode_images(images, batch_size=3), whole, atol=1e-5, rtol=1e-5)
    pixels = torch.stack([enc.preprocess(im) for im in images])
    torch.testing.assert_close(enc.encode_pixels(pixels), whole, atol=1e-5, rtol=1e-5)
    texts = [it.caption for it in shapes.make_items(9, seed=4)]
    torch.testing.assert_close(
        enc.encode_texts(texts, batch_size=2), enc.encode_texts(texts), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="batch_size"):
        enc.encode_texts(texts, batch_size=0)
    with pytest.raises(ValueError, match="sequence of strings"):
        enc.encode_texts("a circle")
    with pytest.raises(ValueError, match=r"\[n, 3, H, W\]"):
        enc.encode_pixels(pixels[0])


def test_paths_and_images_give_the_same_embeddings(enc, images, tmp_path) -> None:
    fpaths = []
    for i, im in enumerate(images[:3]):
        fpath = tmp_path / f"im{i}.png"
        im.save(fpath)
        fpaths.append(fpath)
    torch.testing.assert_close(
        enc.encode_images([str(f) for f in fpaths]), enc.encode_images(images[:3])
    )
    torch.testing.assert_close(enc.encode_images(fpaths), enc.encode_images(images[:3]))


def test_preprocess_is_picklable_and_matches_training_pixels(enc, images) -> None:
    from sae_explorer.worlds.quality import eval_transform

    clone = pickle.loads(pickle.dumps(enc.preprocess))
    torch.testing.assert_close(clone(images[0]), enc.preprocess(images[0]))
    size = enc.model.visual.image_size
    assert enc.preprocess(images[0]).shape == (3, *size)
    # the world trainer builds its pixels with this transform; it must be the encoder's
    rgba = images[1].convert("RGBA")
    torch.testing.assert_close(eval_transform(enc.model)(images[1]), enc.preprocess(rgba))


@pytest.mark.parametrize("model", ["world", "ViT-B-32"])
def test_batched_preprocess_split_is_bit_identical(enc, model) -> None:
    """Precompute's decoding threads run only the PIL steps and finish whole batches with the
    tensor steps; every pixel must equal the per-image transform's, for any size and mode."""
    from sae_explorer.encoder import _Preprocess

    pre = enc.preprocess
    if model != "world":
        pre = _Preprocess(open_clip.create_model_and_transforms(model)[2])
    assert pre.splits
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        for (h, w), mode in [
            ((32, 32), "RGB"),
            ((200, 500), "RGBA"),
            ((333, 17), "L"),
            ((64, 80), "P"),
        ]
    ]
    batch = pre.finish(np.stack([pre.to_array(im) for im in images]))
    assert torch.equal(batch, torch.stack([pre(im) for im in images]))


def test_every_image_mode_becomes_rgb(enc) -> None:
    rgb = Image.new("RGB", (40, 30), (200, 30, 60))
    rgba = Image.new("RGBA", (40, 30), (200, 30, 60, 0))  # fully transparent -> white
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    i16 = Image.fromarray(np.full((30, 40), 65535, dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert to_rgb(i16).getpixel((0, 0)) == (255, 255, 255)
    mid16 = Image.fromarray(np.full((3, 3), 32768, dtype=np.uint16))
    assert to_rgb(mid16).getpixel((1, 1)) == (128, 128, 128)
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in CMYK
    assert to_rgb(cmyk).getpixel((0, 0)) == (255, 0, 0)
    gray = Image.new("L", (40, 30), 77)
    assert to_rgb(gray).getpixel((5, 5)) == (77, 77, 77)
    palette = rgb.convert("P")
    assert to_rgb(palette).getpixel((0, 0)) == rgb.convert("P").convert("RGB").getpixel((0, 0))
    floats = Image.fromarray(np.full((3, 3), 0.5, dtype=np.float32))
    assert to_rgb(floats).getpixel((0, 0)) == (128, 128, 128)
    modes = [rgb, rgba, i16, cmyk, gray, palette, rgb.convert("1"), rgb.convert("LA"), floats]
    for im in modes:
        assert enc.load_image(im).mode == "RGB"
    x = enc.encode_images(modes)
    assert x.shape == (len(modes), enc.embed_dim) and torch.isfinite(x).all()
    # the same picture in L and in RGB encodes identically
    torch.testing.assert_close(x[4], enc.encode_images([gray.convert("RGB")])[0])


def test_upload_corpus_and_encoder_paths_agree_on_odd_modes(enc, tmp_path) -> None:
    """A 16-bit or transparent PNG gets the same pixels (so the same embedding) whether it is
    uploaded, read from a corpus folder, or passed to the encoder."""
    from sae_explorer.corpus import load_corpus, load_item_image

    ramp16 = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    clear = np.zeros((32, 32, 4), dtype=np.uint8)
    clear[..., 2] = 255  # blue, fully transparent
    (tmp_path / "imgs").mkdir()
    Image.fromarray(ramp16).save(tmp_path / "imgs" / "a16.png")
    Image.fromarray(clear, mode="RGBA").save(tmp_path / "imgs" / "b_clear.png")
    corpus = load_corpus(str(tmp_path / "imgs"))
    for item in corpus.items:
        from_corpus = np.asarray(load_item_image(item))
        from_upload = np.asarray(check_image(item.source).image)
        from_encoder = np.asarray(enc.load_image(item.source))
        np.testing.assert_array_equal(from_corpus, from_upload)
        np.testing.assert_array_equal(from_corpus, from_encoder)
    by_name = {Path(i.source).name: np.asarray(load_item_image(i)) for i in corpus.items}
    assert by_name["b_clear.png"].min() == 255  # transparent -> white, not its hidden blue
    assert by_name["a16.png"].max() == 255 and by_name["a16.png"].min() == 0


def test_unreadable_files_raise_value_error_naming_them(enc, tmp_path) -> None:
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is text, not a PNG")
    with pytest.raises(ValueError, match=r"not-an-image\.png"):
        enc.encode_images([bad])
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "ok.png")
    truncated.write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    with pytest.raises(ValueError, match=r"truncated\.png"):
        enc.load_image(truncated)
    with pytest.raises(ValueError, match=r"missing\.jpg"):
        enc.load_image(tmp_path / "missing.jpg")


def test_check_sae_names_both_widths(enc) -> None:
    enc.check_sae(SAE(SAEConfig(n_inputs=enc.embed_dim, n_latents=32, k=4)))
    with pytest.raises(ValueError, match=rf"SAE expects 768-d inputs, .* gives {enc.embed_dim}-d"):
        enc.check_sae(SAE(SAEConfig(n_inputs=768, n_latents=32, k=4)))


def test_arch_plus_local_weights_file(tmp_path) -> None:
    model = create_world_clip(seed=5)
    fpath = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, fpath)
    enc = load_encoder(shapes.CLIP_ARCH, pretrained=str(fpath), device="cpu")
    assert str(fpath) in enc.model_id
    tokens = open_clip.get_tokenizer(shapes.CLIP_ARCH)(["a red star"])
    with torch.no_grad():
        expected = model.encode_text(tokens)
    torch.testing.assert_close(enc.encode_texts(["a red star"]), expected)
    # Same path, retrained weights: the name stays, the cache id must change.
    retrained = create_world_clip(seed=6)
    save_file({k: v.contiguous() for k, v in retrained.state_dict().items()}, fpath)
    enc2 = load_encoder(shapes.CLIP_ARCH, pretrained=str(fpath), device="cpu")
    assert enc2.model_id == enc.model_id and enc2.cache_id != enc.cache_id


def test_local_dir_written_by_save_clip(tmp_path) -> None:
    model = create_world_clip(seed=6).eval()
    cfg = open_clip.get_model_config(shapes.CLIP_ARCH)
    save_clip(model, cfg, tmp_path / "clip", dtype=torch.float32)
    enc = load_encoder(f"local-dir:{tmp_path / 'clip'}", device="cpu")
    assert enc.model_id == f"local-dir:{(tmp_path / 'clip').resolve()}"
    item = shapes.make_item(0, seed=9)
    with torch.no_grad():
        expected = model.encode_image(enc.preprocess(item.image)[None])
    torch.testing.assert_close(enc.encode_images([item.image]), expected)


def test_failed_hub_download_names_the_offline_world(monkeypatch) -> None:
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs.get("repo_id"))
        raise OSError("We couldn't connect to 'https://huggingface.co' (offline)")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", offline)
    with pytest.raises(ModelDownloadError, match=r"builtin:shapes") as info:
        load_encoder("hf-hub:timm/ViT-B-32-some-repo", device="cpu")
    assert "Hugging Face Hub" in str(info.value) and "hf-hub:timm/ViT-B-32-some-repo" in str(
        info.value
    )
    with pytest.raises(ModelDownloadError, match=r"ViT-B-32/openai.*builtin:shapes"):
        load_encoder("ViT-B-32", pretrained="openai", device="cpu")
    assert calls  # the real open_clip download path was taken, and failed


def test_user_mistakes_are_value_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown CLIP model 'ViT-Nope-1'.*builtin:shapes"):
        load_encoder("ViT-Nope-1", device="cpu")
    with pytest.raises(ValueError, match=r"known tags: .*laion2b"):
        load_encoder("ViT-B-32", pretrained="not-a-tag", device="cpu")
    with pytest.raises(ValueError, match="nowhere"):
        load_encoder(f"local-dir:{tmp_path / 'nowhere'}", device="cpu")
    with pytest.raises(ValueError, match=r"unknown built-in world 'circles'.*builtin:shapes"):
        load_encoder("builtin:circles", device="cpu")


def test_device_preference(monkeypatch) -> None:
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
