"""Approximate nearest neighbours over an index's embeddings, for indexes too large to scan
per query: a faiss IVF-PQ index whose candidates are re-ranked by their exact cosine.

Below :attr:`AnnConfig.min_items` items :meth:`ActivationIndex.nearest` scans every embedding
(exact); from there on it asks the ANN index (``ann.faiss`` beside the embeddings, with
``ann.json`` recording what it was built from) for ``rerank * k`` candidates and re-ranks them
with the exact cosine of their stored embeddings, so the similarities it returns are exact and
only the candidate set is approximate. The IVF-PQ index holds ``pq_bytes`` per item (640 MB at
10M items), never the vectors; it is memory-mapped when opened.

An ``ann.faiss`` that does not match the index (another count of vectors, another width, other
embeddings: a copied or stale file) is refused with a message naming the difference and built
again; it is never searched. ``faiss`` is an optional dependency (``pip install
'sae-explorer[scale]'``, or ``faiss-cpu``); without it every search is exact.
"""

from __future__ import annotations

import json
import logging
import math
import mmap
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sae_explorer.atomic import atomic_path, atomic_write_json
from sae_explorer.index.files import (
    ANN_META_NAME,
    ANN_NAME,
    CHECKSUM,
    EMBEDDINGS_NAME,
    first_difference,
)

if TYPE_CHECKING:
    from sae_explorer.index.reader import ActivationIndex
    from sae_explorer.progress import Progress

log = logging.getLogger(__name__)

ROWS_PER_ADD = 65536
"""Embeddings normalised and added at a time (bounded memory whatever the index's size)."""
KMEANS_ITERATIONS = 10
"""Of the cells' k-means (faiss's default is 25; candidates are re-ranked exactly anyway)."""


@dataclass(frozen=True)
class AnnConfig:
    """When and how neighbours are searched approximately."""

    min_items: int = 200_000
    """Indexes of fewer items are searched exactly (one pass over the embeddings)."""
    n_lists: int = 0
    """IVF cells (0: the power of two nearest sqrt(n_items), at most n_items / 39)."""
    pq_bytes: int = 64
    """Bytes of product-quantised code per item (the embedding width must divide by it)."""
    n_probe: int = 48
    """Cells visited per query."""
    rerank: int = 16
    """Candidates per wanted neighbour re-ranked with their exact cosine."""
    train_rows: int = 131072
    """Embeddings (a seeded random sample) the cells and codebooks are trained on."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_items", "pq_bytes", "n_probe", "rerank", "train_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_lists < 0:
            raise ValueError(f"n_lists must be >= 0 (0: automatic), got {self.n_lists}")


class AnnMeta(NamedTuple):
    """``ann.json``: what an ``ann.faiss`` was built from and with."""

    n_items: int
    embed_dim: int
    embeddings_sha256: str  # the index manifest's checksum of embeddings.npy
    n_lists: int
    pq_bytes: int


class Neighbours(NamedTuple):
    item_idx: np.ndarray  # int64 [k], most similar first
    similarity: np.ndarray  # float32 [k], exact cosine


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def auto_n_lists(n_items: int) -> int:
    """The power of two nearest sqrt(n) / 4 (1,024 cells of ~10k items at 10M: assigning every
    item to its cell is the build's largest cost), capped at n / 39 (faiss wants 39 training
    points per cell)."""
    n = 2 ** round(math.log2(max(math.sqrt(n_items) / 4, 1)))
    return int(max(1, min(n, n_items // 39)))


def expected_meta(index: ActivationIndex, cfg: AnnConfig) -> AnnMeta:
    return AnnMeta(
        n_items=index.n_items,
        embed_dim=index.embed_dim,
        embeddings_sha256=str(index.manifest[CHECKSUM][EMBEDDINGS_NAME]),
        n_lists=cfg.n_lists or auto_n_lists(index.n_items),
        pq_bytes=cfg.pq_bytes,
    )


def unit_rows(x_nd: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (zero rows stay zero), as the exact search divides."""
    x_nd = np.asarray(x_nd, dtype=np.float32)
    return x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True).clip(min=1e-12)


# --------------------------------------------------------------------------- build
def build_ann(
    embeddings_nd: np.ndarray, meta: AnnMeta, cfg: AnnConfig, progress: Progress | None = None
):
    """A trained IVF-PQ index (inner product of unit rows = cosine) holding every row of
    ``embeddings_nd`` (read in blocks; may be memory-mapped)."""
    import faiss

    n, d = embeddings_nd.shape
    if d % meta.pq_bytes:
        raise ValueError(f"pq_bytes ({meta.pq_bytes}) must divide the embedding width ({d})")
    report = progress or (lambda frac, msg: None)
    rng = np.random.default_rng(cfg.seed)
    n_train = min(n, max(cfg.train_rows, 39 * meta.n_lists))
    train_rows = np.sort(rng.choice(n, size=n_train, replace=False))
    report(0.0, f"training the neighbour index on {n_train} of {n} embeddings")
    quantizer = faiss.IndexFlatIP(d)
    ann = faiss.IndexIVFPQ(quantizer, d, meta.n_lists, meta.pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    ann.cp.seed = ann.pq.cp.seed = cfg.seed
    ann.cp.niter = KMEANS_ITERATIONS
    ann.train(unit_rows(embeddings_nd[train_rows]))
    for lo in range(0, n, ROWS_PER_ADD):
        ann.add(unit_rows(embeddings_nd[lo : lo + ROWS_PER_ADD]))
        report(min(lo + ROWS_PER_ADD, n) / n, f"neighbour index: {ann.ntotal}/{n} embeddings")
    ann.quantizer_trains_alone = 0
    return ann


def save_ann(dpath: Path, ann, meta: AnnMeta) -> None:
    """``ann.faiss``, then ``ann.json`` (its presence vouches for the file), each atomically."""
    import faiss

    (Path(dpath) / ANN_META_NAME).unlink(missing_ok=True)
    with atomic_path(Path(dpath) / ANN_NAME) as tmp:
        faiss.write_index(ann, str(tmp))
    atomic_write_json(Path(dpath) / ANN_META_NAME, meta._asdict())


def ann_mismatch(dpath: Path, expected: AnnMeta, ann=None) -> str | None:
    """Why the ``ann.faiss`` in ``dpath`` (or ``ann``, the index read from it) must not serve
    an index whose embeddings are ``expected``; None when it may."""
    fpath, meta_fpath = Path(dpath) / ANN_NAME, Path(dpath) / ANN_META_NAME
    if not fpath.is_file():
        return f"there is no {ANN_NAME}"
    try:
        recorded = json.loads(meta_fpath.read_text())
    except (OSError, ValueError) as e:
        return f"{ANN_META_NAME} cannot be read ({e})"
    if ann is not None and (ann.ntotal, ann.d) != (expected.n_items, expected.embed_dim):
        return (
            f"{ANN_NAME} holds {ann.ntotal} vectors of {ann.d} dims, the index has "
            f"{expected.n_items} embeddings of {expected.embed_dim} dims"
        )
    diff = first_difference(expected, recorded)
    if diff is None:
        return None
    return (
        f"{ANN_NAME} was built with {diff.name}={diff.recorded!r}, the index needs "
        f"{diff.name}={diff.expected!r}"
    )


def open_ann(index: ActivationIndex, cfg: AnnConfig, progress: Progress | None = None):
    """The index's ANN index, memory-mapped; one that does not match the index is refused
    (logged with the reason) and built again, then saved when the folder is writable."""
    import faiss

    expected = expected_meta(index, cfg)
    why = ann_mismatch(index.dpath, expected)
    if why is None:
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        try:
            ann = faiss.read_index(str(index.dpath / ANN_NAME), flags)
        except RuntimeError as e:
            why = f"{ANN_NAME} cannot be read ({str(e).strip().splitlines()[-1]})"
        else:
            why = ann_mismatch(index.dpath, expected, ann)
            if why is None:
                PageCacheWarmer(index.dpath / ANN_NAME).start()
                return ann
    if (index.dpath / ANN_NAME).exists():
        log.warning("not serving %s in %s: %s; building it again", ANN_NAME, index.dpath, why)
    t0 = time.perf_counter()
    ann = build_ann(index.embeddings, expected, cfg, progress)
    log.info(
        "built the neighbour index of %d items in %.1fs", index.n_items, time.perf_counter() - t0
    )
    try:
        save_ann(index.dpath, ann, expected)
    except OSError as e:  # a read-only cache: serve the one built in memory
        log.warning("could not save %s in %s: %s", ANN_NAME, index.dpath, e)
    return ann


# --------------------------------------------------------------------------- search
class AnnSearcher:
    """Neighbour search through an ANN index, candidates re-ranked by their exact cosine."""

    def __init__(self, ann, embeddings_nd: np.ndarray, is_image_n: np.ndarray, cfg: AnnConfig):
        self.ann, self.embeddings_nd, self.cfg = ann, embeddings_nd, cfg
        self.is_image_n = is_image_n
        self._selectors: dict[str, tuple] = {}

    def _params(self, modality: str | None):
        import faiss

        if modality is None:
            return faiss.SearchParametersIVF(nprobe=self.cfg.n_probe)
        if modality not in self._selectors:
            keep_n = self.is_image_n == (modality == "image")
            bits = np.packbits(keep_n, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(keep_n), faiss.swig_ptr(bits))
            self._selectors[modality] = (selector, bits)  # the bitmap must outlive the selector
        selector = self._selectors[modality][0]
        return faiss.SearchParametersIVF(sel=selector, nprobe=self.cfg.n_probe)

    def search(self, q_d: np.ndarray, k: int, modality: str | None = None) -> Neighbours:
        """The ``k`` items most cosine-similar to the unit vector ``q_d`` (of ``modality``)."""
        n_candidates = min(self.ann.ntotal, max(k, 1) * self.cfg.rerank)
        _, ids = self.ann.search(
            q_d[None].astype(np.float32), n_candidates, params=self._params(modality)
        )
        rows = np.unique(ids[0][ids[0] >= 0])
        prefetch_rows(self.embeddings_nd, rows)
        block = np.asarray(self.embeddings_nd[rows], dtype=np.float32)
        sims = block @ q_d / np.linalg.norm(block, axis=1).clip(min=1e-12)
        order = np.argsort(-sims, kind="stable")[:k]
        return Neighbours(rows[order].astype(np.int64), sims[order].astype(np.float32))


class PageCacheWarmer(threading.Thread):
    """Reads a file once, in the background, so that the kernel holds it in its page cache: a
    query visits ``n_probe`` of the memory-mapped ``ann.faiss``'s inverted lists (~44 MB of its
    720 MB at 10M items), which the first queries after an open would otherwise fault in from
    the disk one page run at a time (neighbours p50 79 ms in a cold run, against 40 ms warm).
    A hint: nothing is kept in the process; a file larger than :data:`WARM_MAX_SHARE` of the
    machine's memory, or one that cannot be read, is left to the page faults."""

    def __init__(self, fpath: Path, block: int = 8 << 20) -> None:
        super().__init__(name=f"warm {Path(fpath).name}", daemon=True)
        self.fpath, self.block, self.n_bytes = Path(fpath), block, 0

    def run(self) -> None:
        buffer = bytearray(self.block)
        try:
            if self.fpath.stat().st_size > WARM_MAX_SHARE * physical_memory():
                return
            with open(self.fpath, "rb", buffering=0) as f:
                while n := f.readinto(buffer):
                    self.n_bytes += n
        except OSError:
            return


WARM_MAX_SHARE = 0.25
"""The largest file :class:`PageCacheWarmer` reads, as a share of the machine's memory."""


def physical_memory() -> int:
    """Bytes of memory this machine has (inf where the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return math.inf


def prefetch_rows(array_nd: np.ndarray, rows_k: np.ndarray) -> None:
    """Ask the kernel to read the pages of rows ``rows_k`` of a memory-mapped array all at once
    (``POSIX_FADV_WILLNEED``), before they are gathered: at 10M items the re-rank's ~160 rows lie
    scattered over a 10 GB file, and gathered one by one each is a page fault waiting on the
    disk in turn. A hint only: what is read never changes; nothing happens for an array that is
    not a whole file's memory map or where the call does not exist."""
    fname, offset = getattr(array_nd, "filename", None), getattr(array_nd, "offset", None)
    whole = isinstance(array_nd, np.memmap) and isinstance(array_nd.base, mmap.mmap)
    if fname is None or offset is None or not whole or not hasattr(os, "posix_fadvise"):
        return
    row_bytes = array_nd.strides[0]
    fd = os.open(fname, os.O_RDONLY)
    try:
        for row in rows_k.tolist():
            os.posix_fadvise(fd, offset + row * row_bytes, row_bytes, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)
