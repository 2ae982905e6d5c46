"""The tensor image path (JPEGs decoded by torchvision, resized and cropped as tensors), the
towers' precision, and the overlapped loader: the GPU pipeline's pieces, run on the CPU."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _precompute_helpers import write_image, write_truncated_jpeg

from sae_explorer.corpus import load_corpus
from sae_explorer.encoder import load_encoder
from sae_explorer.index.build import Timer
from sae_explorer.index.embed import CorpusEmbedder
from sae_explorer.pixels import decode_jpegs, is_whole_jpeg, resize_crop, tensor_steps
from sae_explorer.precompute import PrecomputeConfig, main, precompute

N_PHOTOS = 12


@pytest.fixture(scope="module")
def vit():
    """ViT-B-32 with random weights: open_clip's real 224 px preprocessing, no download."""
    return load_encoder("ViT-B-32", device="cpu")


@pytest.fixture(scope="module")
def shapes_encoder():
    return load_encoder("builtin:shapes", device="cpu")


def _photos(shared_data_dpath: Path) -> list[Path]:
    flickr = sorted((shared_data_dpath / "flickr8k-1k" / "images").glob("*.jpg"))
    cifar = sorted((shared_data_dpath / "cifar10-test").rglob("*.jpg"))
    picked = flickr[:: max(1, len(flickr) // N_PHOTOS)][:N_PHOTOS] + cifar[:: len(cifar) // 4][:4]
    if len(picked) < N_PHOTOS:
        pytest.skip("too few photos in ../shared/data")
    return picked


def _tensor_path(encoder, fpaths: list[Path]) -> torch.Tensor:
    datas = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in fpaths]
    steps = tensor_steps(encoder.preprocess.pil_steps)
    assert steps is not None
    images = decode_jpegs(datas, "cpu")
    return encoder.preprocess.finish_planar(resize_crop(images, steps))


def test_tensor_preprocessing_matches_open_clip_on_real_photos(vit, shared_data_dpath):
    fpaths = _photos(shared_data_dpath)
    reference = torch.stack([vit.preprocess(vit.load_image(f)) for f in fpaths])
    ours = _tensor_path(vit, fpaths)
    assert ours.shape == reference.shape == (len(fpaths), 3, 224, 224)
    std = torch.tensor(vit.preprocess.tensor_steps[-1].std).view(1, 3, 1, 1)
    diff_255 = ((ours - reference) * std * 255).abs()  # back in 0..255 pixel units
    assert diff_255.mean() < 0.5, diff_255.mean()  # decoders' upsampling and rounding only
    assert diff_255.amax(dim=(1, 2, 3)).median() < 20
    cosine = F.cosine_similarity(vit.encode_pixels(ours), vit.encode_pixels(reference))
    assert cosine.min() >= 0.999, cosine


def test_truncated_jpeg_is_not_handed_to_torchvision(tmp_path):
    whole = write_image(tmp_path / "a.jpg", seed=1, size=(32, 32), fmt="JPEG").read_bytes()
    cut = write_truncated_jpeg(tmp_path / "b.jpg").read_bytes()
    png = write_image(tmp_path / "c.png", seed=1).read_bytes()
    assert is_whole_jpeg(whole) and not is_whole_jpeg(cut) and not is_whole_jpeg(png)


@pytest.mark.parametrize("progressive", [False, True])
def test_cmyk_jpegs_go_to_pil_grey_and_colour_ones_to_torch(progressive):
    """nvJPEG is not asked to convert CMYK as PIL does: such JPEGs are decoded by PIL."""
    import io

    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    kinds = {}
    for mode in ("RGB", "L", "CMYK"):
        buffer = io.BytesIO()
        rgb.convert(mode).save(buffer, "JPEG", progressive=progressive)
        kinds[mode] = is_whole_jpeg(memoryview(buffer.getvalue()))
    assert kinds == {"RGB": True, "L": True, "CMYK": False}


def test_undecodable_jpeg_is_none_and_the_rest_decode():
    good = torch.frombuffer(bytearray(_jpeg_bytes(seed=3)), dtype=torch.uint8)
    bad = torch.frombuffer(
        bytearray(b"\xff\xd8\xff" + b"\x00" * 50 + b"\xff\xd9"), dtype=torch.uint8
    )
    decoded = decode_jpegs([good, bad, good], "cpu")
    assert decoded[1] is None
    assert decoded[0].shape == (3, 20, 24) and torch.equal(decoded[0], decoded[2])


def _jpeg_bytes(seed: int) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


# --------------------------------------------------------------------------- precision
def _no_half(monkeypatch):
    """A torch whose CPU attention has no fp16 kernel (as older torch builds had none)."""
    real = F.scaled_dot_product_attention

    def attention(q, *args, **kwargs):
        if q.dtype == torch.float16:
            raise RuntimeError("\"baddbmm\" not implemented for 'Half'")
        return real(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", attention)


def test_fp16_is_refused_where_torch_cannot_run_it(shapes_encoder, monkeypatch, tmp_path):
    _no_half(monkeypatch)
    with pytest.raises(ValueError, match=r"precision 'fp16' is not available on cpu.*'Half'"):
        shapes_encoder.at_precision("fp16")
    with pytest.raises(ValueError, match="precision 'fp16' is not available on cpu"):
        load_encoder("builtin:shapes", device="cpu", precision="fp16")
    corpus = load_corpus("builtin:shapes?n=4")
    cfg = PrecomputeConfig(precision="fp16", names=False, n_workers=0)
    with pytest.raises(ValueError, match="use precision 'fp32' or 'bf16'"):
        CorpusEmbedder(shapes_encoder, corpus, cfg, Timer())
    assert shapes_encoder.precision == "fp32"  # bf16 still works on this torch
    assert shapes_encoder.at_precision("bf16").precision == "bf16"


def test_precision_flag_refusal_reaches_the_cli(monkeypatch, tmp_path, capsys):
    _no_half(monkeypatch)
    argv = ["--clip", "builtin:shapes", "--sae", "builtin:shapes", "--corpus"]
    argv += ["builtin:shapes?n=4", "--cache-dir", str(tmp_path), "--device", "cpu"]
    assert main([*argv, "--precision", "fp16", "--no-names"]) == 2
    assert "precision 'fp16' is not available on cpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match="precision must be one of"):
        PrecomputeConfig(precision="fp8")


def test_bf16_tower_is_a_copy_close_to_fp32(shapes_encoder):
    pixels = torch.rand(4, 3, 64, 64)
    x32 = shapes_encoder.encode_pixels(pixels)
    bf16 = shapes_encoder.at_precision("bf16")
    assert bf16.model is not shapes_encoder.model
    assert next(shapes_encoder.model.parameters()).dtype == torch.float32  # untouched
    assert F.cosine_similarity(bf16.encode_pixels(pixels), x32).min() > 0.99
    assert bf16.at_precision("bf16") is bf16


def test_a_lower_precision_copy_is_what_open_clip_builds_in_it(shapes_encoder):
    """Layer norms in fp32 as open_clip's own low-precision build has them (CUDA's layer norm
    refuses bf16 input with fp32 weights; the CPU computed it in bf16); and no weights widened
    from rounded ones under an fp32 name."""
    pixels = torch.rand(4, 3, 64, 64)
    copied = shapes_encoder.at_precision("bf16")
    built = load_encoder("builtin:shapes", device="cpu", precision="bf16")
    assert torch.equal(copied.encode_pixels(pixels), built.encode_pixels(pixels))
    assert torch.equal(copied.encode_texts(["a red circle"]), built.encode_texts(["a red circle"]))
    with pytest.raises(ValueError, match="holds them rounded to bf16; load it with precision"):
        built.at_precision("fp32")


# --------------------------------------------------------------------------- the loader
@pytest.fixture
def photo_folder(tmp_path, shared_data_dpath) -> Path:
    """Real photos, a PNG, a truncated JPEG and a JPEG whose body is garbage, mixed."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, fpath in enumerate(_photos(shared_data_dpath)[:9]):
        shutil.copy(fpath, folder / f"{i:02d}.jpg")
    write_image(folder / "04b.png", seed=5, size=(40, 30))
    write_truncated_jpeg(folder / "05b.jpg")
    (folder / "07b.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 64 + b"\xff\xd9")
    return folder


def _embed_all(encoder, corpus, **cfg_fields):
    cfg = PrecomputeConfig(chunk_size=4, batch_size=3, names=False, **cfg_fields)
    embedder = CorpusEmbedder(encoder, corpus, cfg, Timer())
    chunks = []
    try:
        for lo in range(0, len(corpus), cfg.chunk_size):
            chunks.append(embedder(range(lo, min(lo + cfg.chunk_size, len(corpus)))))
    finally:
        embedder.close()
    ok_pos = np.concatenate([c.ok_pos for c in chunks])
    skipped = [s["item_id"] for c in chunks for s in c.skipped]
    return ok_pos, torch.cat([c.x_nd for c in chunks]), skipped


def test_overlapped_loader_yields_every_item_once_in_order(shapes_encoder, photo_folder):
    corpus = load_corpus(photo_folder)
    broken = {"05b.jpg", "07b.jpg"}
    readable = [i for i, item in enumerate(corpus.items) if item.item_id not in broken]
    ok_pos, x_nd, skipped = _embed_all(
        shapes_encoder, corpus, decode="torch", overlap="on", n_workers=2
    )
    assert ok_pos.tolist() == readable  # each once, in corpus order
    assert skipped == ["05b.jpg", "07b.jpg"]  # listed, in order, as the PIL path lists them
    ref_pos, ref_x, ref_skipped = _embed_all(
        shapes_encoder, corpus, decode="torch", overlap="off", n_workers=0
    )
    assert ref_pos.tolist() == readable and ref_skipped == skipped
    assert torch.allclose(x_nd, ref_x, atol=1e-5)
    pil_pos, pil_x, pil_skipped = _embed_all(
        shapes_encoder, corpus, decode="pil", overlap="on", n_workers=2
    )
    assert pil_pos.tolist() == readable and pil_skipped == skipped
    assert F.cosine_similarity(x_nd, pil_x).min() >= 0.999


def test_precompute_with_the_device_pipeline_lists_corrupt_files(
    shapes_encoder, photo_folder, tmp_path
):
    from sae_explorer.checkpoints import load_sae

    sae = load_sae("builtin:shapes")
    corpus = load_corpus(photo_folder)
    cfg = PrecomputeConfig(
        chunk_size=4, batch_size=3, names=False, decode="torch", overlap="on", n_workers=2
    )
    index = precompute(shapes_encoder, sae, corpus, tmp_path / "cache", cfg)
    assert index.manifest["counts"]["n_skipped"] == 2
    assert [s["item_id"] for s in index.manifest["skipped"]] == ["05b.jpg", "07b.jpg"]
    assert "05b.jpg" in index.manifest["skipped"][0]["error"]
    assert index.n_items == len(corpus) - 2


def test_the_cache_key_names_the_precision_the_towers_run_in(shapes_encoder):
    low = shapes_encoder.at_precision("bf16")  # what "auto" runs in on an accelerator: not fp32
    auto, fp32 = PrecomputeConfig(), PrecomputeConfig(precision="fp32")
    assert auto.encoder_id(shapes_encoder) == fp32.encoder_id(shapes_encoder)  # keys as before
    assert auto.encoder_id(shapes_encoder) == shapes_encoder.cache_id
    assert auto.encoder_id(low) == f"{shapes_encoder.cache_id}@bf16"  # never an fp32 index's key
    assert PrecomputeConfig(precision="bf16").encoder_id(shapes_encoder).endswith("@bf16")
