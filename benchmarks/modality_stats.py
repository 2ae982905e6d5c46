"""Text statistics for an image-trained SAE, measured on the built-in shapes world.

    python benchmarks/modality_stats.py [--n-train 12000] [--n-eval 1000] [--epochs 40]

Trains a Matryoshka SAE with the project trainer (MSAE recipe) on the built-in CLIP's embeddings
of world images only (seed 1), then indexes held-out shapes (seed 2) with ``precompute``, which
computes text statistics from the corpus's captions (and, for the same images without captions,
from the vocabulary). For every held-out image and its caption it prints the caption's
reconstruction (cosine, FVU, L0) and how well the caption's latents agree with its image's
(cosine between the two latent vectors, next to the same for shuffled pairs; Jaccard of their
top-k latent sets), with the checkpoint's image statistics and with each kind of text statistics.
The built-in SAE (trained on images and texts) is the reference row. A few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer import load_sae
from sae_explorer.corpus import load_corpus
from sae_explorer.encoder import ClipEncoder, load_encoder
from sae_explorer.precompute import PrecomputeConfig, precompute
from sae_explorer.sae import SAE
from sae_explorer.train import TrainConfig, train_sae
from sae_explorer.worlds import shapes


class Pairs(NamedTuple):
    """Held-out images and their captions, as raw CLIP embeddings (row i of each: one shape)."""

    source: str  # the corpus
    image_nd: torch.Tensor
    text_nd: torch.Tensor


class Row(NamedTuple):
    label: str
    text_cosine: float
    text_fvu: float
    text_l0: float
    pair_cosine: float  # latents of an image vs its own caption
    shuffled_cosine: float  # ... vs another image's caption
    jaccard: float  # top-k latent sets of an image and its caption


def embed_world_images(encoder: ClipEncoder, n: int, seed: int) -> torch.Tensor:
    images = [item.image for item in shapes.make_items(n, seed=seed)]
    return encoder.encode_images(images, batch_size=256)


def held_out_pairs(encoder: ClipEncoder, n: int) -> Pairs:
    source = f"builtin:shapes?n={n}&seed={shapes.HELDOUT_SEED}"
    corpus = load_corpus(source)
    image_pos = [i for i, item in enumerate(corpus.items) if item.modality == "image"]
    images = [corpus.load_image(i) for i in image_pos]
    captions = [corpus.items[i + 1].source for i in image_pos]  # each image, then its caption
    assert all(corpus.items[i + 1].modality == "text" for i in image_pos)
    return Pairs(source, encoder.encode_images(images, 256), encoder.encode_texts(captions))


@torch.inference_mode()
def measure(label: str, image_sae: SAE, text_sae: SAE, pairs: Pairs, k: int) -> Row:
    """Caption reconstruction and image-caption latent agreement, texts through ``text_sae``."""
    x_nd = pairs.text_nd
    out = text_sae.forward(x_nd)
    cosine = torch.cosine_similarity(x_nd, out.x_hat_bd, dim=-1).mean()
    fvu = ((x_nd - out.x_hat_bd) ** 2).sum() / ((x_nd - x_nd.mean(0)) ** 2).sum()
    z_text_nl = out.z_bl
    z_image_nl = image_sae.encode(pairs.image_nd)
    pair_cos = torch.cosine_similarity(z_image_nl, z_text_nl, dim=-1)
    shuffled = torch.roll(z_text_nl, shifts=1, dims=0)  # neighbouring draws: other shapes
    shuffled_cos = torch.cosine_similarity(z_image_nl, shuffled, dim=-1)
    top_image_nk = z_image_nl.topk(k, dim=-1).indices
    top_text_nk = z_text_nl.topk(k, dim=-1).indices
    shared_n = (top_image_nk[:, :, None] == top_text_nk[:, None, :]).any(-1).sum(-1)
    jaccard = shared_n / (2 * k - shared_n)
    return Row(
        label,
        float(cosine),
        float(fvu),
        float((z_text_nl > 0).sum(-1).float().mean()),
        float(pair_cos.nan_to_num().mean()),
        float(shuffled_cos.nan_to_num().mean()),
        float(jaccard.float().mean()),
    )


def modality_gap(pairs: Pairs) -> str:
    """How far the caption mean sits from the image mean, next to the images' own spread."""
    mean_image_d, mean_text_d = pairs.image_nd.mean(0), pairs.text_nd.mean(0)
    gap = float((mean_text_d - mean_image_d).norm())
    spread = float((pairs.image_nd - mean_image_d).norm(dim=-1).mean())
    return (
        f"modality gap: |mean(captions) - mean(images)| = {gap:.3f}; images lie {spread:.3f} "
        f"from their mean on average (ratio {gap / spread:.2f})"
    )


def format_table(rows: list[Row], k: int, n: int) -> str:
    lines = [
        f"{n} held-out shapes, each image with its caption; caption latents vs image latents",
        f"| texts encoded with | text cosine | text FVU | text L0 | latent cosine, pair "
        f"| latent cosine, shuffled | top-{k} Jaccard |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.text_cosine:.4f} | {r.text_fvu:.4f} | {r.text_l0:.1f} | "
            f"{r.pair_cosine:.3f} | {r.shuffled_cosine:.3f} | {r.jaccard:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=12_000, help="world images to train on")
    parser.add_argument("--n-eval", type=int, default=1000, help="held-out shapes")
    parser.add_argument("--epochs", type=float, default=40.0, help="training epochs")
    parser.add_argument("--k", type=int, default=8, help="top-k latents for the Jaccard")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    encoder = load_encoder("builtin:shapes", device="cpu")
    x_train = embed_world_images(encoder, args.n_train, shapes.TRAIN_SEED)
    t_embed = time.perf_counter() - t0
    cfg = TrainConfig(  # the built-in SAE's recipe, on images only
        n_latents=256,
        k=4,
        epochs=args.epochs,
        batch_size=1024,
        lr=1e-3,
        seed=shapes.TRAIN_SEED,
        clip_model="builtin:shapes",
        training_modality="image",
    )
    trained = train_sae(x_train, cfg)
    sae = trained.sae
    val = trained.metrics["val"]
    print(
        f"image-only MSAE: {len(x_train)} images (embedded in {t_embed:.0f} s), "
        f"{trained.metrics['steps']} steps in {trained.metrics['train_seconds']:.0f} s; "
        "held-out images: cosine "
        f"{val['cosine']:.4f}, FVU {val['fvu']:.4f}"
    )
    pairs = held_out_pairs(encoder, args.n_eval)
    index_cfg = PrecomputeConfig(n_words=0, names=False)
    with tempfile.TemporaryDirectory() as cache:
        with_texts = precompute(encoder, sae, load_corpus(pairs.source), cache, index_cfg)
        images_only = load_corpus(pairs.source + "&modality=image")
        without_texts = precompute(encoder, sae, images_only, cache, index_cfg)
        corpus_stats = with_texts.input_stats.text  # read before the folder goes
        vocabulary_stats = without_texts.input_stats.text
    assert corpus_stats is not None and vocabulary_stats is not None
    variants = [
        ("checkpoint (image) statistics", sae),
        (f"text statistics: {corpus_stats.source}", sae.with_input_stats(corpus_stats.stats)),
        (
            f"text statistics: {vocabulary_stats.source}",
            sae.with_input_stats(vocabulary_stats.stats),
        ),
    ]
    rows = [measure(label, sae, text_sae, pairs, args.k) for label, text_sae in variants]
    both = load_sae("builtin:shapes")
    rows.append(measure("reference: built-in SAE (images + texts)", both, both, pairs, args.k))
    print(modality_gap(pairs))
    print(format_table(rows, args.k, args.n_eval))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
