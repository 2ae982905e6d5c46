"""Ground truth recovered: how many of the shapes world's 16 attribute values an SAE latent
detects at F1 >= 0.9, for several training attempts, beside what a linear probe can reach.

    nice -n 10 python benchmarks/ground_truth.py [--attempts baseline,resample] [--n 2000]

Data: the built-in world's CLIP embeddings of the SAE's training set (12,000 images of seed 1
and 12,000 texts, as ``python -m sae_explorer.worlds.shapes train`` builds it). Each attempt
trains an SAE on them and is scored as ``benchmarks/world_quality.py`` scores the shipped one:
per attribute value the latent and threshold with the best F1 on 2,000 training-seed images,
F1 measured on 2,000 held-out images (seed 2). The codes are what ``sae.encode`` gives (the
explorer's view); TopK attempts are also scored on their TopK codes (``+topk`` rows).

The ceiling: a latent is (up to the TopK selection) a thresholded linear read-out of the
embedding, so no latent can beat the best linear probe by much. Per value, a logistic
regression on the standardised image embeddings of 8,000 other images (seed 7), its threshold
set for the best F1 on them, is scored on the same held-out images.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score, precision_recall_curve
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from sae_explorer.encoder import load_encoder
from sae_explorer.train import TrainConfig, train_sae
from sae_explorer.worlds import quality, shapes, train_shapes

VALUES = [(name, v) for name, values in shapes.ATTRIBUTES.items() for v in values]
PROBE_SEED = 7
SHIPPED = dict(n_latents=256, architecture="matryoshka", k=4, epochs=40.0, batch_size=1024, lr=1e-3)
ATTEMPTS: dict[str, dict] = {
    "baseline": {},
    "auxk": dict(aux_loss="auxk"),
    "resample": dict(resample="dead_and_dense", dense_fraction=0.5),
    "width64": dict(n_latents=64),
    "width64-resample": dict(n_latents=64, resample="dead_and_dense", dense_fraction=0.5),
    "width128-resample": dict(n_latents=128, resample="dead_and_dense", dense_fraction=0.5),
    "k2": dict(k=2),
    "steps4x": dict(epochs=160.0),
    "topk32": dict(architecture="topk", n_latents=32),
    "topk32-auxk-resample": dict(
        architecture="topk", n_latents=32, aux_loss="auxk", resample="dead"
    ),
}


class Images(NamedTuple):
    x_nd: torch.Tensor
    attributes: list[dict[str, str]]


class Attempt(NamedTuple):
    label: str
    steps: int
    train_seconds: float
    dead: int  # latents never active on the held-out images (in the scored codes)
    dense: int  # latents active on more than half of them
    f1_v: list[float]
    image_cosine: float


def images(encoder, n: int, seed: int) -> Images:
    items = shapes.make_items(n, seed)
    x_nd = encoder.encode_images([it.image for it in items], batch_size=256)
    return Images(x_nd, [it.attributes for it in items])


def probe_ceiling(fit: Images, held: Images) -> list[float]:
    """Held-out F1 of the best-F1-thresholded logistic regression probe, per value."""
    scaler = StandardScaler().fit(fit.x_nd.numpy())
    x_fit, x_held = scaler.transform(fit.x_nd.numpy()), scaler.transform(held.x_nd.numpy())
    f1s = []
    for name, value in VALUES:
        y_fit = np.array([a[name] == value for a in fit.attributes])
        y_held = np.array([a[name] == value for a in held.attributes])
        probe = LogisticRegression(max_iter=5000).fit(x_fit, y_fit)
        precision, recall, thresholds = precision_recall_curve(
            y_fit, probe.decision_function(x_fit)
        )
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        threshold = thresholds[int(np.argmax(f1[:-1]))]
        f1s.append(float(f1_score(y_held, probe.decision_function(x_held) >= threshold)))
    return f1s


def score(label, sae, encode, steps, seconds, cal: Images, held: Images) -> Attempt:
    with torch.no_grad():
        z_cal, z_held = encode(cal.x_nd), encode(held.x_nd)
        matches = quality.best_latents(
            z_cal, cal.attributes, z_held, sae.latent_levels(z_held), held.attributes
        )
        fired_l = (z_held != 0).float().mean(0)
        cosine = quality.reconstruction(sae, held.x_nd).cosine
    return Attempt(
        label,
        steps,
        seconds,
        int((fired_l == 0).sum()),
        int((fired_l > 0.5).sum()),
        [m.f1 for m in matches],
        cosine,
    )


def run_attempt(label: str, x_nd: torch.Tensor, cal: Images, held: Images) -> list[Attempt]:
    cfg = TrainConfig(
        **{**SHIPPED, **ATTEMPTS[label]}, seed=shapes.TRAIN_SEED, device="cpu", num_threads=1
    )
    result = train_sae(x_nd, cfg)
    steps, seconds = result.metrics["steps"], result.metrics["train_seconds"]
    rows = [score(label, result.sae, result.sae.encode, steps, seconds, cal, held)]
    if cfg.architecture == "topk":
        topk = lambda x: result.sae.encode(x, topk=cfg.k)  # noqa: E731
        rows.append(score(f"{label}+topk", result.sae, topk, steps, seconds, cal, held))
    return rows


def format_table(attempts: list[Attempt], ceiling: list[float]) -> str:
    short = [v[:5] for _, v in VALUES]
    head = f"| attempt | steps | train s | dead | dense | cos | {' | '.join(short)} | >=0.9 |"
    lines = [head, "|" + "---|" * (len(VALUES) + 7)]
    for a in attempts:
        cells = " | ".join(f"{f:.2f}" for f in a.f1_v)
        n = sum(f >= 0.9 for f in a.f1_v)
        lines.append(
            f"| {a.label} | {a.steps} | {a.train_seconds:.0f} | {a.dead} | {a.dense} | "
            f"{a.image_cosine:.3f} | {cells} | {n}/16 |"
        )
    cells = " | ".join(f"{f:.2f}" for f in ceiling)
    n = sum(f >= 0.9 for f in ceiling)
    lines.append(f"| linear probe (ceiling) | | | | | | {cells} | {n}/16 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", default=",".join(ATTEMPTS), help="comma-separated names")
    parser.add_argument("--n", type=int, default=2000, help="calibration and held-out images")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    labels = args.attempts.split(",")
    unknown = sorted(set(labels) - set(ATTEMPTS))
    if unknown:
        parser.error(f"unknown attempts {unknown}; choose from {sorted(ATTEMPTS)}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    encoder = load_encoder("builtin:shapes", device="cpu")
    x_nd = train_shapes.world_sae_data(encoder, 12_000, shapes.TRAIN_SEED)
    cal = images(encoder, args.n, shapes.TRAIN_SEED)
    held = images(encoder, args.n, shapes.HELDOUT_SEED)
    ceiling = probe_ceiling(images(encoder, 4 * args.n, PROBE_SEED), held)
    print(f"data and probes: {time.perf_counter() - t0:.0f} s", flush=True)
    attempts: list[Attempt] = []
    for label in tqdm(labels, desc="attempts"):
        attempts += run_attempt(label, x_nd, cal, held)
        tqdm.write("\n".join(format_table(attempts, ceiling).splitlines()[2:-1]))
    table = format_table(attempts, ceiling)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
