"""Upload and text validation: bad files give a clear ValueError, odd modes become RGB."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from _explorer_helpers import huge_png_header
from PIL import Image

from sae_explorer.images import (
    MAX_DATA_URL_BYTES,
    MAX_PIXELS,
    MIN_SIDE,
    check_image,
    check_text,
    decode_data_url,
    resized_size,
)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_rgb_png_round_trips_unchanged(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    fpath = tmp_path / "a.png"
    Image.fromarray(x).save(fpath)
    checked = check_image(fpath)
    assert checked.image.mode == "RGB" and checked.image.size == (50, 40)
    assert np.array_equal(np.asarray(checked.image), x)
    assert checked.warnings == ()


def test_corrupt_file_is_refused_by_name(tmp_path):
    fpath = tmp_path / "notes.png"
    fpath.write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match=r"'notes\.png' is not an image"):
        check_image(fpath)


def test_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (256, 256), (200, 10, 10)).save(buf, format="JPEG")
    fpath = tmp_path / "cut.jpg"
    fpath.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        check_image(fpath)


@pytest.mark.parametrize("side", [20_000, 7_000])  # 400M pixels (past PIL's own bomb limit), 49M
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(ValueError, match=f"limit is {MAX_PIXELS:,}"):
        check_image(huge_png_header(side, side))


def test_one_pixel_image_passes_with_a_warning():
    checked = check_image(png_bytes(Image.new("RGB", (1, 1), (0, 0, 255))))
    assert checked.image.size == (1, 1)
    assert any("1x1 pixels" in w for w in checked.warnings)
    assert MIN_SIDE > 1


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    checked = check_image(png_bytes(rgba))
    assert checked.image.mode == "RGB"
    assert checked.image.getpixel((5, 5)) == (255, 255, 255)
    assert checked.image.getpixel((0, 0)) == (255, 0, 0)
    assert any("transparent" in w for w in checked.warnings)


def test_cmyk_jpeg_is_converted():
    buf = io.BytesIO()
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(buf, format="JPEG")
    checked = check_image(buf.getvalue())
    r, g, b = checked.image.getpixel((16, 16))
    assert checked.image.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16_bit_greyscale_uses_its_full_range():
    x = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    checked = check_image(png_bytes(Image.fromarray(x)))
    y = np.asarray(checked.image)
    assert checked.image.mode == "RGB"
    assert y.min() == 0 and y.max() == 255
    assert any("high-bit-depth" in w for w in checked.warnings)


def test_float_array_is_scaled_to_8_bit():
    checked = check_image(np.full((20, 20, 3), 0.5, dtype=np.float32))
    assert checked.image.getpixel((3, 3)) == (127, 127, 127)


def test_missing_image_is_an_error():
    with pytest.raises(ValueError, match="no image given"):
        check_image(None)


@pytest.mark.parametrize("text", ["", "   ", None, "\x00"])
def test_empty_text_is_refused(text):
    with pytest.raises(ValueError, match="the text is empty"):
        check_text(text)


def test_long_text_is_cut_with_a_warning():
    checked = check_text("a" * 10_000)
    assert len(checked.text) == 2_000
    assert "10,000 characters" in checked.warnings[0]
    assert check_text("  red circle  ") == ("red circle", ())


# ----------------------------------------------------------------- bounded cost per request
def test_a_thin_image_is_refused_by_its_size_after_clips_resize():
    """A 1x100000 PNG is a few hundred bytes and 100,000 pixels, far under the decode limit;
    CLIP's resize scales its short side up to the model size, so it would become 224 x
    22,400,000 pixels. It is refused from its header, before decoding."""
    thin = png_bytes(Image.new("RGB", (1, 100_000), (255, 0, 0)))
    assert len(thin) < 1_000
    assert check_image(thin).image.size == (1, 100_000)  # without a model size: fine
    with pytest.raises(ValueError, match=r"224x22400000 = 5,017,600,000 pixels"):
        check_image(thin, input_px=224)
    panorama = png_bytes(Image.new("RGB", (3_000, 100), (0, 0, 255)))  # 30:1 still passes
    assert check_image(panorama, input_px=224).image.size == (3_000, 100)
    assert resized_size((3_000, 100), 224) == (6_720, 224)


def test_a_large_jpeg_is_decoded_at_a_reduced_size():
    """A 4000x3000 JPEG decodes at a power-of-two fraction of its size whose short side still
    covers twice the model size, not at 12M pixels; what CLIP then sees barely changes."""
    rng = np.random.default_rng(0)
    x = np.kron(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), np.ones((100, 100, 1), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format="JPEG", quality=95)
    full = check_image(buf.getvalue()).image
    reduced = check_image(buf.getvalue(), input_px=224).image
    assert full.size == (4_000, 3_000)
    assert reduced.size == (1_000, 750)  # 1/4 scale: short side 750 >= 2 x 224
    small = [np.asarray(im.resize((299, 224), Image.BICUBIC), np.float64) for im in (full, reduced)]
    assert np.abs(small[0] - small[1]).mean() < 3.0  # of 255
    png = png_bytes(Image.new("RGB", (1_200, 900)))  # other formats decode in full
    assert check_image(png, input_px=224).image.size == (1_200, 900)


def test_a_data_url_is_size_checked_before_decoding(monkeypatch):
    huge = huge_png_header(12_000, 12_000)
    url = "data:image/png;base64," + base64.b64encode(huge).decode()
    assert decode_data_url(url) == huge
    with pytest.raises(ValueError, match="limit is 40,000,000"):  # header only, never decoded
        check_image(decode_data_url(url))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded an oversized data: URL")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    big = "data:image/png;base64," + "A" * (4 * MAX_DATA_URL_BYTES // 3 + 8)
    with pytest.raises(ValueError, match=f"the limit is {MAX_DATA_URL_BYTES:,}"):
        decode_data_url(big)
    with pytest.raises(ValueError, match="base64 data: URL"):
        decode_data_url("data:image/png,rawbytes")


def test_a_huge_text_costs_no_more_than_a_short_one():
    """A 50M-character text is cut before anything copies it whole: the check allocates
    about what a 2,000-character text needs, not 50 MB."""
    import tracemalloc

    text = "a red circle " * 4_000_000
    tracemalloc.start()
    checked = check_text(text)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(checked.text) == 2_000 and "52,000,000 characters" in checked.warnings[0]
    assert peak < 200_000
