"""The app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright), all four
tabs: upload an image and see the top-latents table filled, open a latent from the table and from
a thumbnail, steer from a text and read the cosine, read the overview, follow deep links.
Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import quote, urlparse

import numpy as np
import pytest
from _explorer_helpers import CHROMIUM, chromium_page, launched_app, small_explorer
from PIL import Image

from sae_explorer import attribution
from sae_explorer.checkpoints import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import shapes

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with launched_app(small_explorer(tmp_path_factory.mktemp("cache"))) as url:
        yield url


@pytest.fixture(scope="module")
def page():
    pytest.importorskip("playwright.sync_api")
    with chromium_page() as page:
        yield page


def screenshot(page, name: str, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=full_page)


def test_upload_inspect_and_open_a_latent(url, page, tmp_path):
    image_fpath = tmp_path / "shape.png"
    shapes.make_item(2, seed=5).image.resize((256, 256)).save(image_fpath)

    page.goto(url)
    page.locator("#banner").wait_for()
    assert "corpus" in page.locator("#banner").inner_text()

    page.locator("#inspect-image input[type=file]").set_input_files(str(image_fpath))
    page.locator("#inspect-diagnostics", has_text="Reconstruction").wait_for()
    table = page.locator("#inspect-table")
    first_latent_cell = table.get_by_test_id("cell-0-0")
    first_latent_cell.wait_for()
    latent_id = int(re.sub(r"\D", "", first_latent_cell.inner_text()))
    assert table.locator("[role=gridcell][data-col='0']").count() >= 5
    screenshot(page, "inspect")

    first_latent_cell.click()
    summary = page.locator("#latent-summary")
    summary.locator(f"text=Latent {latent_id}").wait_for()
    assert "frequency" in summary.inner_text()
    first_image = page.locator("#latent-top img").first
    first_image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first_image.element_handle()
    )
    screenshot(page, "latent")

    # back to Inspect: clicking a thumbnail opens its latent
    page.get_by_role("tab", name="Inspect").click()
    thumb = page.locator("#inspect-thumbs figure[data-latent]").first
    thumb_latent = thumb.get_attribute("data-latent")
    thumb.click()
    summary.locator(f"text=Latent {thumb_latent}").wait_for()


def test_steer_from_a_text_and_decode(url, page):
    page.goto(url)
    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-text textarea").fill("a red circle")
    page.locator("#steer-text-start").click()
    page.locator("#steer-desc", has_text="a red circle").wait_for()
    page.locator("#steer-decode").click()
    cosine = page.locator("#steer-cosine", has_text="Cosine")
    cosine.wait_for()
    # untouched sliders are no edits: the decoded embedding is the original one
    assert "1.0000" in cosine.inner_text()
    assert page.locator("#steer-changes [role=gridcell]").count() == 0
    page.locator("#steer-after img").first.wait_for()
    screenshot(page, "steer", full_page=True)


@pytest.mark.parametrize("tab", ["inspect", "steer"])
def test_enter_submits_the_text_and_shift_enter_adds_a_line(url, page, tab):
    page.goto(url)
    page.get_by_role("tab", name=tab.capitalize()).click()
    box = page.locator(f"#{tab}-text textarea")
    box.fill("a blue")
    box.press("Shift+Enter")
    box.type("square")
    assert box.input_value() == "a blue\nsquare"  # a new line, nothing submitted yet
    box.fill("a green star")
    box.press("Enter")
    done = "#inspect-diagnostics" if tab == "inspect" else "#steer-desc"
    page.locator(done, has_text="green star" if tab == "steer" else "Reconstruction").wait_for()
    if tab == "inspect":
        assert page.locator("#inspect-table").get_by_test_id("cell-0-0").inner_text().strip()


def test_a_new_steer_input_clears_what_the_previous_one_left(url, page):
    page.goto(url)
    page.get_by_role("tab", name="Steer").click()
    box = page.locator("#steer-text textarea")
    box.fill("a red circle")
    box.press("Enter")
    page.locator("#steer-desc", has_text="a red circle").wait_for()
    page.locator("#steer-add-latent input, #steer-add-latent textarea").fill("3")
    page.locator("#steer-add").click()
    page.locator("#steer-edits [role=gridcell]").first.wait_for()
    page.locator("#steer-decode").click()
    page.locator("#steer-cosine", has_text="Cosine").wait_for()
    assert page.locator("#steer-changes [role=gridcell]").count() > 0
    box.fill("a blue square")
    box.press("Enter")
    page.locator("#steer-desc", has_text="a blue square").wait_for()
    page.wait_for_function("() => !document.querySelector('#steer-cosine').innerText.trim()")
    assert page.locator("#steer-changes [role=gridcell]").count() == 0
    assert page.locator("#steer-edits [role=gridcell]").count() == 0
    assert page.locator("#steer-after img").count() == 0


def test_overview_shows_corpus_quality(url, page):
    page.goto(url)
    page.get_by_role("tab", name="Overview").click()
    stats = page.locator("#overview-stats")
    stats.wait_for()
    text = stats.inner_text()
    assert re.search(r"L0 \d", text) and re.search(r"FVU \d", text), text
    page.locator("#overview-frequency .js-plotly-plot").wait_for()
    screenshot(page, "overview")


def test_overview_plots_stack_on_a_narrow_screen(url, page):
    page.set_viewport_size({"width": 400, "height": 900})
    try:
        page.goto(url + "?tab=overview")  # on a phone, later tabs fold into the tab bar's menu
        boxes = []
        for elem_id in ("overview-frequency", "overview-levels"):
            plot = page.locator(f"#{elem_id} .js-plotly-plot")
            plot.wait_for()
            boxes.append(plot.bounding_box())
        first, second = boxes
        assert second["y"] >= first["y"] + first["height"] - 1  # below, not beside
        assert first["width"] > 300 and second["width"] > 300
        screenshot(page, "overview-narrow", full_page=True)
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})  # chromium_page's default


def test_a_sorted_table_opens_the_clicked_row(url, page):
    page.goto(url + "?text=a%20blue%20square")
    table = page.locator("#inspect-table")
    table.get_by_test_id("cell-0-0").wait_for()
    latents = table.locator("[role=gridcell][data-col='0']")
    before = [c.inner_text() for c in latents.all()]
    activation = table.locator("th").nth(2)
    activation.hover()
    activation.get_by_role("button", name="Open cell menu").click()
    page.get_by_role("menuitem", name="Sort ascending").click()
    page.wait_for_function(
        "([sel, first]) => document.querySelector(sel).innerText.trim() !== first",
        arg=["#inspect-table [role=gridcell][data-col='0']", before[0]],
    )
    shown_first = latents.first.inner_text().strip()
    assert shown_first == before[-1]  # ascending: the weakest latent is now on top
    latents.first.click()
    page.locator("#latent-summary", has_text=f"Latent {shown_first}:").wait_for()


def test_deep_link_opens_the_latent_tab(url, page):
    page.goto(url + "?tab=latent&latent=3")
    page.locator("#latent-summary", has_text="Latent 3").wait_for()
    assert page.locator("#latent-id input").input_value() == "3"
    page.goto(url + "?text=a%20blue%20square")
    page.locator("#inspect-desc", has_text="a blue square").wait_for()
    page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()


def test_clicking_a_latents_example_inspects_it(url, page):
    page.goto(url + "?tab=latent&latent=3")
    page.locator("#latent-summary", has_text="Latent 3").wait_for()
    figure = page.locator("#latent-top figure[data-item]").first
    figure.wait_for()
    item = figure.get_attribute("data-item")
    assert f"item {item}:" in figure.get_attribute("title")  # the tooltip names the item
    figure.click()
    page.locator("#inspect-desc", has_text=f"corpus item {item} ").wait_for()
    page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()


def test_the_address_follows_the_page_and_back_reopens_it(url, page):
    """Interaction defect 4: each view a user opens is a history entry with its own link."""

    def at(pattern: str) -> None:
        page.wait_for_url(re.compile(re.escape(url) + r"\?" + pattern + "$"))

    page.goto(url)
    box = page.locator("#inspect-text textarea")
    box.fill("a blue square")
    box.press("Enter")
    at(r"tab=inspect&text=a\+blue\+square")
    cell = page.locator("#inspect-table").get_by_test_id("cell-0-0")
    latent_id = int(re.sub(r"\D", "", cell.inner_text()))
    cell.click()  # a row opens its latent: the tab and its subject change at once
    at(f"tab=latent&latent={latent_id}")
    page.get_by_role("tab", name="Overview").click()
    at("tab=overview")
    page.get_by_role("tab", name="Latent", exact=True).click()  # comes back with what it showed
    at(f"tab=latent&latent={latent_id}")

    page.go_back()
    at("tab=overview")
    page.locator("#overview-stats").wait_for(state="visible")  # reopened, not only the URL
    page.go_back()
    at(f"tab=latent&latent={latent_id}")
    page.go_back()
    at(r"tab=inspect&text=a\+blue\+square")
    page.locator("#inspect-desc").wait_for(state="visible")
    assert "a blue square" in page.locator("#inspect-desc").inner_text()
    box.fill("a red circle")  # another input: a new entry after the one gone back to
    box.press("Enter")
    at(r"tab=inspect&text=a\+red\+circle")
    page.go_back()
    at(r"tab=inspect&text=a\+blue\+square")
    page.locator("#inspect-desc", has_text="a blue square").wait_for()  # reopened, not only the URL
    page.go_forward()
    page.locator("#inspect-desc", has_text="a red circle").wait_for()


def test_a_steer_link_opens_steer_with_its_text_filled_in(url, page):
    page.goto(url + "?tab=steer&text=a%20red%20circle")
    page.locator("#steer-desc", has_text="a red circle").wait_for()
    assert page.locator("#steer-text textarea").input_value() == "a red circle"
    assert page.locator("#steer-desc").is_visible()  # the Steer tab is the one shown
    page.locator("#steer-decode").click()
    page.locator("#steer-cosine", has_text="1.0000").wait_for()  # nothing moved: the input


def test_heatmaps_show_where_the_latents_fire(url, page, tmp_path):
    image_fpath = tmp_path / "shape.png"
    shapes.make_item(4, seed=5).image.save(image_fpath)
    page.goto(url)
    page.locator("#inspect-image input[type=file]").set_input_files(str(image_fpath))
    page.locator("#inspect-diagnostics", has_text="Reconstruction").wait_for()
    page.get_by_text("Where in the image (heatmaps)").click()
    page.locator("#inspect-heat").click()
    page.locator("#inspect-heatmaps img").first.wait_for()
    assert page.locator("#inspect-heatmaps img").count() == 4  # the 4 strongest latents
    screenshot(page, "heatmaps")
    # one chosen latent by each method: the image shown is that latent's heatmap, as computed
    gallery = page.locator("#inspect-heatmaps")
    latent = int(re.search(r"#(\d+)", gallery.inner_text()).group(1))
    page.locator("#inspect-heat-latents textarea").fill(str(latent))
    encoder, sae = load_encoder("builtin:shapes", device="cpu"), load_sae("builtin:shapes")
    for method in attribution.METHODS:
        page.locator("#inspect-heat-method").get_by_label(method, exact=True).check()
        page.locator("#inspect-heat").click()
        page.wait_for_function(  # the answer for this latent and method, not the last one
            """([latent, method]) => {
                const gallery = document.querySelector("#inspect-heatmaps");
                return gallery.querySelectorAll("img").length === 1
                    && gallery.innerText.includes(latent) && gallery.innerText.includes(method);
            }""",
            arg=[f"#{latent} ", f"· {method}"],
        )
        src = gallery.locator("img").first.get_attribute("src")
        shown_hw3 = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
        maps = attribution.latent_heatmaps(encoder, sae, Image.open(image_fpath), [latent], method)
        expected_hw3 = np.asarray(attribution.overlay(maps.image_hw3, maps.maps_mhw[0]))
        assert shown_hw3.shape == expected_hw3.shape
        assert np.abs(shown_hw3.astype(int) - expected_hw3).mean() < 1.0, method


def test_a_deep_links_html_renders_as_text(url, page):
    """``?latent=<a href=...>`` shows its HTML as text in the toast (no clickable foreign link)
    and ``?text=![](https://...)`` shows as typed, with no image fetched from elsewhere."""
    fetched = []
    page.on("request", lambda request: fetched.append(request.url))
    link = '<a href="https://evil.example/login">Session expired</a>'
    page.goto(url + "?latent=" + quote(link))
    toast = page.get_by_test_id("toast-text").first
    toast.wait_for()
    assert link in toast.inner_text()
    assert toast.locator("a").count() == 0
    page.goto(url + "?text=" + quote("![](https://evil.example/pixel.png) see <b>this</b>"))
    desc = page.locator("#inspect-desc", has_text="evil.example")
    desc.wait_for()
    assert "![](https://evil.example/pixel.png) see <b>this</b>" in desc.inner_text()
    assert desc.locator("img").count() == 0 and desc.locator("b").count() == 0
    page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()
    assert not [u for u in fetched if urlparse(u).hostname == "evil.example"]


def bounding_box(locator):
    return locator.bounding_box()


def column_values(page, table_id: str, col: int) -> list[str]:
    cells = page.locator(f"#{table_id} [role=gridcell][data-col='{col}']")
    return [c.inner_text().strip() for c in cells.all()]


def test_the_latent_browser_sorts_filters_and_opens_latents(url, page):
    page.goto(url + "?tab=latents")
    info = page.locator("#browse-info")
    info.wait_for(state="visible")
    assert re.search(r"\*?\*?\d+\*?\*? of \d+ latents", info.inner_text())
    table = page.locator("#browse-table")
    table.get_by_test_id("cell-0-0").wait_for()
    before = column_values(page, "browse-table", 0)

    page.locator("#browse-sort input").click()  # sort by max activation (descending)
    page.get_by_role("option", name="max_act").click()
    page.wait_for_function(
        "([sel, first]) => document.querySelector(sel).innerText.trim() !== first",
        arg=["#browse-table [role=gridcell][data-col='0']", before[0]],
    )
    max_acts = [float(v) for v in column_values(page, "browse-table", 5)]
    assert max_acts == sorted(max_acts, reverse=True) and len(max_acts) > 5

    shown = info.inner_text()
    page.locator("#browse-min-freq input").fill("40")  # at least 40% of the items
    page.locator("#browse-min-freq input").press("Enter")
    page.wait_for_function(
        "([sel, old]) => document.querySelector(sel).innerText !== old", arg=["#browse-info", shown]
    )
    frequencies = [float(v) for v in column_values(page, "browse-table", 3)]
    assert frequencies and min(frequencies) >= 0.4
    screenshot(page, "latents", full_page=True)

    latent_id = column_values(page, "browse-table", 0)[0]
    table.get_by_test_id("cell-0-0").click()  # a row opens its latent
    page.locator("#latent-summary", has_text=f"Latent {latent_id}:").wait_for()
    page.locator("#latent-agreement", has_text="Cross-modal agreement").wait_for()
    page.locator("#latent-texts [role=gridcell]").first.wait_for()  # texts beside the images
    title = page.locator("#latent-top figure[data-item]").first.get_attribute("title")
    assert " · label " in title  # the tooltip names the item and its label


def test_a_click_on_the_latent_map_opens_that_latent(url, page):
    page.goto(url + "?tab=latents")
    point = page.locator("#browse-map .scatterlayer .point").nth(10)
    point.wait_for()
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    hover = page.locator("#browse-map .hoverlayer .hovertext").first
    hover.wait_for()
    latent_id = re.search(r"latent (\d+):", hover.text_content()).group(1)
    page.mouse.click(x, y)
    page.locator("#latent-summary", has_text=f"Latent {latent_id}:").wait_for()


def test_the_overview_plots_are_the_latent_browsers_filters(url, page):
    page.goto(url + "?tab=overview")
    page.locator("#overview-frequency .barlayer").wait_for()
    bars = page.locator("#overview-frequency .barlayer .point path")
    heights = [(box or {"height": 0})["height"] for box in map(bounding_box, bars.all())]
    box = bars.nth(heights.index(max(heights))).bounding_box()  # the tallest bar
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] - 2
    page.mouse.move(x, y)
    hover = page.locator("#overview-frequency .hoverlayer .hovertext").first
    hover.wait_for()
    count = re.match(r"(\d+) latents active on", hover.text_content()).group(1)
    page.mouse.click(x, y)
    info = page.locator("#browse-info", has_text=f"{count} of ")
    info.wait_for()  # the Latents tab lists exactly the bar's latents
    assert page.locator("#browse-min-freq input").input_value() not in ("", "0")
    screenshot(page, "overview-filter")

    page.get_by_role("tab", name="Overview").click()
    point = page.locator("#overview-levels .scatterlayer .point").nth(1)
    point.wait_for()
    box = point.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_function(  # the bar's frequency range is reset
        "() => document.querySelector('#browse-min-freq input').value === '0'"
    )
    page.locator("#browse-info", has_text=f"{count} of ").wait_for(state="detached")
    assert set(column_values(page, "browse-table", 6)) == {"1"}  # COLUMNS' level: the second


def test_the_figure_button_downloads_the_latents_card(url, page, tmp_path):
    from PIL import Image

    page.goto(url + "?tab=latent&latent=3")
    page.locator("#latent-summary", has_text="Latent 3:").wait_for()
    page.get_by_role("button", name="Figure for a paper (card)").click()
    link = page.locator('#latent-figure-file a[download$=".png"]')
    link.wait_for()
    with page.expect_download() as download:
        link.click()
    fpath = tmp_path / download.value.suggested_filename
    download.value.save_as(fpath)
    with Image.open(fpath) as image:  # the card itself: a 300 dpi PNG naming the latent
        assert image.format == "PNG" and round(image.info["dpi"][0]) == 300
    assert fpath.name.startswith("latent-3-")
