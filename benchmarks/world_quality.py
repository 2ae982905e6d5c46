"""Quality of the built-in shapes world's models, measured against the world's ground truth.

    python benchmarks/world_quality.py [--clip builtin:shapes] [--sae builtin:shapes] [--n 2000]

Prints held-out zero-shot accuracy per attribute, the best-detecting MSAE latent per attribute
value (F1, Matryoshka level), how many values have a latent at F1 >= 0.9, and reconstruction
(cosine, FVU, L0) of held-out image and text embeddings; also the offline load times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import quality, shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clip", default="builtin:shapes", help="encoder name for load_encoder")
    parser.add_argument("--sae", default="builtin:shapes", help="SAE source for load_sae")
    parser.add_argument("--n", type=int, default=2000, help="held-out items")
    parser.add_argument("--seed", type=int, default=shapes.HELDOUT_SEED, help="held-out seed")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    encoder = load_encoder(args.clip, device="cpu")
    t1 = time.perf_counter()
    sae = load_sae(args.sae)
    t2 = time.perf_counter()
    encoder.check_sae(sae)
    report = quality.world_report(encoder, sae, n_items=args.n, seed=args.seed)
    t3 = time.perf_counter()
    print(
        f"load: encoder {t1 - t0:.2f} s, SAE {t2 - t1:.2f} s (after imports); report {t3 - t2:.1f} s"
    )
    print(quality.format_report(report))
    if args.json:
        data = {
            "n_items": report.n_items,
            "seed": args.seed,
            "zero_shot": report.zero_shot,
            "matches": [m._asdict() for m in report.matches],
            "n_detected_f1_0.9": report.n_detected,
            "image_reconstruction": report.image_reconstruction._asdict(),
            "text_reconstruction": report.text_reconstruction._asdict(),
            "load_seconds": {"encoder": t1 - t0, "sae": t2 - t1},
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
