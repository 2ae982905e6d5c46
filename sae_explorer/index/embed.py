"""Embedders: where a build gets each chunk's CLIP embeddings (an :data:`~.build.Embedder`).

:class:`CorpusEmbedder` runs CLIP over corpus items, with DataLoader worker processes decoding
images ahead (:class:`ImageDecoder`, :func:`collate_images`); :class:`ArrayEmbedder` hands out
rows of embeddings computed elsewhere.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch

from sae_explorer.corpus import CorpusItem, load_item_image
from sae_explorer.index.build import ChunkEmbeddings, Timer

if TYPE_CHECKING:
    from sae_explorer.corpus import Corpus
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.precompute import PrecomputeConfig


class DecodedBatch(NamedTuple):
    """A batch of images as the decoding workers hand it over."""

    ok_pos: list[int]  # corpus positions that decoded, in order
    pixels: torch.Tensor | None  # uint8 [n, H, W, 3] (PIL steps only) or float [n, 3, H, W]
    errors: list[dict]  # {"item_id", "source", "error"} per image that did not decode


class ImageBatch(NamedTuple):
    """A batch of images, encoded."""

    ok_pos: list[int]
    x_bd: torch.Tensor  # float [n_ok, d]
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

    Images are decoded by DataLoader worker *processes* that run ahead across chunks: threads
    could not keep a GPU fed (on an H100, 4-16 decoding threads gave ViT-B-32 9-19% of its bare
    speed). Workers run only the PIL steps of preprocessing; the main process finishes whole
    batches on the model's device (``preprocess.finish``).
    """

    def __init__(self, encoder: ClipEncoder, corpus: Corpus, cfg: PrecomputeConfig, timer: Timer):
        self.encoder, self.corpus, self.cfg, self.timer = encoder, corpus, cfg, timer
        self._stream: Iterator = iter(())
        self._planned: deque[tuple[int, int, int]] = deque()  # (start, stop, n_batches)

    def close(self) -> None:
        self._stream = iter(())  # the DataLoader iterator shuts its workers down when dropped

    def __call__(self, positions: range) -> ChunkEmbeddings:
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
            x_nd = self.encoder.encode_texts(texts, batch_size=4 * self.cfg.batch_size)
            embedded.update(zip(text_pos, x_nd))
            self.timer.add("clip_text_s", time.perf_counter() - t0)
        ok_pos = np.array([p for p in positions if p in embedded], dtype=np.int64)
        if len(ok_pos) == 0:
            return ChunkEmbeddings(ok_pos, torch.zeros(0, self.encoder.embed_dim), skipped)
        return ChunkEmbeddings(ok_pos, torch.stack([embedded[p] for p in ok_pos]).float(), skipped)

    def _open_stream(self, positions: range) -> None:
        """Decode every image from ``positions`` to the end of the corpus, in chunks of
        ``positions``' length and then ``chunk_size``, batch by batch in order."""
        items, bs = self.corpus.items, self.cfg.batch_size
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
            loader = DataLoader(
                ImageDecoder(items, self.encoder.preprocess),
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
            ok_pos, pixels, errors = next(self._stream)
            self.timer.add("decode_wait_s", time.perf_counter() - t0)
            if not ok_pos:
                yield ImageBatch([], torch.zeros(0, self.encoder.embed_dim), errors)
                continue
            t0 = time.perf_counter()
            if pixels.dtype == torch.uint8:  # [n, H, W, 3] from the PIL steps
                pixels = self.encoder.preprocess.finish(pixels, self.encoder.device)
            x_bd = self.encoder.encode_pixels(pixels)
            self.timer.add("clip_image_s", time.perf_counter() - t0)
            yield ImageBatch(ok_pos, x_bd, errors)


class ImageDecoder(torch.utils.data.Dataset):
    """Corpus position -> (position, pixels or None, error or None); runs in worker processes."""

    def __init__(self, items: Sequence[CorpusItem], preprocess) -> None:
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, pos: int) -> tuple[int, np.ndarray | torch.Tensor | None, dict | None]:
        item = self.items[pos]
        prepare = self.preprocess.to_array if self.preprocess.splits else self.preprocess
        try:
            return pos, prepare(load_item_image(item)), None
        except (ValueError, OSError) as e:
            return pos, None, {"item_id": item.item_id, "source": item.source, "error": str(e)}


def collate_images(samples: list[tuple]) -> DecodedBatch:
    """One batch: the positions that decoded, their pixels stacked (uint8 ``[n, H, W, 3]`` from
    the PIL steps, or finished float ``[n, 3, H, W]``; tensors travel in shared memory), and
    the errors of the others."""
    ok = [pos for pos, pixels, _ in samples if pixels is not None]
    pixels = [pixels for _, pixels, _ in samples if pixels is not None]
    errors = [error for _, _, error in samples if error is not None]
    if not pixels:
        return DecodedBatch(ok, None, errors)
    if isinstance(pixels[0], np.ndarray):
        return DecodedBatch(ok, torch.from_numpy(np.stack(pixels)), errors)
    return DecodedBatch(ok, torch.stack(pixels), errors)
