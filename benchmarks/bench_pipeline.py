"""Precompute pipeline throughput on real photos (../shared/data/cifar10-test).

CLIP stage: our image path (decoding and the PIL steps of preprocessing in DataLoader worker
processes, overlapped with the model) as a fraction of bare ``encode_pixels`` on tensors that
were decoded and preprocessed beforehand (target >= 90%: decoding must not starve the model).
Also reported: end-to-end ``precompute`` items/s (CLIP + SAE + index) for the same images.
Prints ratios measured in one run; the two CLIP measurements alternate chunk by chunk so
machine load hits both alike.

    python benchmarks/bench_pipeline.py                       # ViT-B-32 (random init), 256 images
    python benchmarks/bench_pipeline.py --clip shapes-ViT-tiny --n-images 2000
    python benchmarks/bench_pipeline.py --device cuda --n-images 2000 --batch-size 256 --workers 8
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder
    from sae_explorer.index.build import Timer
    from sae_explorer.index.embed import CorpusEmbedder
    from sae_explorer.precompute import PrecomputeConfig, precompute
    from sae_explorer.sae import SAE, SAEConfig

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--clip", default="ViT-B-32", help="open_clip architecture (random init)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10-test"))
    p.add_argument("--n-images", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="decoding processes")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--n-latents", type=int, default=4096)
    args = p.parse_args()
    if not Path(args.data).is_dir():
        raise SystemExit(f"no data at {args.data} (../shared/data is only beside the checkout)")

    encoder = load_encoder(args.clip, device=args.device)
    corpus = load_corpus(args.data, max_items=args.n_images)
    print(
        f"{encoder.model_id} on {encoder.device}: {len(corpus)} images from {args.data}, batch {args.batch_size}, "
        f"{args.workers} decode threads, {torch.get_num_threads()} torch threads",
        flush=True,
    )
    # Bare: every image decoded and preprocessed up front, then only the model is timed.
    t0 = time.perf_counter()
    pixels = torch.stack([encoder.preprocess(corpus.load_image(i)) for i in range(len(corpus))])
    preload_s = time.perf_counter() - t0
    cfg = PrecomputeConfig(
        batch_size=args.batch_size, n_workers=args.workers, chunk_size=8 * args.batch_size
    )
    embedder = CorpusEmbedder(encoder, corpus, cfg, Timer())
    bare_s, ours_s = [], []
    chunk = 8 * args.batch_size  # several batches, so the decode threads can run ahead
    with torch.inference_mode():
        encoder.encode_pixels(pixels[: args.batch_size])  # warm-up
        for lo in range(0, len(corpus), chunk):
            hi = min(lo + chunk, len(corpus))
            t0 = time.perf_counter()
            for s in range(lo, hi, args.batch_size):  # the same call our path makes
                encoder.encode_pixels(pixels[s : min(s + args.batch_size, hi)])
            bare_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = embedder(range(lo, hi))
            ours_s.append(time.perf_counter() - t0)
            assert len(out.ok_pos) == hi - lo
    embedder.close()
    bare_rate = len(corpus) / sum(bare_s)
    ours_rate = len(corpus) / sum(ours_s)
    print(f"  preload (decode + preprocess, 1 thread): {len(corpus) / preload_s:,.0f} images/s")
    print(f"  bare encode_image on preloaded tensors:  {bare_rate:,.1f} images/s")
    print(f"  our CLIP stage (workers decode ahead):   {ours_rate:,.1f} images/s")
    print(f"  -> {ours_rate / bare_rate:.0%} of bare (target >= 90%)")

    sae = SAE(
        SAEConfig(encoder.embed_dim, args.n_latents, "ReLU"),
        generator=torch.Generator().manual_seed(0),
    )
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        index = precompute(
            encoder,
            sae,
            corpus,
            cache,
            PrecomputeConfig(batch_size=args.batch_size, n_workers=args.workers, names=False),
        )
        total = time.perf_counter() - t0
        timings = index.manifest["timings"]
    print(
        f"  end-to-end precompute (CLIP + SAE {args.n_latents} latents + index): "
        f"{len(corpus) / total:,.1f} images/s; stages (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(timings.items()))
    )
    print(f"  CLIP share of the run: {np.round(timings.get('clip_image_s', 0) / total, 2):.0%}")


if __name__ == "__main__":
    main()
