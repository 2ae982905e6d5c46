"""The app through ``gradio_client`` against a launched server: each tab's main action returns
the expected kinds of results, bad input gets a clear error and the next request still works,
and sessions do not see each other's state."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import httpx
import pandas as pd
import pytest
from _explorer_helpers import huge_png_header, launched_app, small_explorer
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from explorer_ui.exports import export_dpath
from explorer_ui.steer_tab import N_SLIDERS
from sae_explorer.worlds import shapes

LABELS = "red, blue, green, yellow"

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # pandas 3 notices


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def url(explorer):
    with launched_app(explorer) as url:
        yield url


@pytest.fixture(scope="module")
def client(url) -> Client:
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    dpath = tmp_path_factory.mktemp("uploads")
    out = {}
    out["shape"] = dpath / "shape.png"
    shapes.make_item(1, seed=5).image.save(out["shape"])
    out["garbage"] = dpath / "garbage.png"
    out["garbage"].write_bytes(b"definitely not a png")
    buf = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 200, 10)).save(buf, format="JPEG")
    out["truncated"] = dpath / "truncated.jpg"
    out["truncated"].write_bytes(buf.getvalue()[:200])
    out["bomb"] = dpath / "bomb.png"
    out["bomb"].write_bytes(huge_png_header(20_000, 20_000))
    out["tiny"] = dpath / "tiny.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(out["tiny"])
    out["rgba"] = dpath / "rgba.png"
    Image.new("RGBA", (40, 40), (0, 0, 255, 128)).save(out["rgba"])
    out["cmyk"] = dpath / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (255, 0, 0, 0)).save(out["cmyk"])
    return out


def assert_inspect_result(result, n_rows_at_least: int = 1) -> None:
    desc, diag, levels, table, bar, thumbs = result
    assert desc.startswith("**Input:**")
    assert "cosine" in diag and "L0" in diag
    assert "Encoded with checkpoint statistics" in diag  # the built-in SAE: trained on both
    assert levels["type"] == "plotly" and bar["type"] == "plotly"
    assert table["headers"][:3] == ["latent", "names", "activation"]
    assert len(table["data"]) >= n_rows_at_least
    activations = [row[2] for row in table["data"]]
    assert activations == sorted(activations, reverse=True)
    # one titled grid per top latent with images, in table order
    titles = re.findall(r'<div class="thumb-group-title">#(\d+) ', thumbs)
    assert titles and [int(t) for t in titles] == [
        row[0] for row in table["data"] if row[0] in {int(t) for t in titles}
    ]
    assert all(f'data-latent="{t}"' in thumbs for t in titles) and "data-item=" in thumbs


def test_inspect_text_image_and_item(client, images):
    assert_inspect_result(client.predict("a red circle", api_name="/inspect_text"))
    assert_inspect_result(client.predict(handle_file(images["shape"]), api_name="/inspect_image"))
    result = client.predict(3, api_name="/inspect_item")
    assert_inspect_result(result)
    assert "corpus item 3" in result[0]


def test_the_api_can_hide_dense_latents(client):
    *_, table, _, _ = client.predict("a red circle", api_name="/inspect_text")
    frequency = table["headers"].index("frequency")
    cut = sorted(row[frequency] for row in table["data"])[len(table["data"]) // 2]
    percent = round(100 * cut, 1)
    *_, sparse, _, _ = client.predict("a red circle", percent, api_name="/inspect_text")
    assert sparse["data"] and all(row[frequency] <= percent / 100 for row in sparse["data"])
    assert {row[frequency] for row in table["data"]} - {row[frequency] for row in sparse["data"]}


def test_odd_images_are_converted_and_inspected(client, images):
    for kind in ("tiny", "rgba", "cmyk"):
        assert_inspect_result(client.predict(handle_file(images[kind]), api_name="/inspect_image"))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("garbage", "is not an image"),
        ("truncated", "truncated or corrupt"),
        ("bomb", "the limit is 40,000,000"),
    ],
)
def test_bad_uploads_get_a_clear_error_and_the_app_keeps_serving(client, images, kind, message):
    with pytest.raises(AppError, match=message):
        client.predict(handle_file(images[kind]), api_name="/inspect_image")
    assert_inspect_result(client.predict(handle_file(images["shape"]), api_name="/inspect_image"))


@pytest.mark.parametrize(
    ("api_name", "args", "message"),
    [
        ("/inspect_text", ("   ",), "the text is empty"),
        ("/inspect_item", (10**7,), "does not exist"),
        ("/inspect_item", (2.5,), "not a whole number"),
        ("/latent", (2.5,), "not a whole number"),
        ("/latent", (10**7,), "does not exist"),
        ("/search", ("",), "type a word"),
        ("/export_latent", (10**7, "json"), "does not exist"),
    ],
)
def test_bad_values_get_a_clear_error(client, api_name, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=api_name)
    assert client.predict(2, api_name="/latent")[0] == 2


def test_ten_thousand_character_text_works(client):
    assert_inspect_result(client.predict("blue square " * 834, api_name="/inspect_text"))


def is_webp(url: str) -> bool:
    response = httpx.get(url)
    return response.status_code == 200 and Image.open(io.BytesIO(response.content)).format == "WEBP"


def test_latent_page(client, explorer, url):
    outputs = client.predict(5, api_name="/latent")
    latent_id, summary, gallery, quant_gallery, hist, names, texts, similar, quant = outputs[:9]
    family, tree, agreement, label_mix = outputs[9:]
    assert agreement.startswith("**Cross-modal agreement ") and label_mix["type"] == "plotly"
    assert latent_id == 5
    assert summary.startswith("### Latent 5") and 'href="?tab=latent&amp;latent=5"' in summary
    srcs = re.findall(r'<img src="(gradio_api/thumbs/[^"]+)"', gallery)
    assert srcs and all(is_webp(url + src) for src in srcs)  # served, by name only
    captions = [float(c) for c in re.findall(r"<figcaption>([^<]+)</figcaption>", gallery)]
    assert captions == sorted(captions, reverse=True)
    # one thumbnail per image row of the quantile table, in its order, captioned with its value
    assert quant["headers"] == ["quantile_bin", "value", "modality", "label"]
    image_values = [row[1] for row in quant["data"] if row[2] == "image"]
    quant_srcs = re.findall(r'<img src="(gradio_api/thumbs/[^"]+)"', quant_gallery)
    assert len(quant_srcs) == len(image_values) > 0
    assert all(is_webp(url + src) for src in quant_srcs)
    quant_captions = [
        float(c) for c in re.findall(r"<figcaption>([^<]+)</figcaption>", quant_gallery)
    ]
    assert quant_captions == pytest.approx(image_values, abs=6e-4)  # shown to 3 decimals
    assert hist["type"] == "plotly"
    assert similar["headers"] == ["latent", "cosine", "names"] and len(similar["data"]) > 0
    assert names["headers"] == ["name", "AUROC", "named", "cosine"]
    assert texts["headers"] == ["value", "text", "item", "label"]
    assert len(quant["data"]) > 0
    assert family["headers"] == [
        "relation",
        "latent",
        "level",
        "p_parent",
        "p_child",
        "n_both",
        "names",
    ]
    assert tree.startswith("**Descendants")


def test_search(client):
    result = client.predict("blue", api_name="/search")
    hits = result.get("value", result)
    assert hits["headers"] == ["latent", "score", "names"] and len(hits["data"]) > 0


def test_steer_start_decode_and_sweep(client):
    with pytest.raises(AppError, match="start from an image"):
        client.predict(LABELS, *([0.0] * N_SLIDERS), api_name="/steer")
    start = client.predict("a red circle", api_name="/steer_start_text")
    desc, *rest = start
    sliders, (edits, cosine, zero_shot, changes, *_) = rest[:N_SLIDERS], rest[N_SLIDERS:]
    assert edits["data"] == [] and cosine == "" and changes["data"] == []  # a fresh start
    assert desc.startswith("**Steering:**")
    visible = [s for s in sliders if s.get("visible")]
    assert len(visible) == N_SLIDERS
    assert all(0 <= s["value"] <= s["maximum"] for s in visible)
    values = [s["value"] for s in visible]
    unchanged = client.predict(LABELS, *values, api_name="/steer")
    assert "1.0000" in unchanged[0]  # untouched sliders are no edits: same embedding
    assert unchanged[2]["data"] == []  # and no edited latents
    values[0] = 0.0
    cosine, zero_shot, changes, before, after, before_df, _ = client.predict(
        LABELS, *values, api_name="/steer"
    )
    assert "Cosine" in cosine and "1.0000" not in cosine
    assert (
        zero_shot["headers"] == ["group", "label", "before", "after"]
        and len(zero_shot["data"]) == 4
    )
    assert changes["data"][0][3] == 0.0 or any(row[3] == 0.0 for row in changes["data"])
    assert before_df["headers"] == ["item", "cosine", "modality", "label"]
    assert before.count("<img") == after.count("<img") > 0  # nearest corpus images
    table = client.predict("blue", "set", 2.0, api_name="/add_edit")
    assert table["data"][0][1] == "set"
    sweep = client.predict("blue", "blue", LABELS, api_name="/sweep")
    assert sweep["type"] == "plotly"


def test_huge_and_nan_strengths_are_refused(client):
    client.predict("a red circle", api_name="/steer_start_text")
    with pytest.raises(AppError, match="greater than maximum"):
        client.predict(LABELS, 1e30, *([0.0] * (N_SLIDERS - 1)), api_name="/steer")
    with pytest.raises(AppError, match=r"too large|finite"):
        client.predict("blue", "set", 1e30, api_name="/add_edit")
    assert client.predict("blue", "set", 1.0, api_name="/add_edit")["data"]


def test_sessions_do_not_share_state(url):
    a, b = Client(url, verbose=False), Client(url, verbose=False)
    start_a = a.predict("a red circle", api_name="/steer_start_text")
    values_a = [s["value"] for s in start_a[1 : 1 + N_SLIDERS]]
    alone = a.predict(LABELS, *values_a, api_name="/steer")
    b.predict(7, api_name="/steer_start_item")
    b.predict("green", "set", 3.0, api_name="/add_edit")
    again = a.predict(LABELS, *values_a, api_name="/steer")
    assert again[1] == alone[1]  # a's zero-shot table is untouched by b's input and edits
    assert again[5] == alone[5]


def test_exports_are_files_stamped_with_hashes(url, explorer):
    client = Client(url, verbose=False)  # a new session: nothing inspected yet
    fpath = Path(client.predict(5, "json", api_name="/export_latent"))
    payload = json.loads(fpath.read_text())
    assert payload["summary"]["latent"] == 5
    assert payload["stamp"]["sae_hash"] == explorer.sae.content_hash
    assert payload["stamp"]["corpus_hash"] == explorer.corpus.manifest_hash
    with pytest.raises(AppError, match="inspect an image"):
        client.predict("csv", api_name="/export_inspect")
    client.predict("a red circle", api_name="/inspect_text")
    rows = pd.read_csv(client.predict("csv", api_name="/export_inspect"))
    assert list(dict.fromkeys(rows["table"])) == ["stamp", "summary", "top_latents"]
    stamp = dict(rows.loc[rows["table"] == "stamp", ["key", "value"]].values)
    assert stamp["sae_hash"] == explorer.sae.content_hash


def test_exports_share_one_folder_and_different_inputs_keep_their_files(explorer):
    folder = export_dpath(explorer)
    assert export_dpath(explorer) == folder  # one folder, reused
    assert folder.parent == explorer.index.dpath.parent.parent  # in the cache, not /tmp
    a = explorer.export_inspect(explorer.text_query("a red circle"), folder, "json")
    b = explorer.export_inspect(explorer.text_query("a blue square"), folder, "json")
    assert a.parent == b.parent == Path(folder) and a != b
    assert "red circle" in json.loads(a.read_text())["summary"]["input"]
    again = explorer.export_inspect(explorer.text_query("a red circle"), folder, "json")
    assert again == a  # the same input reuses its file
