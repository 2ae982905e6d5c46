"""The Latents tab's handlers and the Latent tab's label-aware, side-by-side parts, called
without a server: filters, sorting and pages as a user sets them, clicks on rows and on the map,
labels in the tooltips, the agreement in words."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest
from _explorer_helpers import small_explorer

from explorer_ui import browse_tab, build_demo, latent_tab, page
from explorer_ui.browse_tab import DEFAULT_FILTER_VALUES, browse_view, map_view
from explorer_ui.latent_tab import LatentView, latent_view
from sae_explorer.explorer import plots


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"))


def no_progress(fraction, desc=None):
    pass


def view(explorer, move="first", page_number=1, sort_by="frequency", descending=True, **changes):
    """``browse_view`` with the default controls, some changed by name."""
    names = ["min_freq", "max_freq", "levels", "dead", "dense", "min_img", "max_img", "name"]
    values = dict(zip(names, DEFAULT_FILTER_VALUES)) | changes
    return browse_view(explorer, move, page_number, *values.values(), sort_by, descending, 25)


def test_the_first_page_lists_the_most_frequent_latents(explorer):
    shown = view(explorer)
    table = explorer.latent_table.frame
    expected = table.sort_values("frequency", ascending=False, kind="stable")["latent"][:25]
    assert shown.table["latent"].tolist() == expected.tolist()
    assert shown.page == 1
    assert f"**{explorer.n_latents}** of {explorer.n_latents} latents" in shown.info
    assert "rows 1–25" in shown.info and shown.histogram.data


def test_pages_turn_and_stop_at_the_ends(explorer):
    n_pages = -(-explorer.n_latents // 25)
    assert view(explorer, "next", 1).page == 2
    assert view(explorer, "previous", 1).page == 1  # stops, no error
    last = view(explorer, "next", n_pages)
    assert last.page == n_pages and f"page **{n_pages}** of {n_pages}" in last.info
    third = explorer.browse_latents(sort_by="frequency", page=3, page_size=25).rows
    shown = view(explorer, "this", 3).table
    assert shown["latent"].tolist() == third["latent"].tolist()
    assert shown["max_act"].tolist() == third["max_act"].round(3).tolist()  # shown rounded
    with pytest.raises(ValueError, match="page 99 does not exist"):
        view(explorer, "this", 99)
    assert view(explorer, "first", 5).page == 1  # a changed filter starts again


def test_controls_become_the_filter(explorer):
    shown = view(explorer, min_freq=20.0, max_freq=50.0, levels=[1], sort_by="max_act")
    rows = shown.table
    assert len(rows) and rows["frequency"].between(0.2, 0.5).all() and (rows["level"] == 1).all()
    assert rows["max_act"].is_monotonic_decreasing
    assert (
        browse_tab.latent_filter(None, None, None, "any", "hide", None, None, None).dense == "hide"
    )
    with pytest.raises(ValueError, match="swap them"):
        view(explorer, min_freq=60.0, max_freq=10.0)
    with pytest.raises(ValueError, match="cannot sort by"):
        view(explorer, sort_by="colour")


def test_a_clicked_row_or_map_point_opens_its_latent(explorer):
    shown = view(explorer, sort_by="max_act")
    row = shown.table.iloc[4]
    evt = gr.SelectData(None, {"index": [4, 0], "value": 0, "row_value": row.tolist()})
    tabs, *values = latent_tab.open_row(explorer, shown.table, evt)
    assert tabs.selected == latent_tab.TAB_ID and LatentView(*values).latent_id == row["latent"]
    figure = map_view(explorer, "pca", "frequency", *DEFAULT_FILTER_VALUES, progress=no_progress)
    point = int(figure.data[0].customdata[7])  # what the map's click script reports
    tabs, *values = latent_tab.open_thumb(explorer, gr.EventData(None, {"latent": point}))
    assert LatentView(*values).latent_id == point
    assert "plot_click" not in browse_tab.map_click_js() and '"browse-map"' in (
        browse_tab.map_click_js()
    )


def test_the_map_shows_the_listed_latents(explorer):
    flt = dict(zip(["min_freq", "max_freq", "levels"], (0.0, 100.0, [0, 1])))
    values = list(DEFAULT_FILTER_VALUES)
    values[2] = flt["levels"]
    figure = map_view(explorer, "pca", "level", *values, progress=no_progress)
    shown = sorted(int(v) for trace in figure.data for v in trace.customdata)
    table = explorer.latent_table.frame
    assert shown == sorted(table.loc[table["level"].isin([0, 1]), "latent"].tolist())
    assert {trace.name for trace in figure.data} == {"level 0", "level 1"}


def test_thumbnails_and_texts_carry_their_labels(explorer):
    shown = latent_view(explorer, 3)
    titles = re.findall(r'<figure data-item="(\d+)" title="([^"]*)"', shown.top_images)
    assert titles
    for item, title in titles:
        label = explorer.items["label"].iloc[int(item)]
        assert title.startswith(f"item {item}: ") and f" · label {label};" in title
    texts = shown.top_texts
    assert list(texts.columns) == ["value", "text", "item", "label"]
    assert texts["label"].tolist() == explorer.items["label"].iloc[texts["item"]].tolist()


def test_the_latent_page_shows_purity_and_agreement(explorer):
    shown = latent_view(explorer, 3)
    purity = explorer.latent_table.frame.loc[3, "label_purity"]
    assert f"label purity {purity:.0%}" in shown.summary
    score = explorer.cross_modal_agreement(3)
    assert shown.agreement.startswith(f"**Cross-modal agreement {score.score:.2f}** (chance ")
    assert {t.name for t in shown.label_mix.data} <= set(explorer.items["label"])


def test_the_latents_tab_is_on_the_page_and_linkable(explorer):
    assert page.link_view(explorer, {"tab": "latents"}) == page.LinkView("latents")
    assert browse_tab.TAB_ID in page.TABS  # the address bar follows it
    demo = build_demo(explorer)
    ids = {b.elem_id: b._id for b in demo.blocks.values() if getattr(b, "elem_id", None)}

    def wired(handler: str) -> set:
        return {t for fn in demo.fns.values() if fn.name == handler for t in fn.targets}

    assert (ids["browse-table"], "select") in wired("open_row")  # a row opens its latent
    assert (ids["browse-map-click"], "click") in wired("open_thumb")  # so does a map point


def test_the_latent_export_carries_labels_and_agreement(explorer):
    payload = json.loads(Path(latent_tab.export_latent(explorer, 3, "json")).read_text())
    purity = explorer.latent_table.frame.loc[3, "label_purity"]
    assert payload["summary"]["label_purity"] == pytest.approx(purity)
    assert payload["summary"]["cross_modal_agreement"] == pytest.approx(
        explorer.cross_modal_agreement(3).score
    )
    shares = pd.DataFrame(payload["label_mix"]).groupby("group")["share"].sum()
    assert shares.round(2).eq(1.0).all()  # each group's shares add up


def test_frequency_bins_are_exact_filters(explorer):
    frequency = explorer.latent_table.frame["frequency"].to_numpy()
    n = explorer.index.n_items
    bins = plots.frequency_bins(frequency, n)
    assert bins.count_b.sum() == (frequency > 0).sum()  # every live latent in one bin
    for low, high, count in zip(bins.low_b, bins.high_b, bins.count_b):
        assert ((frequency >= low) & (frequency <= high)).sum() == count
    # a bin edge never equals a frequency: it lies half-way between whole counts of items
    active = np.rint(frequency * n)
    assert not np.isin(np.concatenate([bins.low_b, bins.high_b]) * n, active).any()


def test_a_bar_of_the_overview_histogram_lists_exactly_its_latents(explorer):
    figure = explorer.overview().frequency_histogram
    bar = figure.data[0]
    j = int(np.argmax(bar.y))
    evt = gr.EventData(None, {"range": list(bar.customdata[j])})  # what plot_click.js sends
    tabs, *filters_and_view = browse_tab.frequency_bin_view(explorer, "frequency", True, 25, evt)
    filters, shown = filters_and_view[:8], browse_tab.BrowseView(*filters_and_view[8:])
    assert tabs.selected == browse_tab.TAB_ID
    assert filters[2:] == list(DEFAULT_FILTER_VALUES[2:])  # everything else reset
    assert f"**{int(bar.y[j])}** of {explorer.n_latents} latents" in shown.info
    low, high = (v / 100 for v in bar.customdata[j])
    assert shown.table["frequency"].between(low, high).all()


def test_a_bar_of_the_tabs_own_histogram_keeps_the_other_filters(explorer):
    kept = ([1], "hide", "any", 0.0, 100.0, "")
    listed = view(explorer, levels=[1], dead="hide").histogram.data[0]
    j = int(np.argmax(listed.y))
    evt = gr.EventData(None, {"range": list(listed.customdata[j])})
    low, high, *rest = browse_tab.histogram_bar_view(explorer, *kept, "frequency", True, 25, evt)
    shown = browse_tab.BrowseView(*rest)
    assert [low, high] == list(listed.customdata[j])
    assert f"**{int(listed.y[j])}** of" in shown.info and (shown.table["level"] == 1).all()


def test_a_level_of_the_overview_plot_lists_that_levels_latents(explorer):
    figure = explorer.overview().levels_plot
    level = int(figure.data[0].customdata[1])
    evt = gr.EventData(None, {"level": level})
    tabs, *filters_and_view = browse_tab.level_view(explorer, "frequency", True, 25, evt)
    assert tabs.selected == browse_tab.TAB_ID
    shown = browse_tab.BrowseView(*filters_and_view[8:])
    expected = int((explorer.latent_table.frame["level"] == level).sum())
    assert filters_and_view[2] == [level] and f"**{expected}** of" in shown.info


@pytest.mark.parametrize(
    ("data", "message"),
    [({}, "click a bar"), ({"range": [5, 200]}, "within 0-100"), ({"range": ["x"]}, "click a bar")],
)
def test_a_malformed_histogram_click_is_refused(explorer, data, message):
    with pytest.raises(ValueError, match=message):
        browse_tab.frequency_bin_view(explorer, "frequency", True, 25, gr.EventData(None, data))
    with pytest.raises(ValueError, match="per-level plot"):
        browse_tab.level_view(explorer, "frequency", True, 25, gr.EventData(None, {"level": 1.5}))
