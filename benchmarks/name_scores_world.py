"""Names scored against the data, checked on the built-in shapes world where the truth is known.

    python benchmarks/name_scores_world.py [--n 2000] [--report-n 2000]

For each of the world's 16 attribute values, the latent that detects it best (chosen as the world
quality report does: F1 of "activation above a threshold", threshold and latent picked on
training-seed images) is looked up in an index of ``builtin:shapes?n=<n>`` named from the world's
vocabulary; the script prints that latent's top name when ranked by detection AUROC (what the app
shows) and when ranked by decoder cosine (before scoring), with their AUROCs, and counts for how
many values the top name is the value itself (backgrounds are named "<colour> background").
Also prints how many latents are named at all, and how long scoring took.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer.explorer_startup import world_explorer
from sae_explorer.name_scores import AUROC_FLOOR, UNNAMED
from sae_explorer.naming import LatentNames
from sae_explorer.worlds import quality, shapes


class ValueNames(NamedTuple):
    attribute: str
    value: str
    latent: int
    f1: float
    by_auroc: str  # top name as shown (UNNAMED below the floor)
    auroc: float
    by_cosine: str  # the candidate with the best decoder cosine
    cosine_auroc: float


def value_words() -> dict[tuple[str, str], str]:
    """(attribute, value) -> the world vocabulary's word for it."""
    pairs = [(a, v) for a, values in shapes.ATTRIBUTES.items() for v in values]
    return dict(zip(pairs, shapes.vocabulary()))


def names_of_values(names: LatentNames, matches: list[quality.LatentMatch]) -> list[ValueNames]:
    rows = []
    for m in matches:
        top = names.top(m.latent)
        best_cos = max(top, key=lambda c: c.cosine)
        rows.append(
            ValueNames(
                m.attribute,
                m.value,
                m.latent,
                m.f1,
                names.label(m.latent),
                top[0].auroc,
                best_cos.name,
                best_cos.auroc,
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="world items indexed (x2: image+text)")
    parser.add_argument("--report-n", type=int, default=2000, help="items choosing best latents")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        explorer = world_explorer(cache, n_items=args.n)
        t_index = time.perf_counter() - t0
        names = explorer.names
        assert names is not None and names.scored
        report = quality.world_report(explorer.encoder, explorer.sae, n_items=args.report_n)
    words = value_words()
    rows = names_of_values(names, report.matches)
    hits = sum(r.by_auroc == words[(r.attribute, r.value)] for r in rows)
    hits_cos = sum(r.by_cosine == words[(r.attribute, r.value)] for r in rows)
    n_named = int(names.named_l.sum())
    print(
        f"index of {args.n} world items built, named and scored in {t_index:.1f} s "
        f"(scored on {names.scored_on}s); floor AUROC {AUROC_FLOOR}"
    )
    print(
        f"{'attribute':<11} {'value':<8} {'latent':>6} {'F1':>5}  {'top name (AUROC)':<26} by cosine (AUROC)"
    )
    for r in rows:
        print(
            f"{r.attribute:<11} {r.value:<8} {r.latent:>6} {r.f1:5.2f}  "
            f"{f'{r.by_auroc} ({r.auroc:.3f})':<26} {r.by_cosine} ({r.cosine_auroc:.3f})"
        )
    print(f"values whose best latent's top name is the value: {hits}/{len(rows)} ranked by AUROC")
    print(f"  ({hits_cos}/{len(rows)} when ranked by decoder cosine, before scoring)")
    print(f"latents named (a candidate at AUROC >= {AUROC_FLOOR}): {n_named}/{names.n_latents}")
    unnamed = [r for r in rows if r.by_auroc == UNNAMED]
    print(f"best latents left unnamed: {len(unnamed)}")
    if args.json:
        data = {
            "n_items": args.n,
            "floor": AUROC_FLOOR,
            "hits_by_auroc": hits,
            "hits_by_cosine": hits_cos,
            "n_named": n_named,
            "n_latents": names.n_latents,
            "rows": [r._asdict() for r in rows],
            "median_best_auroc": float(np.nanmedian(names.auroc_ln[:, 0])),
        }
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
