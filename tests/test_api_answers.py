"""Right answers over the API: numbers are ids (never names), non-integer ids are refused, not
rounded; a Steer slider left out is unchanged; an edit's strength is checked when it is added,
in the user's units; concurrent calls on one session work or are refused at once. Each finding of
the hosted-Space review, through the handlers and through ``gradio_client`` or the raw HTTP
protocol against a launched app."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import numpy as np
import pytest
from _explorer_helpers import launched_app, small_explorer
from gradio_client import Client
from gradio_client.exceptions import AppError

from explorer_ui import latent_tab, steer_tab
from explorer_ui.sessions import REFUSED
from explorer_ui.steer_slider import SteerSlider
from sae_explorer import naming, steering

LABELS = "red, blue, green, yellow"

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas 3 notices


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"), n_items=60)


@pytest.fixture(scope="module")
def url(explorer):
    with launched_app(explorer) as url:
        yield url


@pytest.fixture
def no_name_search(monkeypatch):
    """A name search fails the test: numbers must never reach it."""

    def search(*args, **kwargs):
        raise AssertionError(f"searched latent names for {args[0]!r}")

    monkeypatch.setattr(naming, "search_latents", search)


# ------------------------------------------------------------------------------ latent ids
@pytest.mark.parametrize(
    "text, expected",
    [
        ("3.0", 3),
        (" 7 ", 7),
        ("1e1", 10),
        ("-0", 0),
        (3.0, 3),
        ("NaN", "not a whole number"),
        ("1.5", "not a whole number"),
        ("inf", "not a whole number"),
        (1.5, "not a whole number"),
        ("-2", "latent -2 does not exist"),
        ("1e3", "latent 1000 does not exist; ids run from 0 to 255"),
    ],
)
def test_numbers_are_latent_ids_never_names(explorer, no_name_search, text, expected):
    """Before: "3.0" opened #119 and "NaN" #87, found by name similarity."""
    handlers = {
        "resolve": lambda: explorer.resolve_latent(text),
        "add_edit": lambda: steer_tab.add_edit(explorer, [], text, "scale", 2.0).edits[0][0],
        "latent page": lambda: latent_tab.latent_view(explorer, text).latent_id,
    }
    for name, call in handlers.items():
        if isinstance(expected, int):
            assert call() == expected, name
        else:
            with pytest.raises(ValueError, match=expected):
                call()


def test_names_are_still_searched(explorer):
    assert explorer.resolve_latent("red") in explorer.search_latents("red")["latent"].tolist()


def test_the_number_input_hands_over_floats_and_non_integers_are_refused(explorer):
    """Before: 1.5 became latent 2. The Latent tab's Number input hands the handler 1.5 as it is
    (no precision), an API string as it is (no minimum, whose check fails on strings), and the
    handler refuses what is not a whole number."""
    with gr.Blocks():
        tab = latent_tab.layout(explorer)
    assert tab.latent_id.preprocess(1.5) == 1.5 and tab.latent_id.preprocess("3.0") == "3.0"
    with pytest.raises(ValueError, match=r"1\.5 is not a whole number"):
        latent_tab.latent_view(explorer, tab.latent_id.preprocess(1.5))
    assert latent_tab.latent_view(explorer, tab.latent_id.preprocess(4.0)).latent_id == 4


def test_numbers_over_the_api(url):
    client = Client(url, verbose=False)
    assert client.predict("3.0", api_name="/latent")[0] == 3
    for bad in (1.5, "NaN", "1.5"):
        with pytest.raises(AppError, match="not a whole number"):
            client.predict(bad, api_name="/latent")
    table = client.predict("3.0", "scale", 2.0, api_name="/add_edit")
    assert table["data"] == [[3, "scale", 2.0]]


# ------------------------------------------------------------------------------ Steer sliders
def test_left_out_sliders_are_unchanged(explorer):
    """Before: the API documented 0 for every slider, so leaving them out zeroed the input's
    top latents (cosine 0.52 where no edit must give 1.00)."""
    start = steer_tab.steer_start(explorer, explorer.text_query("a red circle"))
    assert len(start.sliders) == steer_tab.N_SLIDERS
    assert steer_tab.decode(explorer, start.query, start.slider_latents, [], LABELS).cosine == (
        "**Cosine of the steered embedding to the original:** 1.0000"
    )
    none = [None] * steer_tab.N_SLIDERS
    view = steer_tab.decode(explorer, start.query, start.slider_latents, [], LABELS, *none)
    assert view.cosine.endswith("1.0000") and view.changes.empty
    moved = [None, 0.0, *none[2:]]  # the second slider set to 0; the rest left out
    view = steer_tab.decode(explorer, start.query, start.slider_latents, [], LABELS, *moved)
    assert view.changes["latent"].tolist() == [start.sliders[1].latent_id]
    assert view.changes["after"].tolist() == [0.0]


def test_a_slider_has_no_value_to_document_and_passes_none(explorer):
    slider = SteerSlider(0, 2, visible=False, label="latent 1")
    config = slider.get_config()
    assert "value" not in config  # nothing for the API to document as the default
    assert (config["minimum"], config["maximum"], config["visible"]) == (0, 2, False)
    assert slider.preprocess(None) is None and slider.preprocess(1.5) == 1.5
    with pytest.raises(Exception, match="greater than maximum"):
        slider.preprocess(3.0)
    callback = steer_tab.named_slider_values(lambda *values: values)
    parameters = list(callback.__signature__.parameters.values())
    assert [p.name for p in parameters] == [f"slider_{i}" for i in range(1, 7)]
    assert all(p.default is None for p in parameters)


def test_left_out_sliders_over_the_api(url):
    client = Client(url, verbose=False)
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"][
        "/steer"
    ]["parameters"]
    sliders = [p for p in parameters if p["parameter_name"].startswith("slider_")]
    assert len(sliders) == steer_tab.N_SLIDERS
    assert all(p["parameter_has_default"] and p["parameter_default"] is None for p in sliders)
    start = client.predict("a red circle", api_name="/steer_start_text")
    first = start[1]
    assert client.predict(LABELS, api_name="/steer")[0].endswith("1.0000")
    moved = client.predict(LABELS, first["value"] / 2, api_name="/steer")  # one slider moved
    assert not moved[0].endswith("1.0000") and len(moved[2]["data"]) == 1


# ------------------------------------------------------------------------------ edit strengths
def test_an_edit_strength_is_checked_when_added_in_the_users_units(explorer):
    """Before: ``add_edit`` took a strength that decode then refused with a number the user
    never typed (the strength times the latent's corpus maximum)."""
    latent = int(np.argmax(explorer.max_act_l))
    unit = float(explorer.max_act_l[latent])
    assert unit > 1  # else the limit in units would not differ from the decode limit
    limit = steering.MAX_ABS_VALUE / unit
    with pytest.raises(ValueError) as refused:
        steer_tab.add_edit(explorer, [], str(latent), "set", limit * 1.01)
    message = str(refused.value)
    assert f"{limit * 1.01:g}" in message and f"-{limit:.4g} to {limit:.4g}" in message
    assert f"{steering.MAX_ABS_VALUE:g}" not in message  # no number the user never typed
    edits = steer_tab.add_edit(explorer, [], str(latent), "set", -limit).edits  # the limit: fine
    query = explorer.text_query("a red circle")
    view = steer_tab.decode(explorer, query, [], edits, LABELS)  # and decode takes it
    assert view.changes["after"].tolist() == [-steering.MAX_ABS_VALUE]


# ------------------------------------------------------------------------------ one session
def test_concurrent_calls_of_one_client_share_its_session(url):
    client = Client(url, verbose=False)
    with ThreadPoolExecutor(4) as pool:
        pages = list(pool.map(lambda i: client.predict(i, api_name="/latent")[0], range(4)))
    assert pages == [0, 1, 2, 3]


def fn_index(url: str, api_name: str) -> int:
    config = httpx.get(url + "config").json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def test_a_second_stream_of_one_session_is_refused_at_once(url):
    """Before: callers sharing a ``session_hash`` each opened a stream; all but one waited for
    results another stream took, and got ``404 session not found`` after Gradio's 10-second wait.
    Now the second stream is refused at once, and the first delivers every result."""
    session, latent = "shared-session", fn_index(url, "latent")
    with httpx.Client(base_url=url + "gradio_api/", timeout=30) as http:
        events = [
            http.post(
                "queue/join",
                json={"data": [i], "fn_index": latent, "session_hash": session, "trigger_id": None},
            ).json()["event_id"]
            for i in range(4)
        ]
        completed: dict[str, bool] = {}
        first_open = threading.Event()

        def first_stream() -> None:
            with http.stream("GET", f"queue/data?session_hash={session}") as stream:
                first_open.set()
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        message = json.loads(line[5:])
                        if message.get("msg") == "process_completed":
                            completed[message["event_id"]] = message["success"]

        reader = threading.Thread(target=first_stream)
        reader.start()
        assert first_open.wait(10)
        t0 = time.perf_counter()
        second = http.get(f"queue/data?session_hash={session}")
        seconds = time.perf_counter() - t0
        reader.join(30)
    assert second.status_code == 409 and second.json()["error"] == REFUSED
    assert seconds < 2  # at once, not after 10 s
    assert completed == dict.fromkeys(events, True)
