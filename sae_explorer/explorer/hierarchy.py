"""The Matryoshka hierarchy as the Latent tab shows it: a latent's parents and children (from
the index's co-activations, ``sae_explorer.coactivation``) as one table with names, and the tree
of a latent's descendants."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sae_explorer.coactivation import HierarchyConfig, Relatives, TreeNode
from sae_explorer.explorer import names, queries

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

FAMILY_COLUMNS = ("relation", "latent", "level", "p_parent", "p_child", "n_both", "names")
"""``p_parent``: P(parent active | child active); ``p_child``: P(child active | parent active)."""


def family_table(
    explorer: Explorer, latent: int | float | str, config: HierarchyConfig | None = None
) -> pd.DataFrame:
    """The latent's parents, then its children: relation, latent, level, p_parent, p_child,
    n_both (items where both are active), names (+ the release's names)."""
    latent_id = queries.check_latent(explorer, latent)
    family = explorer.coactivations.family(latent_id, config or HierarchyConfig())
    parts = [_rows("parent", family.parents, explorer), _rows("child", family.children, explorer)]
    table = pd.concat(parts, ignore_index=True) if any(len(p) for p in parts) else parts[0]
    return names.with_release_names(explorer, table)


def _rows(relation: str, relatives: Relatives, explorer: Explorer) -> pd.DataFrame:
    ids = relatives.latent_ids
    return pd.DataFrame(
        {
            "relation": [relation] * len(ids),
            "latent": ids,
            "level": relatives.levels,
            "p_parent": np.round(relatives.p_parent, 3),
            "p_child": np.round(relatives.p_child, 3),
            "n_both": relatives.n_both,
            "names": [names.names_text(explorer, int(i), 2) for i in ids],
        },
        columns=list(FAMILY_COLUMNS),
    )


def descendant_tree(
    explorer: Explorer,
    root: int | float | str,
    max_depth: int = 2,
    max_children: int = 5,
    config: HierarchyConfig | None = None,
) -> list[TreeNode]:
    """The tree of the root's children, grandchildren, ... (depth first)."""
    root_id = queries.check_latent(explorer, root)
    return explorer.coactivations.descendants(
        root_id, max_depth, max_children, config or HierarchyConfig()
    )
