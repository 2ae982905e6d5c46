"""Time and memory of scoring names against the data at full scale (synthetic arrays).

    python benchmarks/bench_name_scores.py [--n-items 100000] [--n-latents 24576] [--k 5]

Scores ``k`` candidates per latent for ``n_latents`` latents over ``n_items`` image embeddings
(``--d`` wide) with ``--active`` latents active per item, candidates drawn from a ``--n-words``
vocabulary: the work :func:`sae_explorer.name_scores.detection_auroc` does once per vocabulary
when an index is named. Prints the seconds, the peak memory added, and a check of a few AUROCs
against ``sklearn.metrics.roc_auc_score``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_explorer.name_scores import detection_auroc


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=100_000)
    parser.add_argument("--n-latents", type=int, default=24_576)
    parser.add_argument("--n-words", type=int, default=3000)
    parser.add_argument("--k", type=int, default=5, help="candidates scored per latent")
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--active", type=int, default=64, help="active latents per item")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x_nd = rng.standard_normal((args.n_items, args.d), dtype=np.float32)
    t_vd = rng.standard_normal((args.n_words, args.d), dtype=np.float32)
    rows = np.repeat(np.arange(args.n_items), args.active)
    # Zipf-like latent frequencies, as real SAEs have: a few common latents, many rare ones.
    cols = (rng.zipf(1.3, size=len(rows)) - 1) % args.n_latents
    active_nl = scipy.sparse.csc_matrix(
        (np.ones(len(rows), dtype=bool), (rows, cols)), shape=(args.n_items, args.n_latents)
    )
    word_ids_lk = rng.integers(0, args.n_words, size=(args.n_latents, args.k))
    before = peak_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    auroc_lk = detection_auroc(x_nd, t_vd, active_nl, word_ids_lk)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"{args.n_latents} latents x {args.k} candidates ({len(np.unique(word_ids_lk))} distinct "
        f"words) over {args.n_items} items, {active_nl.nnz} active entries: {seconds:.1f} s "
        f"({cpu_seconds:.1f} s of CPU), "
        f"peak memory +{peak_mib() - before:.0f} MiB"
    )
    from sklearn.metrics import roc_auc_score

    unit_nd = x_nd / np.linalg.norm(x_nd, axis=1, keepdims=True)
    checked = 0
    for latent in np.flatnonzero(~np.isnan(auroc_lk[:, 0]))[:3]:
        t_d = t_vd[word_ids_lk[latent, 0]]
        want = roc_auc_score(active_nl[:, latent].toarray().ravel(), unit_nd @ t_d)
        # float32 cosines computed in another order may swap near-ties: equal to 1e-6
        assert abs(want - auroc_lk[latent, 0]) < 1e-6, (latent, want, auroc_lk[latent, 0])
        checked += 1
    print(f"checked {checked} AUROCs against sklearn: equal to 1e-6")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
