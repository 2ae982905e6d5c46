"""The page cache: a page asked for again is not recomputed, the cache is bounded (the least
recently used page goes first), an error is not kept, and an explorer over another index never
gets another's page."""

from __future__ import annotations

import threading
import time

import pytest
from _explorer_helpers import small_explorer

from explorer_ui import inputs, inspect_tab, latent_tab, steer_tab
from explorer_ui.page_cache import DEFAULT_ENTRIES, PAGES, PageCache


def test_the_least_recently_used_page_is_evicted_beyond_the_bound():
    cache, computed = PageCache(max_entries=2), []

    def page(key):
        return cache.get(key, lambda: computed.append(key) or f"page {key}")

    assert [page("a"), page("b"), page("a")] == ["page a", "page b", "page a"]
    page("c")  # over the bound: "b" (least recently used) goes, "a" stays
    assert cache.stats().entries == 2
    page("a")
    page("b")
    assert computed == ["a", "b", "c", "b"]
    assert cache.stats().hits == 2 and cache.stats().misses == 4
    cache.configure(1)
    assert cache.stats().entries == 1


def test_a_page_asked_for_at_once_is_computed_once_and_errors_are_not_kept():
    cache, calls = PageCache(), []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return "page"

    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow))) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == ["page"] * 5 and len(calls) == 1

    def bad():
        calls.append(1)
        raise ValueError("latent 999 does not exist")

    for _ in range(2):
        with pytest.raises(ValueError, match="999"):
            cache.get("bad", bad)
    assert len(calls) == 3 and cache.stats().entries == 1  # tried again each time, not kept


@pytest.fixture(scope="module")
def explorers(tmp_path_factory):
    """Two explorers over different indexes (different corpora) of the same models."""
    return (
        small_explorer(tmp_path_factory.mktemp("a"), n_items=40),
        small_explorer(tmp_path_factory.mktemp("b"), n_items=60),
    )


def test_a_latent_page_is_computed_once_per_explorer(explorers, monkeypatch):
    first, _ = explorers
    calls = []
    compute = first.latent_page
    monkeypatch.setattr(first, "latent_page", lambda i: calls.append(i) or compute(i))
    view = latent_tab.latent_view(first, 3)
    assert latent_tab.latent_view(first, "3.0") is view  # the same id, however it is written
    assert calls == [3]
    assert view.summary == latent_tab.build_latent_view(first, 3).summary
    with pytest.raises(ValueError, match="whole number"):
        latent_tab.latent_view(first, 2.5)


def test_another_index_never_gets_anothers_page(explorers):
    first, second = explorers
    assert first.index_key != second.index_key
    for latent in (3, 11):
        a, b = latent_tab.latent_view(first, latent), latent_tab.latent_view(second, latent)
        assert a.summary == latent_tab.build_latent_view(first, latent).summary
        assert b.summary == latent_tab.build_latent_view(second, latent).summary
        assert a.summary != b.summary  # the corpora differ: so do the statistics
    text = "a large red circle on a white background"
    views = [inspect_tab.inspect_view(e, inputs.cached_text_query(e, text)) for e in explorers]
    assert views[0].thumbs != views[1].thumbs  # each shows its own corpus's images


def test_inspect_views_are_kept_per_input_and_dense_latent_setting(explorers, monkeypatch):
    first, _ = explorers
    calls = []
    compute = first.inspect
    monkeypatch.setattr(
        first, "inspect", lambda q, **kw: calls.append(kw["max_frequency"]) or compute(q, **kw)
    )
    query = inputs.cached_text_query(first, "a blue square")
    assert inputs.cached_text_query(first, "  a blue square ") is query  # the text as checked
    full = inspect_tab.inspect_view(first, query, 100.0)
    assert inspect_tab.inspect_view(first, query, None) is full  # None and 100 hide nothing
    dense_hidden = inspect_tab.inspect_view(first, query, 10.0)
    assert calls == [None, 0.1]
    assert dense_hidden.table is not full.table


def test_the_cache_holds_no_more_pages_than_configured(explorers):
    first, _ = explorers
    PAGES.configure(3)
    try:
        for latent in range(8):
            latent_tab.latent_view(first, latent)
        assert PAGES.stats().entries == 3
    finally:
        PAGES.configure(DEFAULT_ENTRIES)


def test_a_decode_is_kept_per_input_edits_and_labels(explorers, monkeypatch):
    first, _ = explorers
    calls = []
    compute = first.steer
    monkeypatch.setattr(
        first, "steer", lambda q, edits, labels: calls.append(edits) or compute(q, edits, labels)
    )
    query = inputs.cached_text_query(first, "a green cross")
    start = steer_tab.steer_start(first, query)
    sliders = start.slider_latents
    values = [value for _, value in sliders]
    moved = [values[0] + 1.0, *values[1:]]
    labels = "red, green"
    view = steer_tab.decode(first, query, sliders, [], labels, *values)
    assert steer_tab.decode(first, query, sliders, [], labels, *values) is view
    assert (
        steer_tab.decode(first, query, sliders, None, labels) is view
    )  # sliders left out: unchanged
    steered = steer_tab.decode(first, query, sliders, [], labels, *moved)
    other_labels = steer_tab.decode(first, query, sliders, [], "red, blue", *values)
    extra = steer_tab.decode(first, query, sliders, [[sliders[1][0], "zero", 0.0]], labels, *values)
    assert len(calls) == 4  # one per distinct (input, edits, labels)
    assert [len(edits) for edits in calls] == [0, 1, 0, 1]
    assert steered.cosine != view.cosine and other_labels.zero_shot is not view.zero_shot
    assert extra.changes is not view.changes
    assert view.cosine == steer_tab.decoded_view(first, query, [], labels).cosine
