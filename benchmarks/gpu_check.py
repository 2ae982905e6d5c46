"""The CUDA path, end to end, against the CPU: encoder, SAE, precompute, and the index speed.

Needs a CUDA device. Checks that the built-in world's CLIP (fp16 on the GPU) and SAE give the
CPU's embeddings and latents to fp16 tolerance, that ``precompute`` with both models on the GPU
builds the same index as on the CPU (top examples, frequencies), and times the index build of
``bench_index``'s synthetic embeddings with the SAE on the GPU. Prints what it measured.

    python benchmarks/gpu_check.py                 # 200,000 x 768 -> 6,144 for the index speed
    python benchmarks/gpu_check.py --n-items 50000
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
sys.path.insert(0, str(REPO / "benchmarks"))


def cosine_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def check_models(n: int) -> None:
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder

    gpu, cpu = load_encoder("builtin:shapes"), load_encoder("builtin:shapes", device="cpu")
    print(f"encoder on {gpu.device} ({gpu.input_dtype}), reference on {cpu.device}")
    corpus = load_corpus(f"builtin:shapes?n={n}")
    images = [
        corpus.load_image(i) for i in range(len(corpus)) if corpus.items[i].modality == "image"
    ]
    texts = [it.source for it in corpus.items if it.modality == "text"]
    x_img_g, x_img_c = gpu.encode_images(images), cpu.encode_images(images)
    x_txt_g, x_txt_c = gpu.encode_texts(texts), cpu.encode_texts(texts)
    print(
        f"  CLIP GPU vs CPU cosine, min over {len(images)} images {cosine_rows(x_img_g, x_img_c).min():.5f}, "
        f"over {len(texts)} texts {cosine_rows(x_txt_g, x_txt_c).min():.5f}"
    )
    pre = gpu.preprocess
    arrays = np.stack([pre.to_array(im) for im in images[:256]])
    same = torch.equal(pre.finish(arrays, "cuda").cpu(), pre.finish(arrays))
    print(f"  batched ToTensor + Normalize on the GPU bit-identical to the CPU's: {same}")
    sae_c = load_sae("builtin:shapes")
    sae_g = load_sae("builtin:shapes").to("cuda")
    x = torch.cat([x_img_c, x_txt_c])
    with torch.inference_mode():
        z_c, z_g = sae_c.encode(x), sae_g.encode(x.cuda()).cpu()
        rec = cosine_rows(sae_g.decode(z_g.cuda()).cpu(), sae_c.decode(z_c))
    same_top = (
        z_c.topk(4, dim=1).indices.sort(1).values == z_g.topk(4, dim=1).indices.sort(1).values
    )
    print(
        f"  SAE GPU vs CPU on the same inputs: max |dz| {float((z_c - z_g).abs().max()):.2e}, "
        f"top-4 latents identical for {same_top.all(1).float().mean():.2%} of items, "
        f"decode cosine min {rec.min():.6f}"
    )


def check_precompute(n: int) -> None:
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder
    from sae_explorer.precompute import PrecomputeConfig, precompute

    corpus = load_corpus(f"builtin:shapes?n={n}")
    cfg = PrecomputeConfig(names=False)
    built = {}
    for device in ("cuda", "cpu"):
        encoder = load_encoder("builtin:shapes", device=device)
        sae = load_sae("builtin:shapes").to(device)
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            index = precompute(encoder, sae, corpus, cache, cfg)
            seconds = time.perf_counter() - t0
            built[device] = {
                "s": seconds,
                "freq": index.frequency.copy(),
                "top": [set(index.top_examples(i, 10)["item_idx"]) for i in range(index.n_latents)],
                "n": index.n_items,
            }
    g, c = built["cuda"], built["cpu"]
    live = [i for i in range(len(c["top"])) if c["top"][i]]
    jaccard = np.mean(
        [len(g["top"][i] & c["top"][i]) / len(g["top"][i] | c["top"][i]) for i in live]
    )
    print(
        f"  precompute of {c['n']} items: GPU {g['s']:.1f} s, CPU {c['s']:.1f} s; latent frequency "
        f"max |diff| {np.abs(g['freq'] - c['freq']).max():.4f}; top-10 examples Jaccard "
        f"{jaccard:.3f} over {len(live)} live latents (fp16 CLIP on the GPU vs fp32 on the CPU)"
    )


def index_speed(n_items: int) -> None:
    from bench_index import make_sae

    from sae_explorer.precompute import PrecomputeConfig, index_embeddings

    x = np.random.default_rng(0).standard_normal((n_items, 768), dtype=np.float32)
    sae = make_sae(768, 6144, "TopKReLU", 64, 0.2).to("cuda")
    for workers in (2, 4, 8):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = PrecomputeConfig(names=False, sae_workers=workers)
            t0 = time.perf_counter()
            index = index_embeddings(sae, x, Path(tmp) / "index", cfg)
            seconds = time.perf_counter() - t0
            print(
                f"  index_embeddings {n_items:,} x 768 -> 6,144, SAE on the GPU, {workers} workers: "
                f"{seconds:.1f} s ({n_items / seconds:,.0f} items/s); stages {index.manifest['timings']}"
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-world", type=int, default=2000)
    p.add_argument("--n-items", type=int, default=200_000, help="0: skip the index speed")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
    )
    check_models(args.n_world)
    check_precompute(args.n_world)
    if args.n_items:
        index_speed(args.n_items)


if __name__ == "__main__":
    main()
