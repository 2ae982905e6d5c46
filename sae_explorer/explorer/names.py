"""Latent names as the pages show them: ours (vocabulary names stored with the index) and, beside
them, the SAE release's own names when it ships some.

Wherever a name is shown its score is beside it in one format, ``name (0.91)``: the name's
detection AUROC on the corpus once the names are scored (:mod:`sae_explorer.name_scores`), only
names at or above the floor, and ``unnamed`` for a latent with none; for names not scored (an
index named before scores existed and opened without precompute) the decoder cosine."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from sae_explorer.name_scores import UNNAMED

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

RELEASE_NAMES_COLUMN = "MSAE names"
"""The column of the SAE release's own names, in latent tables (only when the release has them)."""


def names_of(explorer: Explorer, latent_id: int, n: int = 5) -> list[tuple[str, float]]:
    """Best vocabulary names with their scores for one latent: scored names at or above the
    floor with their AUROCs (empty for an unnamed latent), unscored ones with their cosines;
    empty if the index has no names."""
    names = explorer.names
    if names is None:
        return []
    if names.scored:
        return [(c.name, c.auroc) for c in names.named(latent_id)[:n]]
    return [(c.name, c.cosine) for c in names.top(latent_id)[:n]]


def names_text(explorer: Explorer, latent_id: int, n: int = 3) -> str:
    """``"red (0.93), orange (0.81)"``; ``"unnamed"`` when scored names leave the latent without
    one; empty when the index has no names."""
    text = ", ".join(f"{a} ({b:.2f})" for a, b in names_of(explorer, latent_id, n))
    return text or (UNNAMED if explorer.names is not None else "")


def score_label(explorer: Explorer) -> str:
    """What the number beside a name is, for table labels."""
    if explorer.names is not None and explorer.names.scored:
        return f"AUROC of the name finding the {explorer.names.scored_on}s the latent fires on"
    return "cosine of the name with the latent's decoder direction"


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
    """Every name candidate of ours, best first: name, AUROC (once scored; candidates below the
    floor included, ``named`` says which count), cosine; beside them rank by rank the release's
    (MSAE name, MSAE cosine) when it has any."""
    ours = candidates_table(explorer, latent_id, n)
    if explorer.release_names is None:
        return ours
    theirs = pd.DataFrame(
        explorer.release_names.top(latent_id, n), columns=["MSAE name", "MSAE cosine"]
    ).round(4)
    return pd.concat([ours, theirs], axis=1).astype(object).where(lambda df: df.notna(), "")


def candidates_table(explorer: Explorer, latent_id: int, n: int = 10) -> pd.DataFrame:
    """Our candidates: name, AUROC, named, cosine (scored) or name, cosine (not scored)."""
    names = explorer.names
    if names is None:
        return pd.DataFrame(columns=["name", "cosine"])
    top = names.top(latent_id)[:n]
    table = {"name": [c.name for c in top]}
    if names.scored:
        named = {c.name for c in names.named(latent_id)}
        table["AUROC"] = [c.auroc for c in top]
        table["named"] = [c.name in named for c in top]
    table["cosine"] = [c.cosine for c in top]
    return pd.DataFrame(table).round(4)
