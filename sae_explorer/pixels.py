"""JPEGs to model input as tensor operations on the model's device: decoded by torchvision
(nvJPEG on a GPU), resized, cropped and normalised there, with the encoder's own preprocessing.

The steps are open_clip's, read off the encoder's transform (:func:`tensor_steps`): its
``Resize`` and ``CenterCrop`` run on uint8 ``[3, H, W]`` tensors as they run on PIL images
(torchvision implements both for tensors; bicubic with antialias), then ``ToTensor``'s scaling
and ``Normalize`` run on the whole batch (``_Preprocess.finish_planar``). Pixels differ from the
PIL path by rounding and by the two JPEG decoders' upsampling (mean absolute difference about
0.2 of 255 on Flickr photos); embeddings agree to cosine >= 0.999 (``tests/test_pixels.py``).

Which path decodes (:data:`DECODERS`): ``torch`` (this module; JPEGs only, other formats and
the JPEGs torchvision cannot read go through PIL), ``pil`` (worker processes, as for every
format), ``auto`` (torch on CUDA; PIL on a CPU, where PIL's resize is the faster: on the 2-core
dev box PIL decodes and resizes Flickr photos at ~490 img/s per core, torchvision at ~330).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")
"""The float type pixels reach the CLIP towers in (``auto``: fp16 on a GPU or MPS, fp32 on a
CPU); see ``ClipEncoder.at_precision``."""
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

Decoder = Literal["auto", "pil", "torch"]
DECODERS: tuple[str, ...] = ("auto", "pil", "torch")

JPEG_START = b"\xff\xd8\xff"
JPEG_END = b"\xff\xd9"

TensorStep = Callable[[torch.Tensor], torch.Tensor]


def resolve_decoder(decoder: str, device: torch.device | str) -> str:
    """``torch`` or ``pil`` for a setting of :data:`DECODERS` and the model's device."""
    if decoder not in DECODERS:
        raise ValueError(f"decode must be one of {DECODERS}, got {decoder!r}")
    if decoder == "auto":
        return "torch" if torch.device(device).type == "cuda" else "pil"
    return decoder


def is_whole_jpeg(data: bytes | memoryview) -> bool:
    """Whether ``data`` is a grey or colour (YCbCr/RGB) JPEG with its end marker, what the
    tensor path decodes. A truncated file goes to PIL, which refuses it as before (torchvision
    would decode its first half); so does a CMYK/YCCK one, whose colours nvJPEG is not asked
    to convert as PIL does."""
    if bytes(data[:3]) != JPEG_START or bytes(data[-2:]) != JPEG_END:
        return False
    return jpeg_components(data) in (1, 3)


SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers (baseline, progressive, lossless...); C4, C8 and CC are others."""


def jpeg_components(data: bytes | memoryview) -> int | None:
    """The colour components of a JPEG's frame (1 grey, 3 colour, 4 CMYK/YCCK), read from its
    start-of-frame header; None where the markers before it do not parse."""
    pos = 2  # after SOI
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte
            pos += 1
            continue
        length = int.from_bytes(bytes(data[pos + 2 : pos + 4]), "big")
        if marker in SOF_MARKERS:
            return data[pos + 9] if pos + 9 < len(data) else None
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        pos += 2 + length
    return None


def tensor_steps(pil_steps: Sequence[Callable] | None) -> list[TensorStep] | None:
    """The preprocessing steps before ``ToTensor`` as steps on uint8 ``[3, H, W]`` tensors, or
    None when one of them has no tensor form here (the PIL path then runs them)."""
    from torchvision.transforms import CenterCrop, Resize

    if pil_steps is None:
        return None
    steps: list[TensorStep] = []
    for step in pil_steps:
        if type(step) in (Resize, CenterCrop):
            steps.append(step)
        elif getattr(step, "mode", None) == "RGB" or getattr(step, "__name__", "") in (
            "_convert_to_rgb",
            "to_rgb",
        ):
            continue  # JPEGs are decoded to RGB
        else:
            return None
    return steps


def decode_jpegs(datas: Sequence[torch.Tensor], device: torch.device | str) -> list:
    """uint8 ``[3, H, W]`` RGB per encoded JPEG (1-D uint8 tensors) on ``device``, decoded in
    one batched call (nvJPEG on CUDA); None for each one torchvision cannot decode."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    device = torch.device(device)
    if device.type == "cuda":
        # torchvision allocates the outputs on this stream but decodes on its own, which does
        # not wait for this one: memory just freed here may still be read by queued kernels
        # (pytorch/vision#9606). Drained first, nothing queued can see the decode's writes.
        torch.cuda.current_stream(device).synchronize()
    try:
        return list(decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device))
    except RuntimeError:  # one bad file fails the batch: decode one by one
        decoded = []
        for data in datas:
            try:
                decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                decoded.append(None)
        return decoded


def resize_crop(images_3hw: Sequence[torch.Tensor], steps: Sequence[TensorStep]) -> torch.Tensor:
    """uint8 ``[n, 3, S, S]``: each image through ``steps`` (sizes differ before the crop)."""
    out = []
    for image in images_3hw:
        for step in steps:
            image = step(image)
        out.append(image)
    return torch.stack(out)
