"""Do the heatmaps point at the truth? On the built-in shapes world, where each image's shape
mask is known exactly.

    python benchmarks/heatmap_validity.py [--per-value 12] [--methods tokens rise ...] [--latents]

For each of the 16 attribute values, the latent that detects it best (chosen on training-seed
images, as ``benchmarks/world_quality.py`` does) is mapped over ``--per-value`` held-out images
having that value. Per attribute kind it prints the heatmap's heat on the truth (the drawn shape;
background latents: everything but it) and the pointing-game hit rate (the hottest pixel on the
truth, ties shared; :mod:`sae_explorer.worlds.heatmap_truth`), for each method, after two
reference maps: random noise (chance) and the patch-resolution oracle (each 16 px cell's share of
the truth: the best a map at the tower's patch grid can point). ``--latents`` adds one row per
value: its latent, that latent's F1 and pointing. Target: pointing >= 90% per attribute kind.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer import attribution
from sae_explorer.checkpoints import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import heatmap_truth, quality, shapes
from sae_explorer.worlds.heatmap_truth import KindScore, MapScore


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


def print_rows(name: str, rows: list[KindScore], seconds: float | None = None) -> None:
    for row in rows:
        took = f"{seconds:>8.1f}" if seconds is not None else f"{'':>8}"
        print(f"{name:<10} {row.kind:<11} {row.heat_on_truth:>14.1%} {row.pointing:>9.1%} {took}")


def method_scores(encoder, sae, matches, examples, method, config) -> list[tuple[str, MapScore]]:
    """``tokens``: the last-layer token split (a diagnostic, not one of the app's methods)."""
    scores = []
    for m in tqdm(matches, desc=method, leave=False):
        for i in examples[(m.attribute, m.value)]:
            image = shapes.make_item(i, heatmap_truth.VALIDITY_SEED).image
            if method == "tokens":
                map_hw = attribution.token_heatmaps(encoder, sae, image, [m.latent], config)[0]
            else:
                maps = attribution.latent_heatmaps(encoder, sae, image, [m.latent], method, config)
                map_hw = maps.maps_mhw[0]
            truth_hw = heatmap_truth.truth_mask(i, m.attribute)
            scores.append((f"{m.attribute}/{m.value}", heatmap_truth.score_map(map_hw, truth_hw)))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-value", type=int, default=12, help="held-out images per value")
    parser.add_argument("--calibration", type=int, default=600, help="items to pick latents on")
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(attribution.METHODS),
        choices=[*attribution.METHODS, "tokens"],
        help="the app's methods, and 'tokens': the last-layer token split (a diagnostic)",
    )
    parser.add_argument("--patch", type=int, default=None, help="default: each method's own")
    parser.add_argument(
        "--baseline", default="quietest", help="gradient: quietest (default) or mean (the old)"
    )
    parser.add_argument("--n-masks", type=int, default=512, help="rise: masks per map")
    parser.add_argument("--latents", action="store_true", help="also one row per value")
    args = parser.parse_args(argv)

    encoder = load_encoder("builtin:shapes", device="cpu")
    sae = load_sae("builtin:shapes")
    matches = best_latents(encoder, sae, args.calibration)
    examples = heatmap_truth.examples_per_value(
        [(m.attribute, m.value) for m in matches], args.per_value
    )
    patch = attribution.tower_patch_size(encoder.model, shapes.IMAGE_SIZE)
    print(f"built-in world, {args.per_value} held-out images per attribute value, CPU")
    print(f"{'method':<10} {'kind':<11} {'heat on truth':>14} {'pointing':>9} {'seconds':>8}")
    rng = np.random.default_rng(0)
    print_rows("random", heatmap_truth.reference_scores(examples, lambda t: rng.random(t.shape)))
    oracle = heatmap_truth.reference_scores(examples, lambda t: heatmap_truth.oracle_map(t, patch))
    print_rows(f"oracle{patch}", oracle)
    config = attribution.HeatmapConfig(
        patch=args.patch, n_masks=args.n_masks, baseline=args.baseline
    )
    per_value = {}
    for method in args.methods:
        t0 = time.perf_counter()
        scores = method_scores(encoder, sae, matches, examples, method, config)
        seconds = time.perf_counter() - t0
        kinds = [(key.split("/")[0], s) for key, s in scores]
        print_rows(method, heatmap_truth.by_kind(kinds), seconds)
        for key, s in scores:
            per_value.setdefault((method, key), []).append(s.pointing)
    if args.latents:
        print(f"\n{'method':<10} {'value':<20} {'latent':>6} {'F1':>6} {'pointing':>9}")
        for method in args.methods:
            for m in matches:
                hits = per_value[(method, f"{m.attribute}/{m.value}")]
                value = f"{m.attribute}/{m.value}"
                print(f"{method:<10} {value:<20} {m.latent:>6} {m.f1:>6.2f} {np.mean(hits):>9.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
