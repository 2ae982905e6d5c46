"""Upload and text validation: bad files give a clear ValueError, odd modes become RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from _explorer_helpers import huge_png_header
from PIL import Image

from sae_explorer.images import MAX_PIXELS, MIN_SIDE, check_image, check_text


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
