"""Library-level tests of every explorer action (what each app tab shows), on a small shapes
corpus. Numbers are checked against direct SAE / index computations, not just shapes."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _explorer_helpers import builtin_world_trained, explorer_over, small_explorer
from PIL import Image

from sae_explorer import naming, steering
from sae_explorer.corpus import load_corpus
from sae_explorer.explorer import Explorer, check_labels, export, thumbnails
from sae_explorer.explorer.overview import public_id
from sae_explorer.precompute import PrecomputeConfig, index_embeddings
from sae_explorer.steering import Edit
from sae_explorer.worlds import shapes

LABELS = ["red", "blue", "green", "yellow"]


@pytest.fixture(scope="module")
def explorer(tmp_path_factory) -> Explorer:
    return small_explorer(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def image_item(explorer) -> int:
    return int(np.flatnonzero((explorer.items["modality"] == "image").to_numpy())[0])


def full_latents(explorer: Explorer, x_d) -> torch.Tensor:
    return explorer.sae.encode(torch.tensor(np.array(x_d, dtype=np.float32))[None])[0]


# ---------------------------------------------------------------------- inputs
def test_item_query_uses_the_indexed_embedding(explorer, image_item):
    q = explorer.item_query(image_item)
    assert q.kind == "item" and q.item == image_item
    assert np.array_equal(q.x_d, np.asarray(explorer.index.embeddings[image_item], np.float32))


def test_image_query_matches_encoding_the_corpus_image(explorer, image_item):
    image = explorer.index.load_image(image_item)
    q = explorer.image_query(image)
    x_ref = explorer.encoder.encode_images([image])[0].numpy()
    np.testing.assert_allclose(q.x_d, x_ref, rtol=1e-5, atol=1e-5)
    indexed = np.asarray(explorer.index.embeddings[image_item], np.float32)
    np.testing.assert_allclose(q.x_d, indexed, rtol=2e-2, atol=2e-2)  # index stores fp16


@pytest.mark.parametrize(
    ("bad", "message"),
    [(-1, "does not exist"), (10**9, "does not exist"), ("abc", "not a number"), (2.5, "whole")],
)
def test_bad_latent_and_item_ids_are_refused(explorer, bad, message):
    with pytest.raises(ValueError, match=message):
        explorer.latent_page(bad)
    with pytest.raises(ValueError, match=message):
        explorer.item_query(bad)
    with pytest.raises(ValueError, match=r"not a number|whole number"):
        explorer.check_latent(float("nan"))


def test_long_text_is_inspected_with_a_warning(explorer):
    q = explorer.text_query("red " * 2499 + "blue")
    assert q.warnings and "10,000 characters" in q.warnings[0]
    assert explorer.inspect(q).table.shape[0] > 0
    with pytest.raises(ValueError, match="empty"):
        explorer.text_query("  ")


# ---------------------------------------------------------------------- Inspect
def test_inspect_table_matches_the_sae(explorer, image_item):
    q = explorer.item_query(image_item)
    result = explorer.inspect(q, n_top=8)
    z_l = full_latents(explorer, q.x_d)
    expected = z_l.argsort(descending=True)[:8].tolist()
    assert result.table["latent"].tolist() == expected
    np.testing.assert_allclose(result.table["activation"], z_l[expected].numpy(), atol=1e-4)
    freq = explorer.index.frequency[expected]
    np.testing.assert_allclose(result.table["frequency"], freq, atol=1e-4)
    # the index stored the same item's codes: its strongest latents agree
    stored = explorer.index.item_codes(image_item)
    np.testing.assert_allclose(
        np.sort(stored.values[:5]), np.sort(z_l[expected[:5]].numpy()), rtol=1e-2, atol=1e-2
    )


def test_inspect_diagnostics(explorer, image_item):
    q = explorer.item_query(image_item)
    d = explorer.inspect(q).diagnostics
    x_1d = torch.as_tensor(q.x_d)[None]
    x_hat = explorer.sae.forward(x_1d).x_hat_bd
    assert d.cosine == pytest.approx(float(torch.cosine_similarity(x_1d, x_hat)[0]), abs=1e-3)
    assert d.l0 == int((full_latents(explorer, q.x_d) > 0).sum())
    assert d.levels == list(explorer.sae.cfg.levels)
    assert len(d.level_cosines) == len(d.levels)
    if explorer.sae.cfg.levels[-1] == explorer.n_latents:  # last level = all latents = reference
        assert d.level_cosines[-1] == pytest.approx(d.cosine, abs=1e-3)


def test_inspect_can_leave_out_dense_latents(explorer, image_item):
    q = explorer.item_query(image_item)
    full = explorer.inspect(q, n_top=30).table
    cap = float(np.median(full["frequency"]))
    sparse = explorer.inspect(q, n_top=30, max_frequency=cap).table
    expected = full[full["frequency"] <= cap]["latent"].tolist()
    assert sparse["latent"].tolist()[: len(expected)] == expected  # same order, dense ones out
    assert (sparse["frequency"] <= cap).all()
    dense = set(full[full["frequency"] > cap]["latent"])
    assert dense and not dense & set(sparse["latent"])
    with pytest.raises(ValueError, match="max_frequency"):
        explorer.inspect(q, max_frequency=0)


def test_inspect_reports_the_sparse_code_l0_beside_the_full_l0(explorer, image_item):
    d = explorer.inspect(explorer.item_query(image_item)).diagnostics
    x_1d = torch.as_tensor(explorer.item_query(image_item).x_d)[None]
    assert d.code_l0 == int((explorer.sae(x_1d).codes_bl != 0).sum())
    assert d.code_l0 <= explorer.sae.cfg.levels[-1] and d.code_l0 <= d.l0


def test_inspect_thumbnails_are_top_corpus_images_of_the_top_latents(explorer, image_item):
    result = explorer.inspect(explorer.item_query(image_item), n_thumbs=3)
    assert result.thumbs
    images = np.flatnonzero((explorer.items["modality"] == "image").to_numpy())
    z_nl = full_latents_of_items(explorer, images)
    by_latent: dict[int, list[int]] = {}
    for thumb in result.thumbs:
        assert max(Image.open(thumb.fpath).size) <= 96
        by_latent.setdefault(thumb.latent_id, []).append(thumb.item)
    assert set(by_latent) <= set(result.table["latent"].head(5))
    for latent, items in by_latent.items():
        expected = images[np.argsort(-z_nl[:, latent], kind="stable")[: len(items)]]
        assert items == expected.tolist()


def test_thumbnails_have_one_reused_bounded_folder_per_index(explorer, tmp_path):
    again = Explorer(explorer.encoder, explorer.sae, explorer.index, explorer.corpus)
    assert again.thumbs_dpath == explorer.thumbs_dpath  # a second start reuses the folder
    root = explorer.thumbs_dpath.parent
    assert root.name == "thumbs" and root.parent == explorer.index.dpath.parent.parent
    assert not str(explorer.thumbs_dpath).startswith(tempfile.gettempdir() + "/sae-explorer")
    for i in range(12):
        (tmp_path / "thumbs" / f"old{i}").mkdir(parents=True)
    kept = tmp_path / "thumbs" / "current"
    removed = thumbnails.prune_thumb_folders(kept, keep=8)
    assert len(removed) == 5 and kept.is_dir()
    assert len(list((tmp_path / "thumbs").iterdir())) == 8


def test_thumbnails_follow_index_rows_past_an_unreadable_file(tmp_path):
    """Index rows skip unreadable corpus files: a thumbnail must show its row's image, not the
    corpus position's (which is one off after the corrupt file)."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a-corrupt.png").write_bytes(b"not an image at all")
    colours = {
        "b-red.png": (220, 20, 20),
        "c-green.png": (20, 200, 40),
        "d-blue.png": (30, 40, 210),
    }
    for name, rgb in colours.items():
        Image.new("RGB", (48, 48), rgb).save(folder / name)
    explorer = explorer_over(str(folder), tmp_path / "cache")
    sources = [Path(src).name for src in explorer.items["source"]]
    assert sources == list(colours)  # the corrupt file has no index row
    for row, name in enumerate(sources):
        thumb = explorer.thumbnail(row)
        assert thumb.getpixel((thumb.width // 2, thumb.height // 2)) == colours[name]
        webp = Image.open(explorer.thumbnail_fpath(row)).convert("RGB")
        centre = webp.getpixel((webp.width // 2, webp.height // 2))
        assert np.abs(np.subtract(centre, colours[name])).max() <= 8  # lossy WebP


def full_latents_of_items(explorer: Explorer, items: np.ndarray) -> np.ndarray:
    x = torch.tensor(np.asarray(explorer.index.embeddings[items], dtype=np.float32))
    return explorer.sae.encode(x).numpy()


def test_top_items_per_modality_match_the_sae(explorer):
    for modality in ("image", "text"):
        rows = np.flatnonzero((explorer.items["modality"] == modality).to_numpy())
        z_n = full_latents_of_items(explorer, rows)[:, 9]
        top = explorer.top_items(9, 5, modality)
        assert (explorer.items.iloc[top["item"]]["modality"] == modality).all()
        np.testing.assert_allclose(
            top["value"], np.sort(z_n)[::-1][: len(top)], rtol=1e-4, atol=1e-5
        )


# ---------------------------------------------------------------------- Latent
def test_latent_page_values_are_recomputable(explorer, image_item):
    latent = int(explorer.inspect(explorer.item_query(image_item)).table["latent"][0])
    page = explorer.latent_page(latent)
    assert page.summary.frequency == pytest.approx(explorer.index.frequency[latent])
    assert page.summary.max_activation == pytest.approx(float(explorer.index.max_act[latent]))
    assert 0.0 <= page.summary.image_fraction <= 1.0
    assert page.summary.image_fraction + page.summary.text_fraction == pytest.approx(1.0)
    top = explorer.index.top_examples(latent, 3)
    for row in top.itertuples():
        z = full_latents(explorer, explorer.index.embeddings[row.item_idx])[latent]
        assert float(z) == pytest.approx(row.value, rel=0.05, abs=0.05)
    values = [float(image.caption) for image in page.top_images]
    assert values == sorted(values, reverse=True)
    assert isinstance(page.top_texts, pd.DataFrame)
    assert list(page.top_texts) == ["value", "text", "item", "label"]
    assert len(page.names) > 0
    counts, edges = explorer.index.histogram(latent)
    trace = page.histogram.data[0]  # a step per 1/8-octave bin on a log activation axis
    assert page.histogram.layout.xaxis.type == "log" and trace.line.shape == "hv"
    assert np.allclose(trace.x, edges) and list(trace.y[:-1]) == list(counts)


def test_similar_latents_are_nearest_decoder_directions(explorer):
    df = explorer.similar_latents(3, n=5)
    w = explorer.sae.get_dictionary()
    cos = (w @ w[3]).numpy()
    cos[3] = -np.inf
    assert df["latent"].tolist() == np.argsort(-cos)[:5].tolist()
    np.testing.assert_allclose(df["cosine"], np.sort(cos)[::-1][:5], atol=1e-4)


def test_search_finds_latents_named_like_the_query(explorer):
    hits = explorer.search_latents("blue", n=5)
    assert list(hits.columns) == ["latent", "score", "names"] and len(hits) == 5
    assert "blue" in hits["names"].iloc[0]
    assert explorer.resolve_latent("blue") == int(hits["latent"].iloc[0])
    assert explorer.resolve_latent("7") == 7


# ---------------------------------------------------------------------- Steer
def test_steer_without_edits_changes_nothing(explorer, image_item):
    q = explorer.item_query(image_item)
    result = explorer.steer(q, [], LABELS)
    assert result.cosine_to_original == pytest.approx(1.0, abs=1e-6)
    assert result.neighbours_before["item"].tolist() == result.neighbours_after["item"].tolist()
    np.testing.assert_allclose(result.zero_shot["before"], result.zero_shot["after"], atol=1e-4)
    assert result.zero_shot["before"].sum() == pytest.approx(1.0, abs=1e-3)


def test_a_name_matching_no_latent_is_refused_with_the_closest_candidates(explorer):
    with pytest.raises(ValueError, match=r"no latent is named like 'xyzzy'") as err:
        explorer.resolve_latent("xyzzy")
    candidates = re.findall(r"#(\d+) .*? \(cosine (-?[\d.]+)\)", str(err.value))
    hits = naming.search_latents("xyzzy", explorer.encoder, explorer.saes.text, explorer.names, k=5)
    assert [int(i) for i, _ in candidates] == hits["latent_id"].tolist()
    with pytest.raises(ValueError, match="no latent is named like 'xyzzy'"):
        explorer.relative_edit("xyzzy", "scale", 2.0)  # Steer's "Add latent"
    red = explorer.resolve_latent("red")
    assert any("red" in name for name, _ in explorer.names_of(red, 5))


def test_steer_moves_the_embedding_along_the_decoder_row(explorer, image_item):
    q = explorer.item_query(image_item)
    latent = int(explorer.top_latents(q, 1)["latent"][0])
    out = steering.steer(explorer.sae, torch.as_tensor(q.x_d), [Edit(latent, "scale", 3.0)])
    z_l = full_latents(explorer, q.x_d)
    assert float(out.z_after_l[latent]) == pytest.approx(3.0 * float(z_l[latent]), rel=1e-5)
    delta_d = out.x_steered_d - torch.as_tensor(q.x_d)
    row_d = explorer.sae.W_dec[latent].detach() / explorer.sae.cfg.scaling_factor
    if not explorer.sae.cfg.normalize:
        expected = 2.0 * float(z_l[latent]) * row_d
        torch.testing.assert_close(delta_d, expected, rtol=1e-3, atol=1e-4)
    result = explorer.steer(q, [Edit(latent, "zero")], LABELS)
    assert result.edits.loc[0, "after"] == 0.0
    assert result.cosine_to_original < 1.0


def test_steer_zero_shot_matches_direct_computation(explorer, image_item):
    q = explorer.item_query(image_item)
    result = explorer.steer(q, [], LABELS)
    x = torch.nn.functional.normalize(torch.as_tensor(q.x_d)[None], dim=-1)
    t = torch.nn.functional.normalize(explorer.encoder.encode_texts(LABELS), dim=-1)
    expected = (explorer.logit_scale * x @ t.T).softmax(-1)[0].numpy()
    np.testing.assert_allclose(result.zero_shot["before"], expected, atol=1e-3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (Edit(0, "set", float("nan")), "finite"),
        (Edit(0, "set", 1e30), "too large"),
        (Edit(10**6, "set", 1.0), "does not exist"),
        (Edit(0, "boost", 1.0), "unknown edit"),
    ],
)
def test_bad_edits_are_refused(explorer, image_item, edit, message):
    with pytest.raises(ValueError, match=message):
        explorer.steer(explorer.item_query(image_item), [edit], LABELS)


def test_labels_are_checked():
    assert check_labels("red, blue,red ,").groups == (("red", "blue"),)
    assert check_labels(["red", "blue"]).groups == (("red", "blue"),)
    groups = check_labels("red, blue; circle, star, red")
    assert groups.groups == (("red", "blue"), ("circle", "star"))
    assert groups.labels == ("red", "blue", "circle", "star") and groups.group_of("star") == 1
    with pytest.raises(ValueError, match="between 2 and 50"):
        check_labels("red")
    with pytest.raises(ValueError, match="at least 2 labels"):
        check_labels("red, blue; circle")


def test_zero_shot_takes_one_softmax_per_label_group(explorer):
    query = explorer.text_query("a large red circle on a white background")
    result = explorer.steer(query, [], "red, blue, green; circle, square, triangle")
    table = result.zero_shot
    assert list(table.columns) == ["group", "label", "before", "after"]
    for _, group in table.groupby("group"):
        assert group["before"].sum() == pytest.approx(1.0, abs=1e-3)
    best = table.loc[table.groupby("group")["before"].idxmax(), "label"].tolist()
    assert best == ["red", "circle"]  # both, not red against circle
    labels = ("red", "blue", "green", "circle", "square", "triangle")
    x_1d = torch.as_tensor(query.x_d)[None]
    one = steering.zero_shot(x_1d, explorer.label_embeddings(labels), explorer.logit_scale)
    assert float(one.sum()) == pytest.approx(1.0, abs=1e-5)  # a single softmax over all six


def test_relative_edit_is_in_units_of_the_corpus_max(explorer):
    edit = explorer.relative_edit("5", "set", 2.0)
    assert edit == Edit(5, "set", pytest.approx(2.0 * float(explorer.index.max_act[5])))
    assert explorer.relative_edit(5, "scale", 0.5).value == 0.5


def test_sweep_starts_at_the_zeroed_latent_and_uses_a_similar_baseline(explorer, image_item):
    q = explorer.item_query(image_item)
    latent = int(explorer.top_latents(q, 1)["latent"][0])
    sweep = explorer.sweep(q, latent, "red", LABELS, strengths=(0.0, 1.0, 2.0))
    zeroed = explorer.steer(q, [Edit(latent, "zero")], LABELS).zero_shot
    assert sweep.table["latent"][0] == pytest.approx(zeroed["after"][0], abs=1e-3)
    assert sweep.baseline_latent != latent
    f = explorer.index.frequency
    gaps = np.abs(np.log(f[f > 0]) - np.log(f[latent]))
    baseline_gap = abs(np.log(f[sweep.baseline_latent]) - np.log(f[latent]))
    assert baseline_gap <= np.sort(gaps)[min(20, len(gaps) - 1)] + 1e-9
    assert len(sweep.figure.data) == 2
    with pytest.raises(ValueError, match="target label"):
        explorer.sweep(q, latent, "purple", LABELS)


# ---------------------------------------------------------------------- Overview, export
def test_overview_matches_direct_computation(explorer):
    o = explorer.overview()
    x = torch.as_tensor(np.asarray(explorer.index.embeddings, np.float32))
    out = explorer.sae.forward(x)
    fvu = float(((x - out.x_hat_bd) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    assert o.stats.fvu == pytest.approx(fvu, rel=1e-3)
    assert o.stats.l0 == pytest.approx(float((out.z_bl > 0).sum(1).float().mean()), rel=1e-3)
    assert o.stats.n_items == len(explorer.corpus)
    assert o.stats.dead_latents == int((explorer.index.frequency == 0).sum())
    assert len(o.stats.level_fvu) == len(explorer.sae.cfg.levels)
    sae = explorer.sae  # per level: decode that level's TopK codes (not level_forward's path)
    xm = sae.preprocess(x)
    stats = sae.normalization_stats(xm)
    recons = [sae.decode(c, stats) for c in sae.level_codes(sae.pre_activations_model(xm, stats))]
    total = float(((x - x.mean(0)) ** 2).sum())
    level_fvu = [float(((x - r) ** 2).sum()) / total for r in recons]
    level_cos = [float(torch.cosine_similarity(x, r, dim=-1).mean()) for r in recons]
    np.testing.assert_allclose(o.stats.level_fvu, level_fvu, rtol=1e-3)
    np.testing.assert_allclose(o.stats.level_cosine, level_cos, rtol=1e-3)
    assert set(o.models["what"]) == {"CLIP", "SAE", "corpus", "index"}
    shown = o.models.to_string()  # what every visitor sees: no server paths
    assert str(explorer.index.dpath) not in shown and str(explorer.index.dpath.parent) not in shown


def test_public_ids_hide_server_paths(tmp_path):
    assert public_id(str(tmp_path / "my-sae")) == ".../my-sae"
    assert public_id(f"{tmp_path}/items.csv?text=caption") == ".../items.csv?text=caption"
    for source in ("hf-hub:org/repo/x.pth", "hf:uoft-cs/cifar10?split=test", "builtin:shapes"):
        assert public_id(source) == source


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_exports_are_stamped_with_hashes(explorer, image_item, tmp_path, fmt):
    latent_fpath = explorer.export_latent(4, tmp_path, fmt)
    inspect_fpath = explorer.export_inspect(explorer.item_query(image_item), tmp_path, fmt)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [latent_fpath.name, inspect_fpath.name]
    )  # no temp files left behind
    text = latent_fpath.read_text()
    assert explorer.sae.content_hash in text and explorer.corpus.manifest_hash in text
    if fmt == "csv":  # one plain table: pandas reads it as it is
        rows = pd.read_csv(latent_fpath, keep_default_na=False)
        stamp = dict(rows.loc[rows["table"] == "stamp", ["key", "value"]].values)
        assert stamp["sae_hash"] == explorer.sae.content_hash
        summary = dict(rows.loc[rows["table"] == "summary", ["key", "value"]].values)
        assert int(summary["latent"]) == 4
        assert list(dict.fromkeys(rows["table"]))[:3] == ["stamp", "summary", "top_texts"]
        top = pd.read_csv(inspect_fpath).query("table == 'top_latents'")
        expected = explorer.inspect(explorer.item_query(image_item), n_top=32).table
        assert top["latent"].astype(int).tolist() == expected["latent"].tolist()
    if fmt == "json":
        payload = json.loads(text)
        assert payload["summary"]["latent"] == 4
        assert payload["stamp"]["sae_hash"] == explorer.sae.content_hash
        top = json.loads(inspect_fpath.read_text())["top_latents"]
        expected = explorer.inspect(explorer.item_query(image_item), n_top=32).table
        assert [r["latent"] for r in top] == expected["latent"].tolist()
    with pytest.raises(ValueError, match="choose 'json' or 'csv'"):
        explorer.export_latent(4, tmp_path, "xml")


def test_exports_folder_is_in_the_cache_and_bounded(explorer, tmp_path):
    dpath = export.exports_dpath_for(explorer.index.dpath)
    assert dpath == explorer.index.dpath.parent.parent / "exports"
    for i in range(7):
        fpath = tmp_path / f"e{i}.json"
        fpath.write_text("{}")
        os.utime(fpath, (1000 + i, 1000 + i))
    removed = export.prune_exports(tmp_path, keep=3)
    assert sorted(p.name for p in removed) == ["e0.json", "e1.json", "e2.json", "e3.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e4.json", "e5.json", "e6.json"]


def test_exports_without_a_corpus_stamp_the_corpus_the_index_was_built_from(explorer, tmp_path):
    bare = Explorer(explorer.encoder, explorer.sae, explorer.index)  # no corpus object
    payload = json.loads(bare.export_latent(4, tmp_path).read_text())
    assert payload["stamp"]["corpus_hash"] == explorer.corpus.manifest_hash
    assert payload["stamp"]["index_key"] == explorer.index.manifest["key"]
    assert payload["stamp"]["corpus"] == explorer.corpus.source
    other = load_corpus(f"builtin:shapes?n=3&seed={shapes.DEFAULT_DEMO_SEED}")
    with pytest.raises(ValueError, match="not the corpus this index was built from"):
        Explorer(explorer.encoder, explorer.sae, explorer.index, other)


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_exports_over_precomputed_embeddings_stamp_the_index_key(explorer, tmp_path, fmt):
    x_nd = np.asarray(explorer.index.embeddings[:64], dtype=np.float32)
    index = index_embeddings(explorer.sae, x_nd, tmp_path / "index", PrecomputeConfig(n_words=0))
    bare = Explorer(explorer.encoder, explorer.sae, index)
    text = bare.export_latent(4, tmp_path / "out", fmt).read_text()
    key = index.manifest["key"]
    if fmt == "json":
        stamp = json.loads(text)["stamp"]
        assert stamp["corpus_hash"] is None  # there is no corpus: no hash, not an empty one
        assert stamp["index_key"] == key  # hashes the embedding rows, the SAE and the settings
        assert stamp["corpus"] == "precomputed embeddings"
    else:
        rows = pd.read_csv(tmp_path / "out" / f"latent-4-{explorer.sae.content_hash[:8]}.csv")
        stamp = dict(rows.loc[rows["table"] == "stamp", ["key", "value"]].values)
        assert stamp["index_key"] == key and pd.isna(stamp["corpus_hash"])


# ---------------------------------------------------------------------- trained world
@pytest.mark.skipif(not builtin_world_trained(), reason="needs the trained builtin:shapes models")
def test_boosting_the_blue_latent_makes_neighbours_of_a_red_shape_blue(explorer):
    attrs = [it.attributes or {} for it in explorer.corpus.items]
    red = next(
        i
        for i, a in enumerate(attrs)
        if a.get("color") == "red" and explorer.corpus.items[i].modality == "image"
    )
    q = explorer.item_query(red)
    blue = explorer.resolve_latent("blue")

    def blue_share(df: pd.DataFrame) -> float:
        images = df[df["modality"] == "image"]
        return float(np.mean([attrs[i].get("color") == "blue" for i in images["item"]]))

    before = explorer.steer(q, [], LABELS, k=10).neighbours_before
    after = explorer.steer(q, [explorer.relative_edit(blue, "set", 3.0)], LABELS, k=10)
    assert blue_share(before) < 0.5
    assert blue_share(after.neighbours_after) > 0.5
    zs = after.zero_shot.set_index("label")
    assert zs.loc["blue", "after"] > zs.loc["blue", "before"]
    assert shapes.ATTRIBUTES["color"].count("blue") == 1
