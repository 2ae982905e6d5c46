"""The machine's own ceilings beside end-to-end ``precompute``, in one run (issue 12, item 3).

For each CLIP architecture (random weights: no download) over the same real photos:

- decode alone: PIL in N worker processes (read, decode, resize, crop: the pipeline's own
  ``ImageDecoder`` through a DataLoader), torchvision's ``decode_jpeg`` + tensor resize on the
  CPU (one process), and nvJPEG on the GPU (batched ``decode_jpeg(device="cuda")``, resize,
  crop and normalise there) where CUDA is available;
- the image tower alone on device-resident input, per precision (fp32, and bf16/fp16 where the
  device runs them);
- the SAE alone (``sae.encode`` on device-resident embeddings);
- end-to-end ``precompute`` (fresh cache, no names) with the default settings for the device.

It prints img/s for each and the ratio end-to-end / min(decode ceiling, model ceiling), where the
decode ceiling is the fastest decoder measured and the model ceiling the tower at the precision
the end-to-end run used (issue 12's target on a GPU: >= 80%).

    python benchmarks/bench_ceilings.py                                  # CPU-sized: 128 photos
    python benchmarks/bench_ceilings.py --clip ViT-B-32 ViT-L-14 --n-images 1000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA_CANDIDATES = (
    REPO / ".bench-data" / "flickr8k-1k" / "images",  # carried to a device machine
    REPO / "shared" / "data" / "flickr8k-1k" / "images",
    REPO.parent / "shared" / "data" / "flickr8k-1k" / "images",
)


class Figure(NamedTuple):
    name: str
    per_s: float  # images (or rows) per second
    note: str = ""


def timed(
    run: Callable[[], int],
    device: torch.device,
    repeats: int = 1,
    warm_up: Callable[[], object] | None = None,
) -> float:
    """Items per second of ``run`` (which returns how many it did), best of ``repeats``, after
    one warm-up call (of ``warm_up``, else of ``run``); CUDA work is synchronised before the
    clock stops."""
    (warm_up or run)()
    best = 0.0
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        n = run()
        _sync(device)
        best = max(best, n / (time.perf_counter() - t0))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- decode
def decode_pil(encoder, corpus, workers: int, batch: int) -> float:
    from torch.utils.data import DataLoader

    from sae_explorer.index.embed import ImageDecoder, collate_images

    positions = list(range(len(corpus)))

    def run() -> int:
        loader = DataLoader(
            ImageDecoder(corpus.items, encoder.preprocess),
            batch_sampler=[positions[s : s + batch] for s in range(0, len(positions), batch)],
            num_workers=workers,
            collate_fn=collate_images,
            prefetch_factor=4 if workers else None,
        )
        return sum(len(b.ok_pos) for b in loader)

    return timed(run, torch.device("cpu"))


def torch_pixels(encoder, blobs: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Model input from JPEG bytes on ``device``: torchvision decode (nvJPEG on CUDA), the
    encoder's resize and crop as tensor steps, then its scaling and normalisation."""
    from sae_explorer.pixels import decode_jpegs, resize_crop, tensor_steps

    steps = tensor_steps(encoder.preprocess.pil_steps)
    images = decode_jpegs(blobs, device)
    return encoder.preprocess.finish_planar(resize_crop(images, steps))


def decode_torch(encoder, blobs: list[torch.Tensor], device: torch.device, batch: int) -> float:
    """torchvision decode + resize + crop + normalise on ``device`` (bytes already in memory)."""

    def run() -> int:
        for s in range(0, len(blobs), batch):
            torch_pixels(encoder, blobs[s : s + batch], device)
        return len(blobs)

    return timed(run, device)


def agreement(encoder, corpus, blobs, device: torch.device, n: int = 32) -> str:
    """What the device's decode path (nvJPEG on a GPU) gives against open_clip's PIL
    preprocessing on the first ``n`` photos: pixels (0..255) and fp32 tower embeddings."""
    ours = torch_pixels(encoder, blobs[:n], device).float().cpu()
    pil = torch.stack([encoder.preprocess(encoder.load_image(i.source)) for i in corpus.items[:n]])
    std = torch.tensor(encoder.preprocess.tensor_steps[-1].std).view(1, 3, 1, 1)
    diff_255 = ((ours - pil) * std * 255).abs()
    cosine = torch.nn.functional.cosine_similarity(
        encoder.encode_pixels(ours), encoder.encode_pixels(pil)
    )
    return (
        f"{device.type} decode vs PIL on {len(pil)} photos: pixels mean |diff| "
        f"{diff_255.mean():.3f}/255 (max {diff_255.max():.0f}); fp32 embeddings cosine min "
        f"{cosine.min():.5f}"
    )


# --------------------------------------------------------------------------- models
def tower(encoder, n: int, batch: int) -> float:
    """The visual tower on pixels already on the device in its input type."""
    size = encoder.model.visual.image_size
    size = size if isinstance(size, tuple) else (size, size)
    x = torch.randn(batch, 3, *size, device=encoder.device, dtype=encoder.input_dtype)

    def run() -> int:
        with torch.inference_mode():
            for _ in range(max(1, n // batch)):
                encoder.model.encode_image(x)
        return max(1, n // batch) * batch

    def warm_up() -> None:
        with torch.inference_mode():
            encoder.model.encode_image(x[:2])

    return timed(run, encoder.device, warm_up=warm_up)


def sae_alone(sae, n: int, batch: int, device: torch.device) -> float:
    x = torch.randn(batch, sae.n_inputs, device=device)

    def run() -> int:
        with torch.inference_mode():
            for _ in range(max(1, n // batch)):
                sae.encode(x)
        return max(1, n // batch) * batch

    return timed(run, device, repeats=2)


def end_to_end(encoder, sae, corpus, cfg) -> float:
    from sae_explorer.precompute import precompute

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = precompute(encoder, sae, corpus, tmp, cfg)
        _sync(encoder.device)
        return index.n_items / (time.perf_counter() - t0)


# --------------------------------------------------------------------------- one model
def measure(arch: str, args, corpus, blobs) -> list[Figure]:
    from sae_explorer.encoder import check_precision, load_encoder
    from sae_explorer.index.embed import device_batch_size
    from sae_explorer.precompute import PrecomputeConfig
    from sae_explorer.sae import SAE, SAEConfig

    # Loaded in fp32 and copied down per precision (a copy is what open_clip builds in it);
    # end to end in what ``auto`` picks for the device (fp16 on a GPU), as precompute runs.
    encoder = load_encoder(arch, device=args.device, precision="fp32")
    device = torch.device(encoder.device)
    run_precision = "fp16" if device.type in {"cuda", "mps"} else "fp32"
    batch = device_batch_size(args.batch_size, device)
    figures = [
        Figure(
            "decode PIL",
            decode_pil(encoder, corpus, args.workers, batch),
            f"{args.workers} processes",
        ),
        Figure(
            "decode torchvision CPU",
            decode_torch(encoder, blobs, torch.device("cpu"), batch),
            "1 process",
        ),
    ]
    if device.type == "cuda":
        figures.append(
            Figure("decode nvJPEG", decode_torch(encoder, blobs, device, batch), f"batch {batch}")
        )
    print(f"  {arch}: {agreement(encoder, corpus, blobs, device)}", flush=True)
    gpu = device.type == "cuda"
    precisions = args.precisions or (["fp32", "fp16", "bf16"] if gpu else ["fp32", "bf16"])
    for precision in precisions:
        try:
            check_precision(precision, device)
        except ValueError as e:
            print(f"  ({arch}: {precision} skipped: {e})", flush=True)
            continue
        at = encoder.at_precision(precision)
        # the end-to-end batch, but a CPU's fp16/bf16 towers (well under 1 img/s) get 16 images
        tower_batch = batch if gpu or precision == "fp32" else min(batch, 16)
        n_tower = max(tower_batch, args.n_images if gpu else 0)
        speed = tower(at, n_tower, tower_batch)
        figures.append(Figure(f"tower {precision}", speed, f"batch {tower_batch}"))
        del at
    sae = SAE(SAEConfig(encoder.embed_dim, args.expansion * encoder.embed_dim, activation="ReLU"))
    sae = sae.to(device).eval()
    sae_batch = 4096 if device.type == "cuda" else 512
    figures.append(
        Figure(
            "SAE encode",
            sae_alone(sae, 16 * sae_batch, sae_batch, device),
            f"{sae.n_latents} latents",
        )
    )
    cfg = PrecomputeConfig(
        names=False, n_workers=args.workers, batch_size=args.batch_size, precision=run_precision
    )
    figures.append(
        Figure(
            "end-to-end precompute",
            end_to_end(encoder.at_precision(run_precision), sae, corpus, cfg),
            f"precision {run_precision}, decode {cfg.decode}",
        )
    )
    return figures, run_precision


def ratios(figures: list[Figure], precision: str) -> dict[str, float]:
    by_name = {f.name: f.per_s for f in figures}
    decode = max(v for k, v in by_name.items() if k.startswith("decode"))
    model = by_name.get(f"tower {precision}", 0.0)
    ceiling = min(decode, model)
    e2e = by_name["end-to-end precompute"]
    return {
        "decode_ceiling": decode,
        "model_ceiling": model,
        "ceiling": ceiling,
        "e2e": e2e,
        "ratio": e2e / ceiling if ceiling else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--clip", nargs="+", default=["ViT-B-32"], help="open_clip architectures (random init)"
    )
    p.add_argument(
        "--data",
        default=None,
        help="a folder of JPEG photos (default: Flickr8k beside or in the repo)",
    )
    p.add_argument("--n-images", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu, cuda (default: best available)")
    p.add_argument("--batch-size", type=int, default=0, help="0: sized to the device")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="PIL decoding processes"
    )
    p.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="default: fp32 fp16 bf16 on CUDA, fp32 bf16 on a CPU",
    )
    p.add_argument("--expansion", type=int, default=8, help="SAE latents per embedding dimension")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args()
    from sae_explorer.corpus import load_corpus

    data = Path(args.data) if args.data else next((d for d in DATA_CANDIDATES if d.is_dir()), None)
    if data is None or not data.is_dir():
        raise SystemExit(f"no photos at {args.data or [str(d) for d in DATA_CANDIDATES]}")
    corpus = load_corpus(data, max_items=args.n_images)
    blobs = [
        torch.frombuffer(bytearray(Path(i.source).read_bytes()), dtype=torch.uint8)
        for i in corpus.items
    ]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M')} | torch {torch.__version__} | {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {load} | GPU: {gpu}\n{len(corpus)} photos from {data}",
        flush=True,
    )
    results = {}
    for arch in args.clip:
        figures, precision = measure(arch, args, corpus, blobs)
        r = ratios(figures, precision)
        print(f"\n{arch}:")
        for f in figures:
            print(f"  {f.name:<24} {f.per_s:>10,.1f} /s   {f.note}")
        print(
            f"  ceiling min(decode {r['decode_ceiling']:,.0f}, model {r['model_ceiling']:,.0f}) = {r['ceiling']:,.0f} img/s; "
            f"end-to-end {r['e2e']:,.0f} img/s = {r['ratio']:.0%} of it",
            flush=True,
        )
        results[arch] = {"figures": [f._asdict() for f in figures], **r}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
