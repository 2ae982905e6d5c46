"""Two Matryoshka SAEs of the built-in shapes world trained with different seeds, compared.

    python benchmarks/compare_seeds.py [--seeds 1 2] [--epochs 40] [--n 2000] [--out DIR]

Both are trained exactly as the shipped world SAE (``sae_explorer/worlds/train_shapes.py``: the
same 24,000 embeddings of the world's tiny CLIP, 256 latents, k = 4, 40 epochs), differing only in
the trainer's seed (initialisation, held-out split, batch order). Latents are matched by decoder
cosine (Hungarian) and correlated over held-out images and captions (``--n`` items of each,
seed 2). Prints the summary, matched cosine per Matryoshka level, the same numbers for the two
untrained initialisations (what chance gives for 256 directions in 64 dimensions), and the
shipped SAE against the retrained one with its seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.index import median_levels
from sae_explorer.latent_matching import SAEComparison, compare_saes, modality_saes
from sae_explorer.sae import SAE
from sae_explorer.train import TrainConfig, train_sae
from sae_explorer.worlds import shapes, train_shapes


def train(x_nd: torch.Tensor, seed: int, epochs: float) -> SAE:
    recipe = train_shapes.SaeTrainConfig()
    cfg = TrainConfig(
        n_latents=recipe.n_latents,
        architecture="matryoshka",
        k=recipe.k,
        epochs=epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        seed=seed,
        device="cpu",
        clip_model="builtin:shapes",
    )
    return train_sae(x_nd, cfg).sae


def latent_levels(sae: SAE, x_nd: np.ndarray) -> np.ndarray:
    """Each latent's median Matryoshka level over the items whose levels keep it (-1: none), as
    the index computes it."""
    with torch.inference_mode():
        levels_nl = sae.latent_levels(sae.encode(torch.from_numpy(x_nd))).numpy()
    n_levels = len(sae.nesting_list)
    count_ln = np.stack([(levels_nl == j).sum(0) for j in range(n_levels)], axis=1)
    return median_levels(count_ln, n_levels).astype(np.int64)


def report(title: str, result: SAEComparison, levels_a: np.ndarray | None = None) -> None:
    s = result.summary
    print(
        f"{title}: mean matched cosine {s.mean_cosine:.3f}, cosine >= {s.threshold:g}: "
        f"{s.share_above_a:.1%} of A / {s.share_above_b:.1%} of B, mean activation correlation "
        f"{s.mean_correlation:.3f}, unmatched {s.n_unmatched_a} / {s.n_unmatched_b} "
        f"({s.n_items} held-out items)"
    )
    if levels_a is None:
        return
    print("  level  latents  mean cosine  cosine >= 0.7  mean correlation")
    for level in sorted(set(levels_a.tolist())):
        rows = levels_a == level
        cos, corr = result.matching.cosine_a[rows], result.correlation_a[rows]
        print(
            f"  {level:5d}  {rows.sum():7d}  {cos.mean():11.3f}  {(cos >= 0.7).mean():13.1%}  "
            f"{np.nanmean(corr) if np.isfinite(corr).any() else float('nan'):16.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs=2, default=[shapes.TRAIN_SEED, 2])
    parser.add_argument("--epochs", type=float, default=train_shapes.SaeTrainConfig().epochs)
    parser.add_argument("--n", type=int, default=2000, help="held-out images (and captions)")
    parser.add_argument("--out", type=Path, help="also save both SAEs here (project format)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny SAEs train fastest on one thread

    encoder = load_encoder("builtin:shapes", device="cpu")
    t0 = time.perf_counter()
    x_train = train_shapes.world_sae_data(encoder, 12_000, shapes.TRAIN_SEED)
    items = shapes.make_items(args.n, shapes.HELDOUT_SEED)
    x_img = encoder.encode_images([it.image for it in items], batch_size=256)
    x_txt = encoder.encode_texts([it.caption for it in items])
    x_nd = torch.cat([x_img, x_txt]).numpy().astype(np.float32)
    is_image_n = np.arange(len(x_nd)) < len(x_img)
    print(f"embeddings: {time.perf_counter() - t0:.0f} s")

    saes = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        saes.append(train(x_train, seed, args.epochs))
        print(f"trained seed {seed}: {time.perf_counter() - t0:.0f} s")
        if args.out:
            from sae_explorer.checkpoints import save_sae

            save_sae(saes[-1], args.out / f"seed-{seed}")

    def compare(a: SAE, b: SAE) -> SAEComparison:
        views = [modality_saes(sae, x_nd, is_image_n) for sae in (a, b)]
        return compare_saes(*views, x_nd, is_image_n)

    t0 = time.perf_counter()
    trained = compare(*saes)
    seconds = time.perf_counter() - t0
    title = f"seed {args.seeds[0]} (A) vs seed {args.seeds[1]} (B)"
    report(title, trained, latent_levels(saes[0], x_nd))
    print(f"  (matching and correlations: {seconds:.2f} s)")
    inits = [
        SAE(saes[0].cfg, generator=torch.Generator().manual_seed(s)).eval() for s in args.seeds
    ]
    report("untrained initialisations, same seeds", compare(*inits))
    shipped = load_sae("builtin:shapes")
    report(
        f"shipped world SAE (A) vs seed {args.seeds[0]} retrained (B)", compare(shipped, saes[0])
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
