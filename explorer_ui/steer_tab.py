"""The Steer tab: start from an upload, a text or a corpus item; move the sliders of its top
latents or add edits of any latent; decode to see the cosine to the original, zero-shot scores
and the nearest corpus items before and after; sweep one latent's strength against a random
latent of similar frequency."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

from explorer_ui import address
from explorer_ui.inputs import QueryInputs, query_inputs, wire_query_inputs
from explorer_ui.page_cache import cached, query_key
from explorer_ui.steer_slider import SteerSlider
from explorer_ui.tables import Table
from explorer_ui.thumbs import item_figures, thumbs_component, thumbs_html
from explorer_ui.wiring import bind, markdown_text
from sae_explorer.explorer import DEFAULT_LABEL_TEXT, DEFAULT_LABELS, Explorer, Query
from sae_explorer.steering import OPS, Edit

TAB_ID = "steer"
N_SLIDERS = 6
SLIDER_DECIMALS = 3
SLIDER_STEP = 10.0**-SLIDER_DECIMALS
EDIT_COLUMNS = ["latent", "op", "value"]
EditRow = list  # [latent id, op, value]: an extra edit as kept in gr.State
SliderStart = list  # [latent id, initial slider value]


class EditControls(NamedTuple):
    latent: gr.Textbox
    op: gr.Dropdown
    strength: gr.Number
    add_button: gr.Button
    clear_button: gr.Button
    table: gr.Dataframe


class DecodeOutputs(NamedTuple):
    """The components a :class:`DecodeView` fills, in its order."""

    cosine: gr.Markdown
    zero_shot: gr.Dataframe
    changes: gr.Dataframe
    images_before: gr.HTML
    images_after: gr.HTML
    neighbours_before: gr.Dataframe
    neighbours_after: gr.Dataframe


class SweepControls(NamedTuple):
    latent: gr.Textbox
    target: gr.Textbox
    button: gr.Button
    plot: gr.Plot


class SteerTab(NamedTuple):
    query: gr.State  # the session's starting Query
    slider_latents: gr.State  # list[SliderStart]: what each visible slider edits, from where
    extra_edits: gr.State  # list[EditRow]
    inputs: QueryInputs
    sliders: list[gr.Slider]  # N_SLIDERS, hidden until a start fills them
    edits: EditControls
    labels: gr.Textbox
    decode_button: gr.Button
    results: DecodeOutputs
    sweep: SweepControls

    @property
    def start_outputs(self) -> list[Any]:
        """The components :func:`start_outputs` fills, in its order: the new input's sliders,
        and everything derived from the previous input cleared (extra edits, results, sweep)."""
        return [
            self.query,
            self.inputs.description,
            self.slider_latents,
            *self.sliders,
            self.extra_edits,
            self.edits.table,
            *self.results,
            self.sweep.plot,
        ]


N_START_OUTPUTS = 3 + N_SLIDERS + 2 + len(DecodeOutputs._fields) + 1
"""How many outputs :func:`start_outputs` fills (``SteerTab.start_outputs``)."""


class SliderSpec(NamedTuple):
    latent_id: int
    label: str  # "#12 blue, navy"
    value: float  # the input's activation, on the slider's step grid
    maximum: float


class SteerStart(NamedTuple):
    query: Query
    description: str  # markdown
    sliders: list[SliderSpec]  # the input's top latents, strongest first (at most N_SLIDERS)

    @property
    def slider_latents(self) -> list[SliderStart]:
        return [[s.latent_id, s.value] for s in self.sliders]


class EditsView(NamedTuple):
    edits: list[EditRow]
    table: pd.DataFrame  # EDIT_COLUMNS


class DecodeView(NamedTuple):
    cosine: str  # markdown
    zero_shot: pd.DataFrame  # label, before, after
    changes: pd.DataFrame  # latent, names, before, after
    images_before: str  # HTML grids, cosine captions
    images_after: str
    neighbours_before: pd.DataFrame  # item, cosine, modality, label
    neighbours_after: pd.DataFrame


# ---------------------------------------------------------------------------------- layout
def layout() -> SteerTab:
    with gr.Tab("Steer", id=TAB_ID, elem_id=address.tab_panel_id(TAB_ID)):
        query, slider_latents, extra_edits = gr.State(None), gr.State([]), gr.State([])
        inputs = query_inputs("steer", "Start from", image_height=180, image_beside=True)
        with gr.Row():
            with gr.Column():
                gr.Markdown("**Top latents of the input** (drag to set a value)")
                sliders = [
                    SteerSlider(0, 1, visible=False, label=f"latent {i}") for i in range(N_SLIDERS)
                ]
                edits = edit_controls()
                labels = gr.Textbox(
                    value=DEFAULT_LABEL_TEXT,
                    label="Zero-shot labels",
                    info="Commas between labels, ';' between groups: each group is one softmax "
                    "(a colour and a shape are not rivals: a red circle is both).",
                )
                decode_button = gr.Button("Decode", variant="primary", elem_id="steer-decode")
            with gr.Column():
                cosine = gr.Markdown(elem_id="steer-cosine")
                zero_shot = Table(label="Zero-shot scores", interactive=False)
                changes = Table(label="Edited latents", interactive=False, elem_id="steer-changes")
        results = DecodeOutputs(cosine, zero_shot, changes, *neighbour_outputs())
        sweep = sweep_controls()
    return SteerTab(
        query,
        slider_latents,
        extra_edits,
        inputs,
        sliders,
        edits,
        labels,
        decode_button,
        results,
        sweep,
    )


def edit_controls() -> EditControls:
    with gr.Row():
        latent = gr.Textbox(
            elem_id="steer-add-latent", label="Add latent (id or name)", placeholder="12 or blue"
        )
        op = gr.Dropdown(list(OPS), value="set", label="Edit")
        strength = gr.Number(value=1.0, label="Strength (set: x corpus max; scale: factor)")
    with gr.Row():
        add_button = gr.Button("Add edit", size="sm", elem_id="steer-add")
        clear_button = gr.Button("Clear edits", size="sm")
    table = Table(
        headers=EDIT_COLUMNS, label="Extra edits", interactive=False, elem_id="steer-edits"
    )
    return EditControls(latent, op, strength, add_button, clear_button, table)


def neighbour_outputs() -> tuple[gr.HTML, gr.HTML, gr.Dataframe, gr.Dataframe]:
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Nearest corpus images: before** (cosine)")
            images_before = thumbs_component("steer-before", clickable=True)
        with gr.Column():
            gr.Markdown("**Nearest corpus images: after** (cosine)")
            images_after = thumbs_component("steer-after", clickable=True)
    with gr.Row():
        neighbours_before = Table(label="Nearest items: before", interactive=False)
        neighbours_after = Table(label="Nearest items: after", interactive=False)
    return images_before, images_after, neighbours_before, neighbours_after


def sweep_controls() -> SweepControls:
    with gr.Row():
        latent = gr.Textbox(label="Sweep latent (id or name)", elem_id="steer-sweep-latent")
        target = gr.Textbox(
            label="Target label", value=DEFAULT_LABELS[0], elem_id="steer-sweep-target"
        )
        button = gr.Button("Strength sweep", size="sm", elem_id="steer-sweep")
    plot = gr.Plot(
        elem_id="steer-sweep-plot", label="Strength sweep vs a random latent of similar frequency"
    )
    return SweepControls(latent, target, button, plot)


# ---------------------------------------------------------------------------------- wiring
def wire(explorer: Explorer, tab: SteerTab) -> None:
    wire_query_inputs(tab.inputs, explorer, start_outputs, tab.start_outputs, "steer_start")
    edits = tab.edits
    edits.add_button.click(
        bind(add_edit, explorer),
        [tab.extra_edits, edits.latent, edits.op, edits.strength],
        [tab.extra_edits, edits.table],
        api_name="add_edit",
    )
    edits.clear_button.click(
        clear_edits, None, [tab.extra_edits, edits.table], api_visibility="private"
    )
    tab.decode_button.click(
        named_slider_values(bind(decode, explorer)),
        [tab.query, tab.slider_latents, tab.extra_edits, tab.labels, *tab.sliders],
        list(tab.results),
        api_name="steer",
    )
    tab.sweep.button.click(
        bind(sweep, explorer),
        [tab.query, tab.sweep.latent, tab.sweep.target, tab.labels],
        tab.sweep.plot,
        api_name="sweep",
    )


def named_slider_values(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` (the bound :func:`decode`) with its ``*values`` shown as ``slider_1`` ...
    ``slider_N``, each defaulting to None: the API lists every slider as optional, and one a
    client leaves out is unchanged (the input's own activation)."""
    signature = inspect.signature(callback)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_POSITIONAL]
    sliders = [
        inspect.Parameter(
            f"slider_{i + 1}", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
            annotation=float | None,
        )
        for i in range(N_SLIDERS)
    ]  # fmt: skip
    callback.__signature__ = signature.replace(parameters=[*fixed, *sliders])  # type: ignore[attr-defined]
    return callback


# ---------------------------------------------------------------------------------- handlers
def steer_start(explorer: Explorer, query: Query) -> SteerStart:
    """The input's top latents as sliders starting at its activations."""
    top = explorer.top_latents(query, N_SLIDERS)
    sliders = [
        SliderSpec(
            int(r["latent"]),
            f"#{int(r['latent'])} {r['names']}",
            round(float(r["value"]), SLIDER_DECIMALS),  # on the step grid
            round(float(r["max"]), 4),
        )
        for _, r in top.iterrows()
    ]
    link = address.link_markdown(address.query_link(TAB_ID, query))
    return SteerStart(query, f"**Steering:** {markdown_text(query.description)}{link}", sliders)


def start_outputs(explorer: Explorer, query: Query) -> tuple[Any, ...]:
    """:func:`steer_start` as the tab's outputs: the filled sliders shown, the others hidden
    (the start kept in the page cache by input)."""
    start = cached(explorer, "steer_start", query_key(query), steer_start, query)
    shown = [
        gr.Slider(
            minimum=0.0,
            maximum=s.maximum,
            value=s.value,
            step=SLIDER_STEP,
            label=s.label,
            visible=True,
        )
        for s in start.sliders
    ]
    hidden = [gr.Slider(visible=False, value=0) for _ in range(N_SLIDERS - len(shown))]
    cleared = (*clear_edits(), *cleared_results(), None)  # nothing of the previous input stays
    return (start.query, start.description, start.slider_latents, *shown, *hidden, *cleared)


def cleared_results() -> DecodeView:
    """The decode outputs before anything is decoded."""
    empty = pd.DataFrame
    return DecodeView(
        "",
        empty(columns=["group", "label", "before", "after"]),
        empty(columns=["latent", "names", "before", "after"]),
        "",
        "",
        empty(),
        empty(),
    )


def add_edit(
    explorer: Explorer,
    edits: list[EditRow] | None,
    latent: str | None,
    op: str,
    strength: float | None,
) -> EditsView:
    """The extra edits with this one added (replacing an earlier edit of the same latent);
    ``set`` strengths are in units of the latent's largest corpus activation."""
    edit = explorer.relative_edit(latent, op, strength if strength is not None else float("nan"))
    edit = edit._replace(value=round(edit.value, 6))
    kept = [e for e in (edits or []) if e[0] != edit.latent_id] + [list(edit)]
    return EditsView(kept, pd.DataFrame(kept, columns=EDIT_COLUMNS))


def clear_edits() -> EditsView:
    return EditsView([], pd.DataFrame(columns=EDIT_COLUMNS))


def decode(
    explorer: Explorer,
    query: Query | None,
    slider_latents: list[SliderStart] | None,
    edits: list[EditRow] | None,
    labels: str,
    *values: float | None,
) -> DecodeView:
    """The input steered by the moved sliders (``values``, in slider order) and the extra edits."""
    if query is None:
        raise ValueError("start from an image, text or corpus item first")
    all_edits = (
        *moved_slider_edits(slider_latents or [], values),
        *(Edit(*e) for e in edits or []),
    )
    return cached(
        explorer,
        "steer",
        (*query_key(query), all_edits, labels),
        decoded_view,
        query,
        list(all_edits),
        labels,
    )


def decoded_view(explorer: Explorer, query: Query, edits: list[Edit], labels: str) -> DecodeView:
    """:class:`DecodeView` of the input steered by ``edits`` (kept in the page cache by input,
    edits and labels: a popular input's decode is computed once)."""
    result = explorer.steer(query, edits, labels)
    return DecodeView(
        f"**Cosine of the steered embedding to the original:** {result.cosine_to_original:.4f}",
        result.zero_shot,
        result.edits,
        thumbs_html(item_figures(result.images_before)),
        thumbs_html(item_figures(result.images_after)),
        result.neighbours_before,
        result.neighbours_after,
    )


def moved_slider_edits(
    initial: Sequence[Sequence[float]], values: Sequence[float | None]
) -> list[Edit]:
    """``set`` edits for the sliders the user moved (by more than half a step) from their initial
    ``[latent id, value]``; an untouched slider is no edit, so decoding it gives back the input."""
    return [
        Edit(int(latent), "set", float(v))
        for (latent, start), v in zip(initial, values)
        if v is not None and not abs(float(v) - float(start)) <= SLIDER_STEP / 2
    ]


def sweep(
    explorer: Explorer, query: Query | None, latent: str | None, target: str, labels: str
) -> go.Figure:
    """The target label's zero-shot score as the latent's strength grows, beside a random latent
    of similar frequency."""
    if query is None:
        raise ValueError("start from an image, text or corpus item first")
    return explorer.sweep(query, latent, target, labels).figure
