"""Micro-batching: concurrent callers share one batched model call, each gets its own result,
and what a batch gives equals what each input gives alone (the embeddings to float rounding, the
views built on them exactly)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch
from _explorer_helpers import small_explorer

from sae_explorer.batching import MicroBatcher
from sae_explorer.explorer import Explorer
from sae_explorer.explorer.batches import sae_rows
from sae_explorer.worlds import shapes

TEXTS = [
    "a small red circle on a white background",
    "a large blue square on a black background",
    "a green triangle",
    "a purple star on a gray background",
    "yellow",
    "a large orange cross on a white background",
]


def concurrently(fn, items: list) -> list:
    """``fn(item)`` for every item, each on its own thread, started together."""
    results: list = [None] * len(items)
    errors: list = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(items[i])
        except Exception as e:  # handed to the test
            errors[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(items))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return list(zip(results, errors))


def test_concurrent_calls_share_batches_and_each_gets_its_own_result():
    sizes = []

    def square_all(batch: list[int]) -> list[int]:
        sizes.append(len(batch))
        time.sleep(0.05)  # a model call: others arrive meanwhile
        return [x * x for x in batch]

    batcher = MicroBatcher(square_all, max_batch=4, wait_s=0.05)
    out = concurrently(batcher, list(range(10)))
    assert [r for r, _ in out] == [x * x for x in range(10)]
    assert sum(sizes) == 10 and max(sizes) > 1 and max(sizes) <= 4
    stats = batcher.stats()
    assert (stats.items, stats.batches, stats.largest) == (10, len(sizes), max(sizes))


def test_an_error_reaches_only_the_caller_whose_input_caused_it():
    def strict(batch: list[int]) -> list[int]:
        if any(x < 0 for x in batch):
            raise ValueError("negative input")
        return [x + 1 for x in batch]

    batcher = MicroBatcher(strict, max_batch=8, wait_s=0.1)
    out = concurrently(batcher, [1, -1, 2, 3])
    assert [r for r, _ in out] == [2, None, 3, 4]
    assert isinstance(out[1][1], ValueError)
    assert [e for i, (_, e) in enumerate(out) if i != 1] == [None, None, None]


def test_a_lone_caller_is_served_at_once_and_settings_are_checked():
    batcher = MicroBatcher(lambda batch: [len(s) for s in batch])
    assert batcher("abc") == 3
    assert batcher.stats().largest == 1
    with pytest.raises(ValueError, match="max_batch"):
        batcher.configure(0, 0.0)


@pytest.fixture(scope="module")
def explorer(tmp_path_factory) -> Explorer:
    explorer = small_explorer(tmp_path_factory.mktemp("cache"), n_items=60)
    explorer.batchers.configure(max_batch=16, wait_s=0.2)  # every thread joins one batch
    return explorer


def test_batched_text_and_image_embeddings_equal_one_by_one(explorer):
    encoder = explorer.encoder
    texts = concurrently(explorer.batchers.text, TEXTS)
    assert explorer.batchers.text.stats().largest > 1
    for (x_d, error), text in zip(texts, TEXTS):
        assert error is None
        np.testing.assert_allclose(x_d, encoder.encode_texts([text])[0].numpy(), atol=1e-5)
    images = [shapes.make_item(i, seed=5).image for i in range(5)]
    embedded = concurrently(explorer.batchers.image, images)
    assert explorer.batchers.image.stats().largest > 1
    for (x_d, error), image in zip(embedded, images):
        assert error is None
        np.testing.assert_allclose(x_d, encoder.encode_images([image])[0].numpy(), atol=1e-5)


def test_inspect_in_a_batch_equals_inspect_alone(explorer):
    """The SAE pass batched across concurrent Inspect calls: the same top latents, activations,
    levels and diagnostics as each input inspected alone, with the SAE called directly."""
    queries = [explorer.text_query(t) for t in TEXTS] + [explorer.item_query(i) for i in (0, 7)]
    together = concurrently(explorer.inspect, queries)
    assert explorer.batchers.sae["text"].stats().largest > 1
    for (result, error), query in zip(together, queries):
        assert error is None
        alone = explorer.inspect(query)
        pd.testing.assert_frame_equal(result.table, alone.table)
        assert result.diagnostics == alone.diagnostics
        # and against the SAE itself, without any batcher
        sae = explorer.sae_for(query)
        with torch.inference_mode():
            z_l = sae.forward(torch.as_tensor(query.x_d)[None]).z_bl[0]
        top = z_l.argsort(descending=True)[: len(result.table)].tolist()
        assert result.table["latent"].tolist() == top
        np.testing.assert_allclose(result.table["activation"], z_l[top].numpy(), atol=1e-4)


def test_the_sae_rows_of_a_batch_are_bit_identical_to_each_row_alone(explorer):
    """Not merely close: a batched product rounds differently from a one-row one, and Inspect
    rounds what it shows, so a value near a rounding edge would flip with the batch's makeup."""
    x_bd = torch.as_tensor(np.stack([explorer.text_query(t).x_d for t in TEXTS]))
    for i, row in enumerate(sae_rows(explorer, "text", x_bd)):
        alone = sae_rows(explorer, "text", x_bd[i : i + 1])[0]
        for got, want in zip(row, alone):
            assert np.array_equal(np.asarray(got), np.asarray(want))
