"""Inputs to analyse and latents to open: an upload, a text or a corpus item becomes one
``Query``; a latent is named by its id or found by a search of the latent names."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import pandas as pd

from sae_explorer import naming
from sae_explorer.corpus import Modality
from sae_explorer.explorer import examples, names
from sae_explorer.images import check_image, check_text

if TYPE_CHECKING:
    from sae_explorer.explorer.state import Explorer

QueryKind = Literal["image", "text", "item"]


class Query(NamedTuple):
    """One input to analyse: its CLIP embedding and how to describe it. Small: fits in gr.State."""

    x_d: np.ndarray  # [n_inputs] float32, raw CLIP embedding
    kind: QueryKind
    description: str
    warnings: tuple[str, ...] = ()
    item: int | None = None  # corpus item index when kind == "item"
    text: str | None = None  # the text as analysed when kind == "text"


def image_query(explorer: Explorer, image: Any) -> Query:
    """Validate and encode an upload (path, bytes, PIL or array); ValueError on bad files."""
    checked = check_image(image, input_px=explorer.encoder.preprocess.input_px)
    x_d = explorer.batchers.image(checked.image)
    w, h = checked.image.size
    return Query(x_d, "image", f"uploaded image {w}x{h}", checked.warnings)


def text_query(explorer: Explorer, text: str | None) -> Query:
    checked = check_text(text)
    x_d = explorer.batchers.text(checked.text)
    shown = checked.text if len(checked.text) <= 80 else checked.text[:77] + "..."
    return Query(x_d, "text", f"text: {shown!r}", checked.warnings, text=checked.text)


def item_query(explorer: Explorer, item: int | float | str | None) -> Query:
    i = check_item(explorer, item)
    row = examples.normalise_examples(explorer.items.iloc[[i]].assign(item=i)).iloc[0]
    x_d = np.asarray(explorer.index.embeddings[i], dtype=np.float32)
    return Query(x_d, "item", f"corpus item {i} ({row['modality']}): {row['label']}", (), i)


def query_modality(explorer: Explorer, query: Query) -> Modality:
    """Whether the input is an image or a text (a corpus item: its own modality)."""
    if query.kind == "item":
        assert query.item is not None, "an item query names its item"
        return str(explorer.items["modality"].iloc[query.item])
    return "image" if query.kind == "image" else "text"


def check_item(explorer: Explorer, item: int | float | str | None) -> int:
    n = len(explorer.items)
    i = as_int(item, f"corpus item number in [0, {n})")
    if not 0 <= i < n:
        raise ValueError(f"corpus item {i} does not exist; items run from 0 to {n - 1}")
    return i


def check_latent(explorer: Explorer, latent: int | float | str | None) -> int:
    n = explorer.n_latents
    i = as_int(latent, f"latent id in [0, {n})")
    if not 0 <= i < n:
        raise ValueError(f"latent {i} does not exist; ids run from 0 to {n - 1}")
    return i


N_CANDIDATES = 5
"""Closest latents listed when a name matches no latent."""


def resolve_latent(explorer: Explorer, id_or_name: str | int | float | None) -> int:
    """A latent id, or the latent a name search finds ("blue", "striped cat").

    Anything that reads as a number ("12", "3.0", "1e3", "-2", "NaN", "1.5") is an id: a whole
    number in range opens that latent, any other number is refused, and none is ever searched
    for by name ("3.0" is not a word). A name resolves only when it shares a word with some
    latent's names; otherwise nothing is picked (the nearest decoder direction of a word no
    latent is named by is a guess, not an answer): the ValueError lists the closest latents
    with their cosines to choose from."""
    text = str(id_or_name if id_or_name is not None else "").strip()
    if not text:
        raise ValueError("give a latent id (e.g. 12) or a name to search for (e.g. blue)")
    if is_number(text):
        return check_latent(explorer, text)
    hits = naming.search_latents(
        text, explorer.encoder, explorer.saes.text, explorer.names, k=N_CANDIDATES
    )
    if hits.empty:
        raise ValueError(f"no latent is named like {text!r}; try another word or an id")
    if bool(hits["name_match"].iloc[0]):
        return int(hits["latent_id"].iloc[0])
    closest = ", ".join(
        f"#{int(i)} {names.names_text(explorer, int(i), 1) or 'unnamed'} (cosine {c:.2f})"
        for i, c in zip(hits["latent_id"], hits["cosine"])
    )
    raise ValueError(
        f"no latent is named like {text!r}. Closest by meaning: {closest}. Open one by its id, "
        f"or try another word."
    )


def search_latents(explorer: Explorer, query: str, n: int = 10) -> pd.DataFrame:
    """Latents whose names match ``query``: DataFrame latent, score, names."""
    query = (query or "").strip()
    if not query:
        raise ValueError("type a word to search the latent names for (e.g. blue)")
    hits = naming.search_latents(query, explorer.encoder, explorer.saes.text, explorer.names, k=n)
    table = pd.DataFrame(
        {
            "latent": hits["latent_id"].astype(int).to_numpy(),
            "score": hits["score"].astype(np.float64).round(3).to_numpy(),
            "names": [names.names_text(explorer, int(i)) for i in hits["latent_id"]],
        },
        columns=["latent", "score", "names"],
    )
    return names.with_release_names(explorer, table)


def is_number(text: str) -> bool:
    """Whether ``text`` reads as a number to Python ("3", "3.0", "1e3", "-2", "nan", "inf")."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_int(value: Any, what: str) -> int:
    """``value`` as a whole number; ValueError naming ``what`` is wanted otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"give a {what}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a number; give a {what}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{value!r} is not a whole number; give a {what}")
    return int(f)
