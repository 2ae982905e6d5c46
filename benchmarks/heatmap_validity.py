"""Do the heatmaps point at the truth? On the built-in shapes world, where each image's shape
mask is known exactly.

    python benchmarks/heatmap_validity.py [--per-value 10] [--methods occlusion gradient]

For each of the 16 attribute values, the latent that detects it best (chosen on training-seed
images, as ``benchmarks/world_quality.py`` does) is mapped over ``--per-value`` held-out images
having that value. Per attribute kind it prints the heatmap's mass inside the drawn shape
(background latents: outside it) and the pointing-game hit rate (the hottest pixel inside the
shape; background: outside), for each method. Target: pointing >= 90%.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer import attribution
from sae_explorer.checkpoints import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import quality, shapes


def best_latents(encoder, sae, n_items: int) -> list[quality.LatentMatch]:
    calibration = shapes.make_items(n_items, shapes.TRAIN_SEED)
    held = shapes.make_items(n_items, shapes.HELDOUT_SEED)
    with torch.no_grad():
        z_cal_nl = sae.encode(encoder.encode_images([it.image for it in calibration]))
        z_nl = sae.encode(encoder.encode_images([it.image for it in held]))
    return quality.best_latents(
        z_cal_nl,
        [it.attributes for it in calibration],
        z_nl,
        sae.latent_levels(z_nl),
        [it.attributes for it in held],
    )


def score_map(map_hw: np.ndarray, mask_hw: np.ndarray) -> tuple[float, bool]:
    """(share of the heat on the mask, whether the hottest pixel is on it)."""
    total = float(map_hw.sum())
    if total <= 0:
        return 0.0, False
    return float(map_hw[mask_hw].sum()) / total, bool(mask_hw.flat[int(map_hw.argmax())])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-value", type=int, default=10, help="held-out images per value")
    parser.add_argument("--calibration", type=int, default=600, help="items to pick latents on")
    parser.add_argument("--methods", nargs="+", default=list(attribution.METHODS))
    parser.add_argument("--patch", type=int, default=None, help="default: each method's own")
    args = parser.parse_args(argv)

    encoder = load_encoder("builtin:shapes", device="cpu")
    sae = load_sae("builtin:shapes")
    matches = best_latents(encoder, sae, args.calibration)
    n_scan = 40 * args.per_value  # held-out items scanned for each value's examples
    held = shapes.make_items(n_scan, shapes.HELDOUT_SEED + 1)  # unseen by the latent choice
    print(f"built-in world, {args.per_value} held-out images per attribute value, CPU")
    print(f"{'method':<10} {'kind':<11} {'mass on truth':>14} {'pointing':>9} {'seconds':>8}")
    for method in args.methods:
        by_kind: dict[str, list[tuple[float, bool]]] = {}
        t0 = time.perf_counter()
        for m in matches:
            indices = [i for i, it in enumerate(held) if it.attributes[m.attribute] == m.value]
            for i in indices[: args.per_value]:
                maps = attribution.latent_heatmaps(
                    encoder, sae, held[i].image, [m.latent], method, patch=args.patch
                )
                mask_hw = shapes.shape_mask(i, shapes.HELDOUT_SEED + 1)
                if m.attribute == "background":
                    mask_hw = ~mask_hw
                by_kind.setdefault(m.attribute, []).append(score_map(maps.maps_mhw[0], mask_hw))
        seconds = time.perf_counter() - t0
        for kind, scores in by_kind.items():
            mass, hits = np.mean([s[0] for s in scores]), np.mean([s[1] for s in scores])
            print(f"{method:<10} {kind:<11} {mass:>14.1%} {hits:>9.1%} {seconds:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
