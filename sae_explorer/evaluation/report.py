"""The evaluation report: the numbers of an :class:`Evaluation` stamped with what produced them
(CLIP, SAE and corpus, each with its hash), as JSON, a Markdown table and a LaTeX table, and as
the table the command prints."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from sae_explorer.atomic import atomic_write_text
from sae_explorer.evaluation.fidelity import FidelityRow
from sae_explorer.evaluation.reconstruction import ReconstructionRow
from sae_explorer.evaluation.run import Evaluation, EvaluationConfig

SCHEMA = 1
JSON_FNAME, MARKDOWN_FNAME, LATEX_FNAME = "evaluation.json", "evaluation.md", "evaluation.tex"


class EvaluationStamp(NamedTuple):
    """What the numbers were computed from."""

    clip: str  # CLIP model id
    clip_hash: str  # sha256 of its cache id (model id, plus a fingerprint of local weight files)
    sae: str  # SAE source as loaded
    sae_hash: str  # content hash of the SAE weights
    corpus: str  # corpus source
    corpus_hash: str | None  # the corpus manifest's hash (None: an index of bare embeddings)
    index_key: str  # the activation index whose cached embeddings were read
    created_at: str  # UTC, ISO 8601


def clip_hash(cache_id: str) -> str:
    return hashlib.sha256(cache_id.encode()).hexdigest()


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Report(NamedTuple):
    stamp: EvaluationStamp
    config: EvaluationConfig
    evaluation: Evaluation
    seconds: float  # wall time of the evaluation

    def to_dict(self) -> dict:
        ev = self.evaluation
        return {
            "schema": SCHEMA,
            "stamp": self.stamp._asdict(),
            "config": asdict(self.config),
            "seconds": round(self.seconds, 3),
            "n_latents": ev.n_latents,
            "cuts": ev.cuts,
            "reconstruction": [_finite(row._asdict()) for row in ev.reconstruction],
            "fidelity": [_finite(row._asdict()) for row in ev.fidelity],
            "per_class": [_finite(row._asdict()) for row in ev.per_class],
            "fidelity_note": ev.fidelity_note,
        }


def _finite(row: dict) -> dict:
    """NaN becomes None: JSON has no NaN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


# --------------------------------------------------------------------------- tables
RECON_COLUMNS = {
    "modality": "modality",
    "cut": "cut",
    "fvu": "FVU",
    "cosine": "cosine",
    "l0": "L0 (count)",
    "sparsity": "sparsity (MSAE's L0)",
    "dead_latents": "dead",
    "cknna_codes": "CKNNA(x, z)",
    "cknna_recon": "CKNNA(x, x̂)",
}
FIDELITY_COLUMNS = {
    "task": "labels",
    "modality": "modality",
    "cut": "cut",
    "n_items": "items",
    "accuracy_original": "acc. CLIP",
    "accuracy_reconstruction": "acc. spliced",
    "agreement": "agreement",
    "kl": "KL",
    "agreement_with_error": "agreement (+error)",
    "kl_with_error": "KL (+error)",
}


def reconstruction_table(evaluation: Evaluation) -> pd.DataFrame:
    frame = pd.DataFrame(evaluation.reconstruction, columns=list(ReconstructionRow._fields))
    return frame[list(RECON_COLUMNS)].rename(columns=RECON_COLUMNS)


def fidelity_table(evaluation: Evaluation) -> pd.DataFrame:
    frame = pd.DataFrame(evaluation.fidelity, columns=list(FidelityRow._fields))
    return frame[list(FIDELITY_COLUMNS)].rename(columns=FIDELITY_COLUMNS)


def _formatted(frame: pd.DataFrame) -> pd.DataFrame:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, float):
            text = f"{v:.4f}" if abs(v) < 1000 else f"{v:.0f}"
            return "0.0000" if text == "-0.0000" else text  # rounding noise around zero
        return str(v)

    return frame.astype(object).map(cell)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table of the formatted cells."""
    shown = _formatted(frame)
    lines = ["| " + " | ".join(map(str, shown.columns)) + " |"]
    lines.append("|" + "|".join(" --- " for _ in shown.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


LATEX_ESCAPES = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "x̂": r"$\hat{x}$"}


def latex_table(frame: pd.DataFrame, caption: str) -> str:
    """A ``table`` with a ``tabular`` of the formatted cells (booktabs rules)."""

    def esc(text: str) -> str:
        for raw, escaped in LATEX_ESCAPES.items():
            text = text.replace(raw, escaped)
        return text

    shown = _formatted(frame)
    spec = "l" * 3 + "r" * (len(shown.columns) - 3)
    rows = [" & ".join(esc(c) for c in row) + r" \\" for row in shown.itertuples(index=False)]
    return "\n".join(
        [
            r"\begin{table}",
            r"\centering",
            rf"\caption{{{esc(caption)}}}",
            rf"\begin{{tabular}}{{{spec}}}",
            r"\toprule",
            " & ".join(esc(str(c)) for c in shown.columns) + r" \\",
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
        ]
    )


def stamp_lines(stamp: EvaluationStamp) -> list[str]:
    corpus_hash = stamp.corpus_hash or "none (precomputed embeddings)"
    return [
        f"CLIP {stamp.clip} (hash {stamp.clip_hash[:16]})",
        f"SAE {stamp.sae} (hash {stamp.sae_hash[:16]})",
        f"corpus {stamp.corpus} (hash {corpus_hash[:16]}), index {stamp.index_key[:16]}",
        f"computed {stamp.created_at}",
    ]


DEFINITIONS = (
    "FVU, cosine, L0, sparsity as MSAE defines them, in the SAE's input space: FVU = mean over "
    "items of var(x - x̂) / var(x); sparsity = mean fraction of zero latents (MSAE's 'L0'); "
    "L0 = mean count of non-zero latents; dead = latents zero on every item. CKNNA (k "
    "neighbours) on an evenly spread sample. Fidelity: CLIP zero-shot on x vs on the SAE's "
    "reconstruction x̂ (spliced); agreement = same top-1 class; KL = mean KL(p(x) || p(x̂)); "
    "'+error' adds the latents' error term back (must be 1.0 / 0)."
)


def markdown(report: Report) -> str:
    ev = report.evaluation
    parts = ["# SAE evaluation", "", *[f"- {line}" for line in stamp_lines(report.stamp)], ""]
    parts += [DEFINITIONS, "", "## Reconstruction", ""]
    parts += [markdown_table(reconstruction_table(ev)), ""]
    parts += ["## Spliced zero-shot fidelity", ""]
    if ev.fidelity:
        parts += [markdown_table(fidelity_table(ev)), ""]
        last = ev.cuts[-1]
        per_class = pd.DataFrame(ev.per_class)
        per_class = per_class[per_class["cut"] == last].drop(columns=["cut"])
        parts += [f"### Per class, cut {last}", "", markdown_table(per_class)]
    else:
        parts.append(ev.fidelity_note)
    return "\n".join(parts) + "\n"


def latex(report: Report) -> str:
    ev = report.evaluation
    lines = [f"% {line}" for line in stamp_lines(report.stamp)]
    lines += [latex_table(reconstruction_table(ev), "SAE reconstruction per cut")]
    if ev.fidelity:
        lines += [latex_table(fidelity_table(ev), "Spliced zero-shot fidelity per cut")]
    return "\n".join(lines) + "\n"


def text_table(report: Report) -> str:
    """What the command prints."""
    ev = report.evaluation
    out = [*stamp_lines(report.stamp), ""]
    out.append(_formatted(reconstruction_table(ev)).to_string(index=False))
    fidelity = _formatted(fidelity_table(ev)).to_string(index=False) if ev.fidelity else None
    out += ["", fidelity or ev.fidelity_note]
    return "\n".join(out)


def write_report(report: Report, out_dpath: str | Path) -> list[Path]:
    """``evaluation.json``, ``.md`` and ``.tex`` in ``out_dpath``, each written atomically."""
    out_dpath = Path(out_dpath)
    out_dpath.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_dict(), indent=1, allow_nan=False)
    return [
        atomic_write_text(out_dpath / JSON_FNAME, text + "\n"),
        atomic_write_text(out_dpath / MARKDOWN_FNAME, markdown(report)),
        atomic_write_text(out_dpath / LATEX_FNAME, latex(report)),
    ]
