"""The page's handlers called directly, without a server: each tab's views of an input or a
latent, its errors, the deep links, and how handlers are bound to Gradio (``explorer_ui``)."""

from __future__ import annotations

import copy
import dataclasses
import html
import inspect
import json
import re
import typing
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qsl

import gradio as gr
import pandas as pd
import pytest
from _explorer_helpers import small_explorer

from explorer_ui import (
    address,
    banner,
    browse_tab,
    build_demo,
    compare_tab,
    heatmap_panel,
    inputs,
    inspect_tab,
    latent_tab,
    overview_tab,
    page,
    steer_tab,
    wiring,
)
from explorer_ui.inspect_tab import InspectView, inspect_view
from explorer_ui.latent_tab import LatentView, latent_view
from explorer_ui.steer_tab import N_SLIDERS, SLIDER_STEP
from sae_explorer import attribution
from sae_explorer.worlds import shapes

LABELS = "red, blue, green, yellow"
HANDLER_MODULES = (
    address,
    banner,
    browse_tab,
    compare_tab,
    heatmap_panel,
    inputs,
    inspect_tab,
    latent_tab,
    overview_tab,
    page,
    steer_tab,
    wiring,
)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def red_circle(explorer):
    return explorer.text_query("a red circle")


# ------------------------------------------------------------------------------ Inspect
def test_inspect_view_of_a_text(explorer, red_circle):
    view = inspect_view(explorer, red_circle)
    assert view.query is red_circle
    assert view.description.startswith("**Input:** text: 'a red circle'")
    # the link that reopens it, which the address bar follows
    assert 'class="page-link" href="?tab=inspect&amp;text=a+red+circle"' in view.description
    assert view.diagnostics.startswith("**Reconstruction** cosine ") and "L0 " in view.diagnostics
    assert list(view.table.columns[:3]) == ["latent", "names", "activation"]
    assert view.table["activation"].is_monotonic_decreasing
    shown = {int(v) for v in re.findall(r'data-latent="(\d+)"', view.thumbs)}
    assert shown and shown <= set(view.table["latent"])  # thumbnails of the top latents only
    assert view.levels_plot.data and view.bar.data


def test_inputs_become_queries_and_bad_ones_are_named(explorer, tmp_path):
    item = inputs.show_item(explorer, inspect_view, 3)
    assert "corpus item 3" in item.description
    fpath = tmp_path / "shape.png"
    shapes.make_item(1, seed=5).image.save(fpath)
    assert inputs.show_image(explorer, inspect_view, str(fpath)).description.startswith(
        "**Input:** uploaded image"
    )
    (tmp_path / "garbage.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="is not an image"):
        inputs.show_image(explorer, inspect_view, str(tmp_path / "garbage.png"))
    with pytest.raises(ValueError, match="does not exist"):
        inputs.show_item(explorer, inspect_view, 10**7)
    with pytest.raises(ValueError, match="the text is empty"):
        inputs.show_text(explorer, inspect_view, "  ")


def test_export_inspect_needs_an_input_first(explorer, red_circle):
    with pytest.raises(ValueError, match="inspect an image, text or corpus item first"):
        inspect_tab.export_inspect(explorer, None, "json")
    payload = json.loads(Path(inspect_tab.export_inspect(explorer, red_circle, "json")).read_text())
    assert "red circle" in payload["summary"]["input"]


# ------------------------------------------------------------------------------ Latent
def test_latent_view_and_its_link(explorer):
    view = latent_view(explorer, "5")
    assert view.latent_id == 5
    assert view.summary.startswith("### Latent 5") and "frequency " in view.summary
    assert 'class="page-link" href="?tab=latent&amp;latent=5"' in view.summary
    assert view.top_images.count("<img") == len(explorer.top_items(5, 12, "image"))
    assert list(view.similar.columns) == ["latent", "cosine", "names"]
    with pytest.raises(ValueError, match="latent 100000 does not exist"):
        latent_view(explorer, 100_000)


def test_a_clicked_row_opens_its_latent_however_the_table_is_sorted(explorer):
    table = pd.DataFrame({"latent": [7, 3], "names": ["a", "b"], "activation": [2.0, 1.0]})
    assert latent_tab.clicked_latent(table, [3, "b", 1.0]) == 3  # the row as displayed
    with pytest.raises(ValueError, match="click a row"):
        latent_tab.clicked_latent(table, None)
    evt = gr.SelectData(None, {"index": [0, 0], "value": 3, "row_value": [3, "b", 1.0]})
    tabs, *values = latent_tab.open_row(explorer, table, evt)
    assert tabs.selected == latent_tab.TAB_ID and LatentView(*values).latent_id == 3
    tabs, *values = latent_tab.open_thumb(explorer, gr.EventData(None, {"latent": 4}))
    assert tabs.selected == latent_tab.TAB_ID and LatentView(*values).latent_id == 4


def test_search_finds_named_latents(explorer):
    hits = latent_tab.search_hits(explorer, "blue")
    assert list(hits.columns) == ["latent", "score", "names"] and len(hits) > 0
    with pytest.raises(ValueError, match="type a word"):
        latent_tab.search_hits(explorer, "")
    payload = json.loads(Path(latent_tab.export_latent(explorer, 5, "json")).read_text())
    assert payload["summary"]["latent"] == 5


# ------------------------------------------------------------------------------ Steer
def test_steer_start_fills_the_sliders_with_the_top_latents(explorer, red_circle):
    start = steer_tab.steer_start(explorer, red_circle)
    assert start.description.startswith("**Steering:** text: 'a red circle'")
    assert 0 < len(start.sliders) <= N_SLIDERS
    values = [s.value for s in start.sliders]
    assert values == sorted(values, reverse=True)
    assert all(0 <= s.value <= s.maximum for s in start.sliders)
    assert all(s.label.startswith(f"#{s.latent_id} ") for s in start.sliders)
    query, description, slider_latents, *rest = steer_tab.start_outputs(explorer, red_circle)
    sliders, cleared = rest[:N_SLIDERS], rest[N_SLIDERS:]
    assert query is red_circle and description == start.description
    edits, edits_table, cosine, zero_shot, changes, *_, plot = cleared  # the old input's, gone
    assert edits == [] and edits_table.empty and cosine == "" and changes.empty and plot is None
    assert list(zero_shot.columns) == ["group", "label", "before", "after"] and zero_shot.empty
    assert len(sliders) == N_SLIDERS and slider_latents == start.slider_latents
    assert [s.visible for s in sliders] == [True] * len(start.sliders) + [False] * (
        N_SLIDERS - len(start.sliders)
    )


def test_decode_without_moves_gives_back_the_input(explorer, red_circle):
    start = steer_tab.steer_start(explorer, red_circle)
    values = [s.value for s in start.sliders]
    same = steer_tab.decode(explorer, red_circle, start.slider_latents, [], LABELS, *values)
    assert "1.0000" in same.cosine and same.changes.empty
    assert list(same.zero_shot.columns) == ["group", "label", "before", "after"]
    assert same.images_before == same.images_after  # nothing moved, same neighbours
    moved = steer_tab.decode(
        explorer, red_circle, start.slider_latents, [], LABELS, 0.0, *values[1:]
    )
    assert "1.0000" not in moved.cosine
    assert moved.changes["latent"].tolist() == [start.sliders[0].latent_id]
    with pytest.raises(ValueError, match="start from an image"):
        steer_tab.decode(explorer, None, [], [], LABELS)


def test_extra_edits_replace_the_same_latent_and_clear(explorer):
    first = steer_tab.add_edit(explorer, [], "blue", "set", 1.0)
    again = steer_tab.add_edit(explorer, first.edits, "blue", "scale", 2.0)
    assert len(again.edits) == 1 and again.edits[0][1:] == ["scale", 2.0]
    assert list(again.table.columns) == steer_tab.EDIT_COLUMNS
    with pytest.raises(ValueError, match=r"too large|finite"):
        steer_tab.add_edit(explorer, [], "blue", "set", None)  # an empty strength box
    cleared = steer_tab.clear_edits()
    assert cleared.edits == [] and cleared.table.empty


def test_sweep_needs_a_start(explorer, red_circle):
    assert steer_tab.sweep(explorer, red_circle, "blue", "blue", LABELS).data
    with pytest.raises(ValueError, match="start from an image"):
        steer_tab.sweep(explorer, None, "blue", "blue", LABELS)


def test_only_moved_sliders_become_edits():
    initial = [[4, 0.25], [9, 1.5], [2, 0.0]]
    assert steer_tab.moved_slider_edits(initial, [0.25, 1.5, 0.0]) == []
    assert steer_tab.moved_slider_edits(initial, [0.2503, 1.5, 0.0]) == []  # under half a step
    assert steer_tab.moved_slider_edits(initial, [0.25, 0.0, 0.7]) == [
        (9, "set", 0.0),
        (2, "set", 0.7),
    ]
    nan_edit = steer_tab.moved_slider_edits(initial, [float("nan"), 1.5, 0.0])
    assert len(nan_edit) == 1 and nan_edit[0].latent_id == 4  # refused later by check_edit
    assert steer_tab.moved_slider_edits(initial, [0.25 + SLIDER_STEP, 1.5, 0.0])[0].latent_id == 4


# ------------------------------------------------------------------------------ Overview
def test_overview_stats_name_every_level(explorer):
    stats = explorer.overview().stats
    text = overview_tab.stats_markdown(stats)
    assert f"**Corpus** {stats.n_items} items" in text
    assert f"**L0** {stats.l0:.1f}" in text and "**FVU** " in text
    assert text.count("k=") == len(stats.levels)


def test_banner_names_the_models_and_the_fallback_reason(explorer):
    plain = banner.banner_html(explorer)
    assert 'class="banner"' in plain and explorer.encoder.model_id in plain
    assert f"{len(explorer.items)} items" in plain
    fallback = copy.copy(explorer)
    fallback.sources = dataclasses.replace(explorer.sources, note="Hub <unreachable>")
    html = banner.banner_html(fallback)
    assert 'class="banner fallback"' in html and "Hub &lt;unreachable&gt;" in html
    demo = copy.copy(explorer)
    demo.sources = dataclasses.replace(
        explorer.sources, details={"mode": "the built-in shapes world (--demo)"}
    )
    html = banner.banner_html(demo)  # asked for: a plain line, no warning
    assert 'class="banner"' in html and "fallback" not in html and "⚠" not in html
    assert "Showing the built-in shapes world (--demo): CLIP" in html


# ------------------------------------------------------------------------------ page, links
def test_deep_links(explorer):
    latent = page.link_view(explorer, {"tab": "latent", "latent": "3"})
    assert latent.tab == "latent" and latent.latent.latent_id == 3 and latent.inspect is None
    text = page.link_view(explorer, {"text": "a blue square"})
    assert text.tab == "inspect" and "a blue square" in text.inspect.description
    assert "corpus item 42" in page.link_view(explorer, {"item": "42"}).inspect.description
    assert page.link_view(explorer, {"tab": "overview"}) == page.LinkView("overview")
    assert page.link_view(explorer, {"tab": "nowhere"}) == page.LinkView(None)
    with pytest.raises(ValueError, match="does not exist"):
        page.link_view(explorer, {"latent": "99999"})


def test_a_steer_link_starts_steer_with_its_text_filled_in(explorer):
    link = page.link_view(explorer, {"tab": "steer", "text": "a blue square"})
    assert link.tab == "steer" and link.inspect is None
    assert link.steer_input == ("a blue square", None)
    query, description, *_ = link.steer
    assert query.text == "a blue square" and "Steering:** text: 'a blue square'" in description
    item = page.link_view(explorer, {"tab": "steer", "item": "42"})
    assert item.steer_input == (None, 42) and item.steer[0].item == 42


def test_each_view_carries_the_link_that_reopens_it(explorer):
    text = steer_tab.steer_start(explorer, explorer.text_query("a green circle"))
    target = re.search(r'href="([^"]+)"', text.description).group(1)
    assert html.unescape(target) == "?tab=steer&text=a+green+circle"
    params = dict(parse_qsl(html.unescape(target)[1:]))
    assert page.link_view(explorer, params).steer[0].text == "a green circle"  # a round trip
    item = inspect_view(explorer, explorer.item_query(7))
    assert "?tab=inspect&amp;item=7" in item.description
    upload = explorer.image_query(shapes.make_item(1, seed=3).image)
    assert "page-link" not in inspect_view(explorer, upload).description  # nothing to link to


def test_every_tab_is_followed_by_the_address_bar(explorer):
    demo = build_demo(explorer)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert sorted(t.id for t in tabs) == sorted(page.TABS)
    assert all(t.elem_id == address.tab_panel_id(t.id) for t in tabs)  # what address.js watches


def test_back_reopens_the_address_returned_to(explorer):
    tabs, *rest = page.reopen(explorer, "?tab=latent&latent=4", 100.0)
    assert tabs.selected == "latent"
    latent = rest[len(InspectView._fields) :][: len(LatentView._fields)]
    assert latent[0] == 4
    tabs, *rest = page.reopen(explorer, "", 100.0)  # the first entry: the first tab
    assert tabs.selected == "inspect" and all(isinstance(v, type(gr.skip())) for v in rest)


def test_a_bad_link_warns_and_still_opens_its_tab(explorer):
    request = SimpleNamespace(query_params={"tab": "steer", "latent": "99999"})
    with pytest.warns(UserWarning, match="could not open the link: latent 99999 does not exist"):
        tabs, *rest = page.open_link(explorer, 100.0, request)
    assert tabs.selected == "steer"
    demo = build_demo(explorer)
    load = next(fn for fn in demo.fns.values() if fn.name == "open_link")
    assert len(rest) + 1 == len(load.outputs)  # one value for each output the load fills


def test_a_links_html_is_shown_as_text(explorer):
    """A deep link's HTML reaches the toast escaped (toasts render HTML) and its Markdown
    reaches the description escaped: no foreign link or image renders."""
    link = '<a href="https://evil.example/login">Session expired</a>'
    request = SimpleNamespace(query_params={"latent": link})
    with pytest.warns(UserWarning) as warned:
        page.open_link(explorer, 100.0, request)
    message = str(warned[0].message)
    assert "&lt;a href=&quot;https://evil.example/login&quot;&gt;Session expired" in message
    assert "<a" not in message
    text = "![](https://evil.example/pixel.png) <img src=x> *bold* $x$"
    shown = page.link_view(explorer, {"text": text}).inspect.description
    assert shown.startswith("**Input:** text: ")
    typed = shown.split("text: ", 1)[1].split("  \n<small>Link:", 1)[0]  # before the view's link
    assert typed == (
        r"'\!\[\]\(https:\/\/evil\.example\/pixel\.png\) \<img src=x\> \*bold\* \$x\$'"
    )
    assert not re.search(r"(?<!\\)[!\[\]()<>*$/.]", typed)  # every special character escaped
    start = steer_tab.steer_start(explorer, explorer.text_query(text))
    assert f"text: {typed}" in start.description


def test_a_handlers_error_is_escaped(explorer):
    def refuse(explorer, text: str) -> None:
        raise ValueError(f"no latent is called {text}")

    with pytest.raises(gr.Error) as error:
        wiring.bind(refuse, explorer)("<b>bold</b>")
    assert str(error.value.message) == "no latent is called &lt;b&gt;bold&lt;/b&gt;"


def test_the_page_offers_the_same_api(explorer):
    demo = build_demo(explorer)
    api_names = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert api_names == {
        "inspect_image",
        "inspect_text",
        "inspect_item",
        "export_inspect",
        "latent",
        "search",
        "export_latent",
        "latent_figure",
        "steer_start_image",
        "steer_start_text",
        "steer_start_item",
        "add_edit",
        "steer",
        "sweep",
        "heatmaps",
        "compare",
    }


# ------------------------------------------------------------------------------ binding
def test_bind_shows_user_mistakes_as_popups_and_keeps_gradios_hints(explorer):
    show = wiring.bind(latent_view, explorer)
    assert list(inspect.signature(show).parameters) == ["latent"]
    assert show(2).latent_id == 2
    with pytest.raises(gr.Error, match="does not exist"):
        show(10**7)
    # Gradio passes gr.Request / gr.EventData by annotation: the bound handler must keep them
    hints = typing.get_type_hints(wiring.bind(page.open_link, explorer))
    assert hints["request"] is gr.Request
    assert typing.get_type_hints(wiring.bind(latent_tab.open_row, explorer))["evt"] is gr.SelectData


@pytest.mark.parametrize("module", HANDLER_MODULES, ids=lambda m: m.__name__)
def test_every_handler_hint_resolves(module):
    """An annotation Gradio cannot resolve (a name imported only for type checking) makes it
    silently drop every hint of that handler, and with them gr.Request and gr.EventData."""
    handlers = [
        fn
        for fn in vars(module).values()
        if inspect.isfunction(fn) and fn.__module__ == module.__name__
    ]
    assert handlers
    for fn in handlers:
        typing.get_type_hints(fn)  # raises NameError for a name it cannot resolve


def test_inspect_explains_its_numbers(explorer, red_circle):
    view = inspect_tab.inspect_view(explorer, red_circle)
    d = explorer.inspect(red_circle).diagnostics
    assert f"L0 {d.l0} active latents (the SAE's own sparse code keeps {d.code_l0};" in (
        view.diagnostics
    )
    for column in ("**level**", "**corpus_level**", "**frequency**"):
        assert column in inspect_tab.COLUMNS_HELP


def test_the_dense_latent_control_hides_latents_denser_than_it(explorer, red_circle):
    every = inspect_tab.inspect_view(explorer, red_circle)
    frequencies = every.table["frequency"]
    cut = float(frequencies.median())  # some of the input's top latents are denser than this
    assert (frequencies > cut).any()
    view = inspect_tab.inspect_view(explorer, red_circle, 100 * cut)
    assert len(view.table) and (view.table["frequency"] <= cut).all()
    n_hidden = explorer.inspect(red_circle, max_frequency=cut).n_hidden
    assert n_hidden >= (frequencies > cut).sum()
    assert f"{n_hidden} of its active latents hidden" in view.diagnostics
    assert "hidden" not in every.diagnostics
    # moving the control re-filters the session's input; before any input it changes nothing
    assert inspect_tab.refilter(explorer, red_circle, 100 * cut).table.equals(view.table)
    assert all(v == gr.skip() for v in inspect_tab.refilter(explorer, None, 10.0))
    exported = json.loads(
        Path(inspect_tab.export_inspect(explorer, red_circle, "json", 100 * cut)).read_text()
    )
    assert exported["summary"]["max_frequency"] == pytest.approx(cut)
    assert all(row["frequency"] <= cut for row in exported["top_latents"])
    with pytest.raises(ValueError, match=r"must be in \(0, 100\] %, got 0"):
        inspect_tab.inspect_view(explorer, red_circle, 0)


def test_clicking_a_corpus_example_inspects_it(explorer):
    page = latent_tab.latent_view(explorer, 5)
    items = re.findall(r'data-item="(\d+)"', page.top_images)
    assert items and 'class="thumbs clickable"' in page.top_images
    tabs, *values = inspect_tab.open_item(
        explorer, 50.0, gr.EventData(None, {"item": int(items[0])})
    )
    assert tabs.selected == inspect_tab.TAB_ID
    view = inspect_tab.InspectView(*values)
    assert view.query.item == int(items[0]) and view.description.startswith(
        f"**Input:** corpus item {items[0]} "
    )
    table = pd.DataFrame({"item": [7, 9], "cosine": [0.9, 0.8]})
    evt = gr.SelectData(None, {"index": [1, 1], "value": 0.8, "row_value": [9, 0.8]})
    tabs, *values = inspect_tab.open_item_row(explorer, table, 50.0, evt)
    assert inspect_tab.InspectView(*values).query.item == 9
    with pytest.raises(ValueError, match="click a thumbnail"):
        inspect_tab.open_item(explorer, 100.0, gr.EventData(None, {"latent": 3}))


def test_heatmaps_of_an_inspected_image(explorer, red_circle, tmp_path):
    silent = lambda *args, **kwargs: None  # noqa: E731
    item = int(explorer.modality_rows["image"][0])
    query = explorer.item_query(item)
    gallery = heatmap_panel.heatmap_gallery(explorer, query, None, "", "occlusion", silent)
    top = [int(i) for i in explorer.top_latents(query, 4)["latent"]]
    assert [caption.split()[0] for _, caption in gallery] == [f"#{i}" for i in top]
    assert all(image.size == (shapes.IMAGE_SIZE,) * 2 for image, _ in gallery)
    chosen = heatmap_panel.heatmap_gallery(explorer, query, None, "5, 3", "gradient", silent)
    assert [caption.split()[0] for _, caption in chosen] == ["#5", "#3"]
    for method in attribution.METHODS:  # each method the panel offers answers, and says which
        ((_, caption),) = heatmap_panel.heatmap_gallery(explorer, query, None, "5", method, silent)
        assert caption.startswith("#5 ") and caption.endswith(f" · {method}")
    upload = tmp_path / "shape.png"
    shapes.make_item(2, seed=5).image.save(upload)
    image_query = explorer.image_query(str(upload))
    assert heatmap_panel.heatmap_gallery(
        explorer, image_query, str(upload), "7", "occlusion", silent
    )
    with pytest.raises(ValueError, match="inspect an image first"):
        heatmap_panel.heatmap_gallery(explorer, red_circle, None, "", "occlusion", silent)
    with pytest.raises(ValueError, match="unknown heatmap method 'saliency'"):
        heatmap_panel.heatmap_gallery(explorer, query, None, "3", "saliency", silent)
