"""Validation of user uploads and typed texts before they reach the encoder.

Web uploads are untrusted: files may be truncated, not images at all, decompression bombs, or in
modes CLIP's preprocessing does not expect (RGBA, CMYK, 16-bit). Everything here turns such input
into a plain RGB image or a clean string, or raises ``ValueError`` saying what was wrong and what
is allowed, so the app can show the message and keep serving. Recoverable oddities (a 1x1 image,
an over-long text) pass with a note in ``warnings`` for the app to surface.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings as _warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
"""Refuse images above this many pixels (e.g. 20000x20000) before decoding them."""
MAX_RESIZED_PIXELS = 4_000_000
"""Refuse images that CLIP's resize would make larger than this. The resize scales the *short*
side to the model's input size, so a thin image grows: a 1x100000 PNG (a few hundred bytes)
becomes 224x22,400,000. 4M pixels allows an 80:1 panorama at 224 px."""
DRAFT_FACTOR = 2
"""A JPEG is decoded at a reduced size (a power-of-two scale chosen by the decoder) whose short
side is still at least this many times the model's input size; smaller JPEGs decode in full."""
MAX_DATA_URL_BYTES = 20 * 1024 * 1024
"""The largest image a ``data:`` URL may carry (decoded bytes), checked before decoding."""
MIN_SIDE = 16
"""Smaller images are accepted, with a warning that CLIP will see a blown-up blur."""
MAX_TEXT_CHARS = 2_000
"""Texts are cut here (CLIP reads at most 77 tokens anyway); longer input gets a warning."""


class CheckedImage(NamedTuple):
    image: Image.Image  # RGB, fully decoded
    warnings: tuple[str, ...]


class CheckedText(NamedTuple):
    text: str
    warnings: tuple[str, ...]


def check_image(
    source: str | Path | bytes | Image.Image | np.ndarray | None,
    max_pixels: int = MAX_PIXELS,
    input_px: int | None = None,
    max_resized_pixels: int = MAX_RESIZED_PIXELS,
) -> CheckedImage:
    """Open, size-check and fully decode an uploaded image into RGB.

    ``source`` is a file path, raw bytes, a PIL image or an ``[H, W(, C)]`` array. The pixel
    limit is checked from the header, before any pixel data is decoded. ``input_px``: the
    short side CLIP's preprocessing resizes to (:attr:`ClipEncoder.input_px`); when given, the
    image is also refused when that resize would give more than ``max_resized_pixels``, and a
    large JPEG is decoded at a reduced size (see :data:`DRAFT_FACTOR`), all before decoding.
    """
    if source is None:
        raise ValueError("no image given: upload an image (PNG, JPEG, WebP, ...)")
    if isinstance(source, np.ndarray):
        source = _array_to_image(source)
    notes: list[str] = []
    if isinstance(source, Image.Image):
        image = source
        _check_pixels(image.size, max_pixels)
        _check_resized(image.size, input_px, max_resized_pixels)
    else:
        image = _open_untrusted(source, max_pixels, input_px, max_resized_pixels)
    if image.size[0] < 1 or image.size[1] < 1:
        raise ValueError(f"the image is empty ({image.size[0]}x{image.size[1]} pixels)")
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the user their upload
        notes.append("ignored a broken EXIF orientation tag")
    rgb, mode_note = to_rgb(image), conversion_note(image)
    if mode_note:
        notes.append(mode_note)
    if min(rgb.size) < MIN_SIDE:
        notes.append(
            f"the image is only {rgb.size[0]}x{rgb.size[1]} pixels; CLIP sees it scaled up to a "
            "blur, so results say little"
        )
    return CheckedImage(rgb, tuple(notes))


def _open_untrusted(
    source: str | Path | bytes, max_pixels: int, input_px: int | None, max_resized_pixels: int
) -> Image.Image:
    name = "the upload" if isinstance(source, bytes) else f"{Path(source).name!r}"
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    with _warnings.catch_warnings():
        # PIL warns between 89M and 179M pixels and raises above; our lower limit is the one
        # users see, and PIL's error is turned into the same message.
        _warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(fp)
        except Image.DecompressionBombError:
            raise ValueError(
                f"{name} has more pixels than PIL will safely decode; the limit is "
                f"{max_pixels:,} pixels. Resize it (CLIP sees 224x224 anyway) and upload again"
            ) from None
        except UnidentifiedImageError:
            raise ValueError(
                f"{name} is not an image PIL can read; upload a PNG, JPEG, WebP, GIF, BMP or TIFF"
            ) from None
        except (OSError, SyntaxError) as e:
            raise ValueError(
                f"{name} is truncated or corrupt ({e}); upload the file again"
            ) from None
        _check_pixels(image.size, max_pixels)
        _check_resized(image.size, input_px, max_resized_pixels)
        if input_px is not None and image.format == "JPEG":
            image.draft("RGB", draft_size(image.size, DRAFT_FACTOR * input_px))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(
                f"{name} is truncated or corrupt ({e}); upload the file again"
            ) from None
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    n_pixels = size[0] * size[1]
    if n_pixels > max_pixels:
        raise ValueError(
            f"the image is {size[0]}x{size[1]} = {n_pixels:,} pixels; the limit is {max_pixels:,}. "
            "Resize it (CLIP sees 224x224 anyway) and upload again"
        )


def resized_size(size: tuple[int, int], input_px: int) -> tuple[int, int]:
    """``(width, height)`` after CLIP's resize, which scales the short side to ``input_px``
    (up or down) and keeps the aspect ratio; the centre crop comes after it."""
    w, h = size
    scale = input_px / max(min(w, h), 1)
    return max(round(w * scale), 1), max(round(h * scale), 1)


def draft_size(size: tuple[int, int], short_px: int) -> tuple[int, int]:
    """The smallest size to ask a reduced-size decoder for: the short side ``short_px``, never
    more than the image itself."""
    w, h = resized_size(size, short_px)
    return min(w, size[0]), min(h, size[1])


def _check_resized(size: tuple[int, int], input_px: int | None, max_resized_pixels: int) -> None:
    if input_px is None:
        return
    w, h = resized_size(size, input_px)
    if w * h > max_resized_pixels:
        raise ValueError(
            f"the image is {size[0]}x{size[1]} pixels; CLIP scales its short side to {input_px}, "
            f"which would make it {w}x{h} = {w * h:,} pixels (the limit is "
            f"{max_resized_pixels:,}). Crop it closer to a square (at most "
            f"{max_resized_pixels // input_px // input_px}:1) and upload again"
        )


def decode_data_url(url: str, max_bytes: int = MAX_DATA_URL_BYTES) -> bytes:
    """The bytes of a base64 ``data:`` URL, refused by its length before anything is decoded
    (a data URL is how API clients may send an image inline)."""
    header, sep, payload = url.partition(",")
    if not header.startswith("data:") or not sep or not header.endswith(";base64"):
        raise ValueError("an inline image must be a base64 data: URL (data:image/png;base64,...)")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:
        raise ValueError(
            f"the inline image carries about {len(payload) * 3 // 4:,} bytes; the limit is "
            f"{max_bytes:,}. Upload a smaller file"
        )
    try:
        return base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise ValueError("the inline image's base64 data is damaged; upload the file") from None


def _array_to_image(x: np.ndarray) -> Image.Image:
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4]; got {x.shape}")
    if x.dtype != np.uint8:
        x_f = np.nan_to_num(x.astype(np.float64))
        scale = 255.0 if x_f.max(initial=0.0) <= 1.0 else 255.0 / max(x_f.max(), 1.0)
        x = np.clip(x_f * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(x.squeeze(-1) if x.ndim == 3 and x.shape[2] == 1 else x)


HIGH_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "RGBa", "La", "PA"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, the one conversion every image path uses (uploads, corpus
    files, the encoder), so an image gets the same embedding wherever it comes from.

    Transparency is composited on white (what a viewer shows); 16-bit and float images are scaled
    by their nominal range (not clipped, not contrast-stretched); CMYK/palette/L go through PIL.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in HIGH_BIT_MODES:
        a = np.nan_to_num(np.asarray(image, dtype=np.float64))
        if mode.startswith("I;16"):
            top = 65535.0
        elif mode == "I":
            top = 65535.0 if a.max(initial=0) > 255 else 255.0
        else:
            top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        a8 = np.clip(np.rint(a / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, mode="L").convert("RGB")
    if mode == "P":
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def conversion_note(image: Image.Image) -> str | None:
    """What :func:`to_rgb` changes that a user may want to know about, or None."""
    mode = image.mode
    if mode in HIGH_BIT_MODES:
        return f"converted a high-bit-depth ({mode}) image to 8-bit RGB"
    if mode in ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return "composited a transparent image on white"
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return f"converted a {mode} image to RGB"
    return None


def check_text(text: str | None, max_chars: int = MAX_TEXT_CHARS) -> CheckedText:
    """Strip a text query, refuse an empty one and cut an over-long one (with a warning).

    The text is cut to a bounded head before anything copies it whole, so a huge text costs
    no more than a short one."""
    n_chars = len(text or "")
    text = (text or "")[: 4 * max_chars + 64].replace("\x00", "").strip()
    if not text:
        raise ValueError("the text is empty; type a word or sentence to inspect")
    if len(text) > max_chars:
        note = (
            f"the text has {n_chars:,} characters; only the first {max_chars:,} are used "
            "(CLIP reads about 77 tokens in any case)"
        )
        return CheckedText(text[:max_chars], (note,))
    return CheckedText(text, ())
