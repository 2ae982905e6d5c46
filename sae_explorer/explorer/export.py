"""Exports: one latent's page or one input's analysis written as JSON or CSV, stamped with what
produced it (models, hashes, time)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from sae_explorer.atomic import atomic_write_text
from sae_explorer.explorer import examples, inspect, latent_page
from sae_explorer.explorer.overview import public_id
from sae_explorer.explorer.queries import Query

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer


class Stamp(NamedTuple):
    """Provenance written into every export."""

    clip: str  # CLIP model id
    sae: str  # SAE source as loaded (a local path by its name only)
    sae_hash: str  # content hash of the SAE weights
    corpus: str  # corpus source as loaded, local paths by name ("precomputed embeddings": none)
    corpus_hash: str | None  # of the corpus the index was built from; None: from embeddings
    index_key: str  # content key of the index (CLIP, SAE, corpus or embedding rows, settings)
    exported_at: str  # UTC, ISO 8601


MAX_EXPORT_FILES = 200
"""Export files kept in the exports folder; older ones are removed as new ones are written."""


def exports_dpath_for(index_dpath: Path) -> Path:
    """Where exports of an index's explorer go: ``<cache>/exports`` for an index in the cache
    (``<cache>/index/<key>``), else an ``exports`` folder beside the index; one folder reused by
    every start, bounded by :func:`prune_exports`."""
    parent = Path(index_dpath).parent
    return (parent.parent if parent.name == "index" else parent) / "exports"


def prune_exports(dpath: Path, keep: int = MAX_EXPORT_FILES) -> list[Path]:
    """Remove all but the ``keep`` most recently written files of ``dpath``; returns them."""
    files = sorted(
        (p for p in Path(dpath).iterdir() if p.is_file()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for fpath in files[keep:]:
        fpath.unlink(missing_ok=True)
    return files[keep:]


def stamp(explorer: Explorer) -> Stamp:
    """What produced an export, and when."""
    return Stamp(
        clip=explorer.encoder.model_id,
        sae=public_id(explorer.sources.sae),
        sae_hash=explorer.sae_hash,
        corpus=public_id(explorer.sources.corpus),
        corpus_hash=explorer.corpus_hash,
        index_key=explorer.index_key,
        exported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def export_latent(
    explorer: Explorer, latent: int | float | str, dpath: str | Path, fmt: str = "json"
) -> Path:
    """Write the latent page (without images) as JSON or CSV into ``dpath``."""
    page = latent_page.latent_page(explorer, latent)
    tables = {
        "top_texts": page.top_texts,
        "top_items": examples.top_examples(explorer, page.latent_id, 50),
        "quantiles": page.quantiles,
        "names": page.names,
        "similar": page.similar,
        "family": page.family,
    }
    summary = page.summary._asdict()
    return write_export(explorer, f"latent-{page.latent_id}", summary, tables, dpath, fmt)


def export_inspect(
    explorer: Explorer,
    query: Query,
    dpath: str | Path,
    fmt: str = "json",
    max_frequency: float | None = None,
) -> Path:
    """Write one input's analysis (top latents, diagnostics) as JSON or CSV into ``dpath``;
    ``max_frequency`` as in :func:`~sae_explorer.explorer.inspect.inspect` (recorded)."""
    result = inspect.inspect(explorer, query, n_top=32, n_thumbs=0, max_frequency=max_frequency)
    summary = {
        "input": query.description,
        "kind": query.kind,
        "max_frequency": max_frequency,
        **result.diagnostics._asdict(),
    }
    # Named by the input, so different inputs exported into one folder never overwrite
    # each other (and exporting the same input again reuses its file).
    digest = hashlib.sha256(np.ascontiguousarray(query.x_d, np.float32).tobytes())
    if max_frequency is not None:
        digest.update(f"max_frequency={max_frequency}".encode())
    stem = f"inspect-{digest.hexdigest()[:10]}"
    return write_export(explorer, stem, summary, {"top_latents": result.table}, dpath, fmt)


def write_export(
    explorer: Explorer,
    stem: str,
    summary: dict[str, Any],
    tables: dict[str, pd.DataFrame],
    dpath: str | Path,
    fmt: str,
) -> Path:
    """``stem-<sae hash>.<fmt>`` in ``dpath``: the stamp, the summary and the tables.

    JSON holds the three as objects. CSV is one plain table that ``pandas.read_csv`` reads as it
    is: every table stacked with a ``table`` column naming it, the stamp and the summary first
    as ``key``/``value`` rows of tables ``stamp`` and ``summary``."""
    if fmt not in ("json", "csv"):
        raise ValueError(f"unknown export format {fmt!r}; choose 'json' or 'csv'")
    dpath = Path(dpath)
    dpath.mkdir(parents=True, exist_ok=True)
    stamped = stamp(explorer)._asdict()
    fpath = dpath / f"{stem}-{stamped['sae_hash'][:8]}.{fmt}"
    head = {"stamp": stamped, "summary": _jsonable(summary)}
    if fmt == "json":
        rows = {name: json.loads(df.to_json(orient="records")) for name, df in tables.items()}
        return atomic_write_text(fpath, json.dumps({**head, **rows}, indent=1))
    key_values = [
        pd.DataFrame({"key": list(d), "value": [_csv_value(v) for v in d.values()]})
        for d in head.values()
    ]
    stacked = pd.concat(
        [df.assign(table=name) for name, df in zip(head, key_values)]
        + [df.assign(table=name) for name, df in tables.items()],
        ignore_index=True,
        sort=False,
    )
    columns = ["table", *(c for c in stacked.columns if c != "table")]
    return atomic_write_text(fpath, stacked[columns].to_csv(index=False))


def _csv_value(value: Any) -> Any:
    """A summary or stamp value as one CSV cell (lists and objects as JSON)."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
