"""Publish an activation index to a Hugging Face Hub dataset repo, so an app (a CPU Space) can
serve it without its corpus and without encoding anything at start.

``python -m sae_explorer publish INDEX --repo org/name --clip ViT-L-14 --pretrained openai
--sae hf-hub:WolodjaZ/MSAE/<file>`` stages the index files, a WebP thumbnail of every image
item at every size a page shows (read from the corpus files, which must be readable here), a
record of what it holds (``published.json``: SHA-256 of every index file, the models' hashes)
and a dataset card, then uploads them in one commit. ``--out DIR`` stages without uploading.
The layout and how a publication is served are in :mod:`sae_explorer.hub_index`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sae_explorer.explorer.thumbnails import THUMB_SIZES, thumb_fpath, thumbs_dpath_for
from sae_explorer.hub_index import (
    CARD_NAME,
    RECORD_SCHEMA,
    REPO_TYPE,
    PublishedRecord,
    file_sha256,
)
from sae_explorer.index import ActivationIndex, IndexCounts
from sae_explorer.index.files import MANIFEST_NAME
from sae_explorer.naming import NAMES_FILE, NAMES_META


class PublishSources(NamedTuple):
    """How the app should load the models the index was built with (the index records their
    hashes, not where they came from); written into the record and the card."""

    clip: str | None = None
    pretrained: str | None = None
    sae: str | None = None


NO_SOURCES = PublishSources()


def index_file_names(index: ActivationIndex) -> list[str]:
    """The files of a finished index: its manifest, the files it lists, its names."""
    names = [MANIFEST_NAME, *index.manifest["files"]]
    names += [n for n in (NAMES_FILE, NAMES_META) if (index.dpath / n).is_file()]
    return names


def stage(
    index_dpath: str | Path,
    out_dpath: str | Path,
    sources: PublishSources = NO_SOURCES,
    step: Callable[[int, int], None] | None = None,
) -> PublishedRecord:
    """Write the publication of the index in ``index_dpath`` into ``out_dpath`` (created; must
    be empty or new); ``step(done, total)`` as thumbnails are written."""
    index = ActivationIndex.load(index_dpath)  # a finished, sound index only
    out_dpath = Path(out_dpath)
    if out_dpath.exists() and any(out_dpath.iterdir()):
        raise ValueError(f"{out_dpath} is not empty; stage a publication into a new folder")
    key = str(index.manifest["key"])
    index_dir, thumbs_dir = f"index/{key[:20]}", f"thumbs/{key[:20]}"
    (out_dpath / index_dir).mkdir(parents=True)
    sha256 = {}
    for name in index_file_names(index):
        shutil.copyfile(index.dpath / name, out_dpath / index_dir / name)
        sha256[name] = file_sha256(out_dpath / index_dir / name)
    images = [int(i) for i in index.is_image.nonzero()[0]]
    _stage_thumbnails(index, images, out_dpath / thumbs_dir, step)
    manifest = index.manifest
    encoder = manifest.get("encoder") or {}
    record = PublishedRecord(
        schema=RECORD_SCHEMA,
        index_key=key,
        index_dir=index_dir,
        thumbs_dir=thumbs_dir,
        thumb_sizes=list(THUMB_SIZES),
        n_images=len(images),
        sha256=sha256,
        clip={
            "model_id": encoder.get("model_id"),
            "cache_id": encoder.get("cache_id"),
            "source": sources.clip,
            "pretrained": sources.pretrained,
        },
        sae={"content_hash": manifest["sae"]["content_hash"], "source": sources.sae},
        corpus=manifest.get("corpus") or {},
        published=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    record.write(out_dpath)
    (out_dpath / CARD_NAME).write_text(dataset_card(record, manifest), encoding="utf-8")
    return record


def _stage_thumbnails(
    index: ActivationIndex,
    images: list[int],
    thumbs_dpath: Path,
    step: Callable[[int, int], None] | None,
) -> None:
    """Every image's thumbnail at every size, copied from the cache's thumbnails when there,
    else drawn from the corpus file."""
    from sae_explorer.explorer.thumbnails import write_thumbnail

    cached = thumbs_dpath_for(index.dpath)
    total = len(images) * len(THUMB_SIZES)
    for done, (item, px) in enumerate(((i, px) for i in images for px in THUMB_SIZES), 1):
        fpath = thumb_fpath(thumbs_dpath, item, px)
        if thumb_fpath(cached, item, px).is_file():
            fpath.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(thumb_fpath(cached, item, px), fpath)
        else:
            write_thumbnail(index, item, px, fpath)
        if step is not None:
            step(done, total)


def dataset_card(record: PublishedRecord, manifest: dict) -> str:
    """The dataset card: what the index is over, its hashes, how it was built and served."""
    counts = IndexCounts.from_manifest(manifest)
    sae = manifest["sae"]
    clip, corpus, cfg = record.clip, record.corpus, manifest.get("config") or {}
    serve = " ".join(
        f"--{flag} {value}"
        for flag, value in (("clip", clip["source"]), ("pretrained", clip["pretrained"]))
        if value
    )
    serve += f" --sae {record.sae['source']}" if record.sae["source"] else ""
    files = "\n".join(
        f"| `{record.index_dir}/{name}` | `{digest}` |" for name, digest in record.sha256.items()
    )
    settings = ", ".join(
        f"{k}={cfg[k]}" for k in ("top_k", "top_m", "n_samples", "seed") if k in cfg
    )
    return f"""---
pretty_name: sae-explorer index, {clip["model_id"]} + SAE {sae["content_hash"][:12]}
tags:
- sae-explorer
- sparse-autoencoder
- clip
- interpretability
---

# sae-explorer activation index

An activation index for sae-explorer (built and read by its `sae_explorer` library): every corpus item's CLIP embedding and top SAE latents, per-latent
statistics, max-activating and sampled items, latent names, and a WebP thumbnail of every image
({", ".join(f"{px} px" for px in record.thumb_sizes)}), so the app serves it without the corpus
and without encoding anything at start.

| | |
| --- | --- |
| CLIP | `{clip["model_id"]}` (pretrained `{clip["pretrained"]}`, id `{clip["cache_id"]}`) |
| SAE | `{record.sae["source"]}`: content hash `{sae["content_hash"]}`, {sae["n_latents"]} latents, {sae.get("config", {}).get("activation", "")} |
| corpus | `{corpus.get("source")}`: manifest hash `{corpus.get("manifest_hash")}` |
| items | {counts.n_items} ({counts.n_images} images, {counts.n_texts} texts; {counts.n_skipped} unreadable skipped) |
| index | key `{record.index_key}`, schema {manifest["schema"]}, {counts.codes_nnz} stored codes |
| built | {manifest.get("created")} with {settings}; timings {manifest.get("timings")} |
| published | {record.published} |

## Serve it

```bash
python app.py --index hf-hub:<this repo> {serve}
```

At start the app downloads this repo, checks the SHA-256 of every index file (below) and that
every thumbnail is there, and refuses to serve it with a CLIP model or an SAE other than the
ones above (model id and weights fingerprint; the SAE's content hash).

## How it was built

`python -m sae_explorer precompute --clip {clip["source"] or clip["model_id"]}
--pretrained {clip["pretrained"]} --sae {record.sae["source"]} --corpus {corpus.get("source")}`
with the settings above, then `python -m sae_explorer publish`. The index's own
`manifest.json` lists every setting, the input statistics and the items skipped.

## Files

| file | SHA-256 |
| --- | --- |
{files}
"""


def publish(
    index_dpath: str | Path,
    repo_id: str,
    sources: PublishSources = NO_SOURCES,
    private: bool = False,
    token: str | None = None,
    step: Callable[[int, int], None] | None = None,
) -> str:
    """Stage the publication and upload it to the dataset repo ``repo_id`` (created if needed)
    in one commit, replacing an earlier publication's index and thumbnails; returns the
    commit's URL."""
    import huggingface_hub

    with tempfile.TemporaryDirectory(prefix="sae-explorer-publish-") as tmp:
        staged = Path(tmp) / "publication"
        record = stage(index_dpath, staged, sources, step)
        api = huggingface_hub.HfApi(token=token)
        api.create_repo(repo_id, repo_type=REPO_TYPE, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type=REPO_TYPE,
            folder_path=staged,
            commit_message=f"Publish index {record.index_key[:12]}",
            delete_patterns=["index/**", "thumbs/**"],
        )
    return str(getattr(commit, "commit_url", commit))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer publish",
        description="Upload an activation index, with thumbnails of its images and a dataset "
        "card, to a Hugging Face Hub dataset repo (serve it with app.py --index hf-hub:REPO).",
    )
    parser.add_argument("index", help="a finished index folder (<cache>/index/<key>)")
    parser.add_argument("--repo", help="dataset repo, org/name (created if it does not exist)")
    parser.add_argument("--clip", help="the CLIP model the app should load (recorded)")
    parser.add_argument("--pretrained", help="its pretrained tag or weights (recorded)")
    parser.add_argument("--sae", help="the SAE source the app should load (recorded)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")
    parser.add_argument("--out", default=None, help="only stage the publication into this folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.repo is None) == (args.out is None):
        print("error: give --repo org/name to publish, or --out DIR to stage only", file=sys.stderr)
        return 2
    from tqdm import tqdm

    sources = PublishSources(args.clip, args.pretrained, args.sae)
    with tqdm(desc="thumbnails", unit="img", file=sys.stderr) as bar:

        def step(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        try:
            if args.out is not None:
                record = stage(args.index, args.out, sources, step)
                print(f"staged {record.index_key[:12]} ({record.n_images} images) in {args.out}")
                return 0
            url = publish(args.index, args.repo, sources, args.private, args.token, step)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"published to {url}\nserve it with: python app.py --index hf-hub:{args.repo}")
    return 0
