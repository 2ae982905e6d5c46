"""Latent names as the pages show them: ours (vocabulary names stored with the index) and, beside
them, the SAE release's own names when it ships some."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

RELEASE_NAMES_COLUMN = "MSAE names"
"""The column of the SAE release's own names, in latent tables (only when the release has them)."""


def names_of(explorer: Explorer, latent_id: int, n: int = 5) -> list[tuple[str, float]]:
    """Best vocabulary names with scores for one latent (empty if the index has none)."""
    if explorer.names is None:
        return []
    return [(c.name, c.cosine) for c in explorer.names.top(latent_id)[:n]]


def names_text(explorer: Explorer, latent_id: int, n: int = 3) -> str:
    return ", ".join(f"{a} ({b:.2f})" for a, b in names_of(explorer, latent_id, n))


def with_release_names(explorer: Explorer, table: pd.DataFrame, n: int = 3) -> pd.DataFrame:
    """``table`` (a ``latent`` and a ``names`` column) with the release's names right after
    ours; unchanged when the release has no names."""
    if explorer.release_names is None:
        return table
    at = list(table.columns).index("names") + 1
    column = [explorer.release_names.text(int(i), n) for i in table["latent"]]
    table = table.copy()
    table.insert(at, RELEASE_NAMES_COLUMN, column)
    return table


def names_table(explorer: Explorer, latent_id: int, n: int = 10) -> pd.DataFrame:
    """Our names with scores (name, score) and, beside them rank by rank, the release's
    (MSAE name, MSAE cosine) when it has any."""
    ours = pd.DataFrame(names_of(explorer, latent_id, n), columns=["name", "score"]).round(4)
    if explorer.release_names is None:
        return ours
    theirs = pd.DataFrame(
        explorer.release_names.top(latent_id, n), columns=["MSAE name", "MSAE cosine"]
    ).round(4)
    return pd.concat([ours, theirs], axis=1).astype(object).where(lambda df: df.notna(), "")
