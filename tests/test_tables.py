"""Tables of kept pages rendered once: a frozen frame's rows equal ``gr.Dataframe``'s own and are
computed once per table; any other frame is rendered every time; the front end sees a
``gr.Dataframe``."""

from __future__ import annotations

import gc

import gradio as gr
import pandas as pd
import pytest
from _explorer_helpers import small_explorer

from explorer_ui import latent_tab, tables
from explorer_ui.tables import Table


def frame() -> pd.DataFrame:
    return pd.DataFrame({"latent": [3, 1], "name": ["red", "circle"], "value": [0.5, 0.25]})


@pytest.fixture
def renders(monkeypatch) -> list[int]:
    calls: list[int] = []
    own = gr.Dataframe.postprocess
    monkeypatch.setattr(
        gr.Dataframe, "postprocess", lambda self, v: calls.append(1) or own(self, v)
    )
    return calls


def test_a_frozen_frame_is_rendered_once_per_table_as_gradio_renders_it(renders):
    with gr.Blocks():
        table, other = Table(), Table()
    df = frame()
    expected = gr.Dataframe().postprocess(df)
    renders.clear()  # building a component renders its empty value
    tables.freeze(df)
    assert table.postprocess(df) == expected
    assert table.postprocess(df) is table.postprocess(df)
    assert other.postprocess(df) == expected
    assert len(renders) == 2  # once per table


def test_other_values_are_rendered_every_time(renders):
    with gr.Blocks():
        table = Table()
    renders.clear()
    df = frame()
    first = table.postprocess(df)
    df.loc[0, "name"] = "blue"  # a frame nobody froze may change between requests
    assert table.postprocess(df).data[0][1] == "blue" != first.data[0][1]
    assert table.postprocess([[1, 2]]).data == [[1, 2]]
    assert len(renders) == 3


def test_frozen_frames_are_forgotten_with_their_frames():
    before = tables.frozen_count()
    frames = [frame() for _ in range(5)]
    tables.freeze(tuple(frames))
    assert tables.frozen_count() == before + 5
    del frames
    gc.collect()
    assert tables.frozen_count() == before


def test_the_front_end_draws_a_dataframe():
    assert Table().get_block_name() == "dataframe"


def test_the_tables_of_a_kept_latent_page_are_rendered_once(tmp_path, renders):
    explorer = small_explorer(tmp_path, n_items=40)
    with gr.Blocks():
        table, reference = Table(), gr.Dataframe()
    view = latent_tab.latent_view(explorer, 2)
    assert latent_tab.latent_view(explorer, 2) is view
    renders.clear()
    for _ in range(3):
        assert table.postprocess(view.top_texts) == reference.postprocess(view.top_texts)
    assert len(renders) == 1 + 3  # once for the table, once per reference
