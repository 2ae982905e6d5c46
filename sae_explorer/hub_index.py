"""A published index: an activation index with the thumbnails of its images, as a Hugging Face
Hub dataset repo (written by :mod:`sae_explorer.publish`), fetched and checked before serving.

A publication is a folder laid out like the cache (so an explorer over it finds its thumbnails
and exports folder where it would over a built index)::

    README.md            the dataset card (CLIP, SAE, corpus, hashes, how it was built)
    published.json       what was published: the record below (:class:`PublishedRecord`)
    index/<key[:20]>/    the index files (manifest.json, items.parquet, *.npy, names.*)
    thumbs/<key[:20]>/   <px>/<row>.webp for every image item, at every size a page shows

Serving one (``--index hf-hub:org/name[@rev]``) downloads it into the cache
(``<cache>/published/<org>--<name>``), checks the SHA-256 of every index file and that every
thumbnail is there, then checks that the CLIP model and the SAE loaded as configured are the
ones it was built with (model id and weights fingerprint; the SAE's content hash). Nothing is
encoded: no corpus files are needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from sae_explorer.index.files import MANIFEST_NAME, CorruptIndexError

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.index import ActivationIndex
    from sae_explorer.progress import Progress
    from sae_explorer.sae import SAE

HUB_INDEX_PREFIX = "hf-hub:"
RECORD_NAME = "published.json"
CARD_NAME = "README.md"
RECORD_SCHEMA = 1
REPO_TYPE = "dataset"


class HubIndexRef(NamedTuple):
    """``hf-hub:org/name[@revision]``: a published index on the Hub."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, source: str) -> HubIndexRef:
        if not source.startswith(HUB_INDEX_PREFIX):
            raise ValueError(
                f"a published index is named hf-hub:org/name[@revision], got {source!r}"
            )
        repo_id, at, revision = source[len(HUB_INDEX_PREFIX) :].partition("@")
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(parts) or (at and not revision):
            raise ValueError(
                f"a published index is named hf-hub:org/name[@revision], got {source!r}"
            )
        return cls(repo_id, revision or None)

    def __str__(self) -> str:
        return HUB_INDEX_PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")


class PublishedRecord(NamedTuple):
    """``published.json``: what a publication holds and what it was built with."""

    schema: int
    index_key: str
    index_dir: str  # "index/<key[:20]>", relative to the publication
    thumbs_dir: str  # "thumbs/<key[:20]>"
    thumb_sizes: list[int]
    n_images: int  # image items, each with one thumbnail per size
    sha256: dict[str, str]  # index file name -> SHA-256 of its bytes
    clip: dict[str, Any]  # model_id, cache_id (weights fingerprint), source, pretrained
    sae: dict[str, Any]  # content_hash, source
    corpus: dict[str, Any]  # source, manifest_hash, n_items (from the index manifest)
    published: str  # UTC, ISO 8601

    @classmethod
    def read(cls, dpath: Path) -> PublishedRecord:
        fpath = Path(dpath) / RECORD_NAME
        try:
            raw = json.loads(fpath.read_text())
            record = cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise CorruptIndexError(f"{fpath} is not a published index's record: {e}") from e
        if record.schema != RECORD_SCHEMA:
            raise CorruptIndexError(
                f"{fpath} has schema {record.schema}; this version reads schema {RECORD_SCHEMA}"
            )
        return record

    def write(self, dpath: Path) -> None:
        from sae_explorer.atomic import atomic_write_json

        atomic_write_json(Path(dpath) / RECORD_NAME, self._asdict())


class PublishedIndex(NamedTuple):
    """A fetched, checked publication: its index, thumbnails folder and record."""

    index: ActivationIndex
    thumbs_dpath: Path
    record: PublishedRecord


def file_sha256(fpath: Path, block_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(fpath, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def local_dpath(ref: HubIndexRef, cache_root: Path) -> Path:
    """Where a publication is downloaded to: ``<cache>/published/<org>--<name>[@rev]``."""
    name = ref.repo_id.replace("/", "--") + (f"@{ref.revision}" if ref.revision else "")
    return Path(cache_root) / "published" / name


def fetch(ref: HubIndexRef, cache_root: Path, progress: Progress | None = None) -> Path:
    """Download the publication (only what changed since the last start) into the cache."""
    import huggingface_hub

    dpath = local_dpath(ref, cache_root)
    if progress is not None:
        progress(0.3, f"downloading the published index {ref}")
    huggingface_hub.snapshot_download(
        ref.repo_id, repo_type=REPO_TYPE, revision=ref.revision, local_dir=dpath
    )
    return dpath


def open_published(dpath: Path) -> PublishedIndex:
    """Check a downloaded publication (every index file's SHA-256, every thumbnail there) and
    open its index; ``CorruptIndexError`` saying which file is wrong."""
    from sae_explorer.index import ActivationIndex

    dpath = Path(dpath)
    record = PublishedRecord.read(dpath)
    index_dpath = dpath / record.index_dir
    if MANIFEST_NAME not in record.sha256:
        raise CorruptIndexError(f"{dpath / RECORD_NAME} lists no {MANIFEST_NAME}")
    for name, expected in record.sha256.items():
        fpath = index_dpath / name
        if not fpath.is_file():
            raise CorruptIndexError(f"the published index has no {record.index_dir}/{name}")
        if file_sha256(fpath) != expected:
            raise CorruptIndexError(
                f"{record.index_dir}/{name} does not have the SHA-256 the publication records "
                "(damaged download or changed file); delete it and start again"
            )
    index = ActivationIndex.load(index_dpath)
    if index.manifest.get("key") != record.index_key:
        raise CorruptIndexError("the published index's manifest is for another key")
    thumbs_dpath = dpath / record.thumbs_dir
    n_images = int(index.is_image.sum())
    for px in record.thumb_sizes:
        found = sum(1 for _ in (thumbs_dpath / str(px)).glob("*.webp"))
        if found != n_images or record.n_images != n_images:
            raise CorruptIndexError(
                f"the published index has {found} thumbnails of {px} px for {n_images} images"
            )
    return PublishedIndex(index, thumbs_dpath, record)


def check_models(published: PublishedIndex, encoder: ClipEncoder, sae: SAE) -> None:
    """``ValueError`` unless ``encoder`` and ``sae`` are the models the index was built with,
    naming what was recorded and what to load instead."""
    record, manifest = published.record, published.index.manifest
    recorded_clip = manifest.get("encoder") or {}
    clip_hint = record.clip.get("source") or recorded_clip.get("model_id")
    if recorded_clip.get("model_id") != encoder.model_id or (
        record.clip.get("cache_id") not in (None, encoder.cache_id)
    ):
        pretrained = record.clip.get("pretrained")
        raise ValueError(
            f"the published index was built with CLIP {recorded_clip.get('model_id')!r}; "
            f"{encoder.model_id!r} was loaded. Start with --clip {clip_hint}"
            + (f" --pretrained {pretrained}" if pretrained else "")
        )
    recorded_sae = str((manifest.get("sae") or {}).get("content_hash", ""))
    if recorded_sae != sae.content_hash:
        hint = record.sae.get("source")
        raise ValueError(
            f"the published index was built with the SAE whose content hash is "
            f"{recorded_sae[:12]}; the SAE loaded has {sae.content_hash[:12]}. "
            + (f"Start with --sae {hint}" if hint else "Load the SAE it was built with")
        )
