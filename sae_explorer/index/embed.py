"""Embedders: where a build gets each chunk's CLIP embeddings (an :data:`~.build.Embedder`).

:class:`CorpusEmbedder` runs CLIP over corpus items, with DataLoader worker processes reading
and decoding images ahead (:class:`ImageDecoder`, :func:`collate_images`) and, where overlap is
on, the next chunk encoded in a thread while the build's SAE indexes this one;
:class:`ArrayEmbedder` hands out rows of embeddings computed elsewhere.

The pipeline per image batch: workers read each image's bytes. With the ``pil`` decoder they
decode and run the PIL steps of preprocessing (uint8 ``[n, H, W, 3]``, pinned on a GPU); with
``torch`` a JPEG's bytes travel as they are and the main side decodes the batch on the model's
device (nvJPEG on CUDA) and resizes and crops it there (:mod:`sae_explorer.pixels`), other
formats and the JPEGs torchvision cannot read still going through PIL. The batch is then scaled
and normalised on the device, in corpus order, and the tower runs in the configured precision.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import torch

from sae_explorer.corpus import CorpusItem, image_from_bytes, load_item_image, read_item_bytes
from sae_explorer.index.build import ChunkEmbeddings, Timer
from sae_explorer.pixels import (
    decode_jpegs,
    is_whole_jpeg,
    resize_crop,
    resolve_decoder,
    tensor_steps,
)

if TYPE_CHECKING:
    from sae_explorer.corpus import Corpus
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.precompute import PrecomputeConfig

log = logging.getLogger(__name__)

Overlap = Literal["auto", "on", "off"]
OVERLAPS: tuple[str, ...] = ("auto", "on", "off")
"""Whether the next chunk is embedded while the SAE indexes this one (``PrecomputeConfig.overlap``):
``auto`` on an accelerator, off on a CPU (where both stages share the same cores)."""


def device_batch_size(batch_size: int, device: torch.device | str) -> int:
    """``batch_size`` images per tower batch, or for 0 one sized to the device: 256 on a GPU
    with 16 GiB or more (ViT-L-14 in fp16 peaks near 3 GiB there), 64 elsewhere."""
    if batch_size > 0:
        return batch_size
    device = torch.device(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return 256 if total >= 16 << 30 else 64
    return 64


def resolve_overlap(overlap: str, device: torch.device | str) -> bool:
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {OVERLAPS}, got {overlap!r}")
    if overlap == "auto":
        return torch.device(device).type != "cpu"
    return overlap == "on"


class DecodedBatch(NamedTuple):
    """A batch of images as the reading workers hand it over."""

    ok_pos: list[int]  # corpus positions the PIL steps decoded, in order
    pixels: torch.Tensor | None  # uint8 [n, H, W, 3] (PIL steps only) or float [n, 3, H, W]
    errors: list[tuple[int, dict]]  # (position, {"item_id", "source", "error"}) per failure
    jpeg_pos: Sequence[int] = ()  # positions whose JPEG bytes travel undecoded
    jpeg_bytes: torch.Tensor | None = None  # uint8: those files' bytes, one after the other
    jpeg_ends: Sequence[int] = ()  # where each file's bytes end in jpeg_bytes


class ImageBatch(NamedTuple):
    """A batch of images, encoded."""

    ok_pos: list[int]
    x_bd: torch.Tensor  # float [n_ok, d]
    errors: list[dict]


class DevicePixels(NamedTuple):
    """A batch ready for the tower: pixels on the device, rows in corpus order."""

    ok_pos: list[int]
    pixels_n3hw: torch.Tensor | None  # float [n_ok, 3, S, S] on the model's device
    errors: list[dict]


class ArrayEmbedder:
    """Rows of precomputed CLIP embeddings ``x_nd`` [n, d]: nothing to encode, nothing skipped."""

    def __init__(self, x_nd: np.ndarray) -> None:
        self.x_nd = x_nd

    def __call__(self, positions: range) -> ChunkEmbeddings:
        rows = np.asarray(self.x_nd[positions.start : positions.stop], dtype=np.float32)
        return ChunkEmbeddings(
            np.arange(positions.start, positions.stop), torch.from_numpy(rows), []
        )


class CorpusEmbedder:
    """CLIP embeddings of corpus items, chunk by chunk.

    Images are read (and with the ``pil`` decoder decoded) by DataLoader worker *processes*
    that run ahead across chunks: threads could not keep a GPU fed (on an H100, 4-16 decoding
    threads gave ViT-B-32 9-19% of its bare speed). Workers run no torch op but the batch's
    stacking; the main side finishes whole batches on the model's device. With overlap on, the
    chunk after the one just returned is embedded in a thread (on its own CUDA stream) while
    the caller indexes this one, so the slower of the tower and the SAE sets the pace.
    """

    def __init__(self, encoder: ClipEncoder, corpus: Corpus, cfg: PrecomputeConfig, timer: Timer):
        self.encoder = encoder.at_precision(cfg.precision)
        self.corpus, self.cfg, self.timer = corpus, cfg, timer
        device = self.encoder.device
        self.batch_size = device_batch_size(cfg.batch_size, device)
        self.jpeg_steps = _jpeg_steps(self.encoder, resolve_decoder(cfg.decode, device), cfg)
        self._stream: Iterator = iter(())
        self._planned: deque[tuple[int, int, int]] = deque()  # (start, stop, n_batches)
        self._ahead: tuple[range, Future] | None = None
        self._pool = (
            ThreadPoolExecutor(1, "embed-ahead") if resolve_overlap(cfg.overlap, device) else None
        )
        cuda = torch.device(device).type == "cuda"
        self._side_stream = torch.cuda.Stream(device) if cuda and self._pool else None

    def close(self) -> None:
        self._drop_ahead()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._stream = iter(())  # the DataLoader iterator shuts its workers down when dropped

    def __call__(self, positions: range) -> ChunkEmbeddings:
        if self._ahead is not None and self._ahead[0] == positions:
            t0 = time.perf_counter()
            chunk = self._ahead[1].result()
            self.timer.add("embed_wait_s", time.perf_counter() - t0)
            self._ahead = None
        else:
            self._drop_ahead()
            chunk = self._embed(positions)
        following = range(
            positions.stop, min(positions.stop + self.cfg.chunk_size, len(self.corpus))
        )
        if self._pool is not None and len(following):
            self._ahead = (following, self._pool.submit(self._embed_aside, following))
        return chunk

    def _drop_ahead(self) -> None:
        """Wait for a chunk embedded ahead that nobody will ask for, and forget it (its error
        too: the caller asked for another chunk, or is shutting down)."""
        if self._ahead is not None:
            future, self._ahead = self._ahead[1], None
            if not future.cancel():
                future.exception()
            self._stream, self._planned = iter(()), deque()

    def _embed_aside(self, positions: range) -> ChunkEmbeddings:
        if self._side_stream is None:
            return self._embed(positions)
        with torch.cuda.stream(self._side_stream):
            return self._embed(positions)

    def _embed(self, positions: range) -> ChunkEmbeddings:
        items = self.corpus.items
        text_pos = [p for p in positions if items[p].modality == "text"]
        embedded: dict[int, torch.Tensor] = {}
        skipped: list[dict] = []
        for pos_b, x_bd, errors in self._image_batches(positions):
            embedded.update(zip(pos_b, x_bd))
            skipped.extend(errors)
        if text_pos:
            t0 = time.perf_counter()
            texts = [items[p].source for p in text_pos]
            x_nd = self.encoder.encode_texts(texts, batch_size=4 * self.batch_size)
            embedded.update(zip(text_pos, x_nd))
            self.timer.add("clip_text_s", time.perf_counter() - t0)
        ok_pos = np.array([p for p in positions if p in embedded], dtype=np.int64)
        if len(ok_pos) == 0:
            return ChunkEmbeddings(ok_pos, torch.zeros(0, self.encoder.embed_dim), skipped)
        return ChunkEmbeddings(ok_pos, torch.stack([embedded[p] for p in ok_pos]).float(), skipped)

    def _open_stream(self, positions: range) -> None:
        """Decode every image from ``positions`` to the end of the corpus, in chunks of
        ``positions``' length and then ``chunk_size``, batch by batch in order."""
        items, bs = self.corpus.items, self.batch_size
        bounds = [positions.start, positions.stop]
        bounds += range(positions.stop + self.cfg.chunk_size, len(items), self.cfg.chunk_size)
        bounds = sorted({min(b, len(items)) for b in bounds} | {len(items)})
        batches, self._planned = [], deque()
        for lo, hi in itertools.pairwise(bounds):
            image_pos = [p for p in range(lo, hi) if items[p].modality == "image"]
            chunk_batches = [image_pos[s : s + bs] for s in range(0, len(image_pos), bs)]
            batches += chunk_batches
            self._planned.append((lo, hi, len(chunk_batches)))
        self._stream = iter(())
        if batches:
            from torch.utils.data import DataLoader

            workers = min(self.cfg.n_workers, os.cpu_count() or 1)  # more only thrash
            decoder = ImageDecoder(items, self.encoder.preprocess, self.jpeg_steps is not None)
            loader = DataLoader(
                decoder,
                batch_sampler=batches,
                num_workers=workers,
                collate_fn=collate_images,
                prefetch_factor=4 if workers else None,
                pin_memory=torch.device(self.encoder.device).type == "cuda",
            )
            self._stream = iter(loader)

    def _image_batches(self, positions: range) -> Iterator[ImageBatch]:
        """Encoded image batches of the chunk ``positions``; the workers decode ahead."""
        if not self._planned or self._planned[0][:2] != (positions.start, positions.stop):
            self._open_stream(positions)  # first call, or not the chunk planned next
        for _ in range(self._planned.popleft()[2]):
            t0 = time.perf_counter()
            batch = next(self._stream)
            self.timer.add("decode_wait_s", time.perf_counter() - t0)
            t0 = time.perf_counter()
            ok_pos, pixels, errors = self.device_pixels(batch)
            if not ok_pos:
                yield ImageBatch([], torch.zeros(0, self.encoder.embed_dim), errors)
                continue
            x_bd = self.encoder.encode_pixels(pixels)
            self.timer.add("clip_image_s", time.perf_counter() - t0)
            yield ImageBatch(ok_pos, x_bd, errors)

    def device_pixels(self, batch: DecodedBatch) -> DevicePixels:
        """The batch's pixels finished on the model's device, rows in corpus order: the
        workers' PIL pixels and the JPEGs decoded here; errors in corpus order too."""
        device, preprocess = self.encoder.device, self.encoder.preprocess
        pos, parts, errors = list(batch.ok_pos), [], list(batch.errors)
        if batch.pixels is not None:
            pixels = batch.pixels
            parts.append(
                preprocess.finish(pixels, device)
                if pixels.dtype == torch.uint8
                else pixels.to(device)
            )
        if batch.jpeg_pos:
            jpeg_pos, jpeg_pixels, jpeg_errors = self._decode_jpegs(batch)
            pos += jpeg_pos
            parts += [jpeg_pixels] if jpeg_pixels is not None else []
            errors += jpeg_errors
        errors = [error for _, error in sorted(errors, key=lambda pe: pe[0])]
        if not parts:
            return DevicePixels([], None, errors)
        x = torch.cat(parts) if len(parts) > 1 else parts[0]
        order = np.argsort(pos, kind="stable")
        if np.any(order != np.arange(len(pos))):
            x = x[torch.from_numpy(order).to(x.device)]
        return DevicePixels([pos[i] for i in order], x, errors)

    def _decode_jpegs(self, batch: DecodedBatch) -> tuple[list[int], torch.Tensor | None, list]:
        """The batch's JPEGs decoded, resized and cropped on the device; those torchvision
        cannot decode go through PIL here (an error names each that PIL cannot read either)."""
        device, preprocess = self.encoder.device, self.encoder.preprocess
        starts = [0, *batch.jpeg_ends[:-1]]
        datas = [batch.jpeg_bytes[s:e] for s, e in zip(starts, batch.jpeg_ends)]
        decoded = decode_jpegs(datas, device)
        pos = [p for p, image in zip(batch.jpeg_pos, decoded) if image is not None]
        parts = []
        if pos:
            images = [image for image in decoded if image is not None]
            parts.append(preprocess.finish_planar(resize_crop(images, self.jpeg_steps)))
        arrays, errors = [], []
        for p, data, image in zip(batch.jpeg_pos, datas, decoded):
            if image is None:
                item = self.corpus.items[p]
                try:
                    image = image_from_bytes(data.numpy().tobytes(), item.source)
                    arrays.append(preprocess.to_array(image))
                    pos.append(p)
                except ValueError as e:
                    errors.append((p, _error(item, e)))
        if arrays:
            parts.append(preprocess.finish(np.stack(arrays), device))
        return pos, (torch.cat(parts) if parts else None), errors


def _jpeg_steps(encoder: ClipEncoder, decoder: str, cfg: PrecomputeConfig) -> list | None:
    """The tensor form of the encoder's PIL steps when JPEGs are decoded by torch; None when
    everything goes through PIL (ValueError if ``torch`` was asked for and cannot be had)."""
    if decoder == "pil":
        return None
    steps = tensor_steps(encoder.preprocess.pil_steps)
    if steps is None:
        message = f"the preprocessing of {encoder.model_id} has steps with no tensor form"
        if cfg.decode == "torch":
            raise ValueError(
                f"decode='torch': {message} ({encoder.preprocess.transform}); use decode='pil'"
            )
        log.info("%s: images are decoded with PIL", message)
    return steps


def _error(item: CorpusItem, e: Exception) -> dict:
    return {"item_id": item.item_id, "source": item.source, "error": str(e)}


class ImageDecoder(torch.utils.data.Dataset):
    """Corpus position -> (position, pixels or JPEG bytes or None, error or None); runs in
    worker processes. With ``raw_jpegs`` a whole JPEG's bytes are handed on undecoded."""

    def __init__(self, items: Sequence[CorpusItem], preprocess, raw_jpegs: bool = False) -> None:
        self.items, self.preprocess, self.raw_jpegs = items, preprocess, raw_jpegs

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(
        self, pos: int
    ) -> tuple[int, np.ndarray | torch.Tensor | bytes | None, dict | None]:
        item = self.items[pos]
        prepare = self.preprocess.to_array if self.preprocess.splits else self.preprocess
        try:
            data = read_item_bytes(item) if self.raw_jpegs else None
            if data is not None and is_whole_jpeg(data):
                return pos, data, None
            image = load_item_image(item) if data is None else image_from_bytes(data, item.source)
            return pos, prepare(image), None
        except (ValueError, OSError) as e:
            return pos, None, _error(item, e)


def collate_images(samples: list[tuple]) -> DecodedBatch:
    """One batch: the positions that decoded, their pixels stacked (uint8 ``[n, H, W, 3]`` from
    the PIL steps, or finished float ``[n, 3, H, W]``), the JPEGs handed on undecoded (their
    bytes in one tensor: tensors travel in shared memory, one segment each), and the errors."""
    decoded = [
        (pos, pixels)
        for pos, pixels, _ in samples
        if isinstance(pixels, (np.ndarray, torch.Tensor))
    ]
    jpegs = [(pos, data) for pos, data, _ in samples if isinstance(data, bytes)]
    errors = [(pos, error) for pos, _, error in samples if error is not None]
    jpeg_fields = {}
    if jpegs:
        jpeg_fields = {
            "jpeg_pos": [pos for pos, _ in jpegs],
            "jpeg_bytes": torch.frombuffer(
                bytearray(b"".join(d for _, d in jpegs)), dtype=torch.uint8
            ),
            "jpeg_ends": np.cumsum([len(d) for _, d in jpegs]).tolist(),
        }
    ok = [pos for pos, _ in decoded]
    pixels = [pixels for _, pixels in decoded]
    if not pixels:
        return DecodedBatch(ok, None, errors, **jpeg_fields)
    if isinstance(pixels[0], np.ndarray):
        return DecodedBatch(ok, torch.from_numpy(np.stack(pixels)), errors, **jpeg_fields)
    return DecodedBatch(ok, torch.stack(pixels), errors, **jpeg_fields)
