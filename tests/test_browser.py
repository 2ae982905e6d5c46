"""The app in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright): load the
page, upload an image, see the top-latents table filled, open a latent from it, follow a deep
link. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from _explorer_helpers import builtin_world_trained, free_port, small_explorer

import app
from sae_explorer.worlds import shapes

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
    pytest.mark.filterwarnings("ignore::Warning:gradio.queueing"),
]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    demo = app.build_demo(small_explorer(tmp_path_factory.mktemp("cache")))
    demo.queue(default_concurrency_limit=app.DEFAULT_CONCURRENCY)
    port = free_port()
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True, css=app.CSS)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def test_upload_inspect_and_open_a_latent(url, page, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
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
    page.screenshot(path=str(ARTIFACTS / "browser-inspect.png"))

    first_latent_cell.click()
    summary = page.locator("#latent-summary")
    summary.locator(f"text=Latent {latent_id}").wait_for()
    assert "frequency" in summary.inner_text()
    first_image = page.locator("#latent-top img").first
    first_image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=first_image.element_handle()
    )
    page.screenshot(path=str(ARTIFACTS / "browser-latent.png"))

    # back to Inspect: clicking a thumbnail opens its latent
    page.get_by_role("tab", name="Inspect").click()
    thumb = page.locator("#inspect-thumbs figure[data-latent]").first
    if builtin_world_trained() or thumb.count():
        thumb_latent = thumb.get_attribute("data-latent")
        thumb.click()
        summary.locator(f"text=Latent {thumb_latent}").wait_for()


def test_deep_link_opens_the_latent_tab(url, page):
    page.goto(url + "?tab=latent&latent=3")
    page.locator("#latent-summary", has_text="Latent 3").wait_for()
    assert page.locator("#latent-id input").input_value() == "3"
    page.goto(url + "?text=a%20blue%20square")
    page.locator("#inspect-desc", has_text="a blue square").wait_for()
    page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()
