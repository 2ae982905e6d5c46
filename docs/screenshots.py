"""Take the README's screenshots of each tab: ``python docs/screenshots.py``.

Serves the built-in shapes world (trained models when present), drives headless Chromium
(``/usr/bin/chromium`` through Playwright) through Inspect, Latent, Steer, Overview and Latents, and saves
``docs/<tab>.png``; then Inspect's heatmaps (``docs/heatmaps.png``), the Compare tab against a
second SAE of the world's CLIP (``--second-sae``, else one trained here with another seed:
``docs/compare.png``) and a latent's card for papers (``docs/figure.png``, shrunk).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app import DEFAULT_CONCURRENCY  # noqa: E402
from explorer_ui.browser import chromium_page  # noqa: E402
from explorer_ui.serving import served  # noqa: E402
from sae_explorer.explorer_startup import world_explorer  # noqa: E402
from sae_explorer.worlds import shapes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--items", type=int, default=600, help="shapes in the corpus")
    parser.add_argument(
        "--second-sae", type=Path, help="the Compare tab's SAE (default: trained here, seed 2)"
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dpath = Path(tmp)
        image_fpath = tmp_dpath / "red-circle.png"
        item = next(
            shapes.make_item(i, seed=11)
            for i in range(1000)
            if shapes.make_item(i, seed=11).attributes
            == {"shape": "circle", "color": "red", "background": "white", "size": "large"}
        )
        item.image.resize((224, 224)).save(image_fpath)
        explorer = world_explorer(tmp_dpath / "cache", n_items=args.items)
        viewport = {"width": 1280, "height": 860}
        with (
            served(explorer, DEFAULT_CONCURRENCY) as url,
            chromium_page(viewport, 120_000) as page,
        ):
            page.goto(url)
            page.locator("#inspect-image input[type=file]").set_input_files(str(image_fpath))
            page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()
            page.wait_for_timeout(1500)
            shot(page, args.out / "inspect.png")

            page.locator("#inspect-table").get_by_test_id("cell-0-0").click()
            page.locator("#latent-summary", has_text="Latent").wait_for()
            page.wait_for_timeout(1500)
            shot(page, args.out / "latent.png")

            page.get_by_role("tab", name="Steer").click()
            page.locator("#steer-image input[type=file]").set_input_files(str(image_fpath))
            page.locator("#steer-desc", has_text="Steering").wait_for()
            page.locator("#steer-add-latent textarea, #steer-add-latent input").first.fill("blue")
            page.locator("#steer-add").click()
            page.wait_for_timeout(1500)
            page.locator("#steer-decode").click()
            page.locator("#steer-cosine", has_text="Cosine").wait_for()
            page.locator("#steer-sweep-latent textarea, #steer-sweep-latent input").first.fill(
                "blue"
            )
            page.locator("#steer-sweep-target textarea, #steer-sweep-target input").first.fill(
                "blue"
            )
            page.locator("#steer-sweep").click()
            page.locator("#steer-sweep-plot .js-plotly-plot").wait_for()
            page.wait_for_timeout(1500)
            shot(page, args.out / "steer.png", full_page=True)

            page.get_by_role("tab", name="Overview").click()
            page.wait_for_timeout(2000)
            shot(page, args.out / "overview.png")

            page.goto(url + "?tab=latents")
            page.locator("#browse-table").get_by_test_id("cell-0-0").wait_for()
            page.locator("#browse-map .js-plotly-plot").wait_for()
            page.wait_for_timeout(2000)
            shot(page, args.out / "latents.png")

            heatmaps_shot(page, url, image_fpath, args.out / "heatmaps.png")
            second = args.second_sae or second_sae(tmp_dpath / "second-sae")
            page.goto(url + "?tab=compare")
            page.get_by_label("Second SAE").fill(str(second))
            page.get_by_role("button", name="Compare", exact=True).click()
            page.locator("#compare-summary", has_text="matched").wait_for()
            page.wait_for_timeout(1500)
            shot(page, args.out / "compare.png")
        figure_shot(explorer, tmp_dpath, args.out / "figure.png")
    return 0


def heatmaps_shot(page, url: str, image_fpath: Path, fpath: Path) -> None:
    """Inspect's heatmap panel for the uploaded image (its strongest latents)."""
    page.goto(url)
    page.locator("#inspect-image input[type=file]").set_input_files(str(image_fpath))
    page.locator("#inspect-table").get_by_test_id("cell-0-0").wait_for()
    page.get_by_text("Where in the image (heatmaps)").click()
    page.locator("#inspect-heat").click()
    page.locator("#inspect-heatmaps img").first.wait_for()
    page.wait_for_timeout(1500)
    page.locator("#inspect-heatmaps").scroll_into_view_if_needed()
    shot(page, fpath)


def second_sae(dpath: Path) -> Path:
    """A second SAE of the world's CLIP: the world's recipe, another seed, fewer embeddings."""
    from sae_explorer.checkpoints import save_sae
    from sae_explorer.encoder import load_encoder
    from sae_explorer.worlds import train_shapes

    encoder = load_encoder("builtin:shapes", device="cpu")
    cfg = train_shapes.SaeTrainConfig(n_image_items=3000, seed=2)
    return save_sae(train_shapes.train_world_sae(encoder, cfg).sae, dpath)


def figure_shot(explorer, tmp_dpath: Path, fpath: Path) -> None:
    """The card of the latent whose name scores best, as the figure command writes it (300 dpi),
    shrunk."""
    from sae_explorer.figures import export_figure

    table = explorer.latent_table.frame
    latent = int(table.loc[table["name_score"].idxmax(), "latent"])
    written = export_figure(explorer, [latent], tmp_dpath / "figures", ["png"]).paths[0]
    fpath.write_bytes(Path(written).read_bytes())
    shrink(fpath)


def shot(page, fpath: Path, full_page: bool = False) -> None:
    """Save a screenshot, then shrink it (palette PNG, at most 1100 px wide) to keep docs small."""
    page.screenshot(path=str(fpath), full_page=full_page)
    shrink(fpath)


def shrink(fpath: Path) -> None:
    """At most 1100 px wide, a 256-colour palette: small enough for the docs."""
    from PIL import Image

    image = Image.open(fpath).convert("RGB")
    if image.width > 1100:
        image = image.resize((1100, round(image.height * 1100 / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(fpath, optimize=True)
    print(f"wrote {fpath} ({fpath.stat().st_size // 1024} kB)")


if __name__ == "__main__":
    raise SystemExit(main())
