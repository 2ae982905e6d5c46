"""Figures for papers: card and grid files that open (PNG at 300 dpi, SVG as XML, PDF), stamped
with the models' and corpus's hashes and the permalinks, what a card shows, the UI button's handler
and the command line end to end on the built-in world."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from _explorer_helpers import explorer_over, small_explorer
from PIL import Image

from explorer_ui.figure_export import latent_figure
from explorer_ui.latent_tab import latent_link
from sae_explorer import __main__ as cli
from sae_explorer import figures
from sae_explorer.explorer.names import candidates_table
from sae_explorer.worlds import shapes

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    return small_explorer(tmp_path_factory.mktemp("figures"))


def svg_text(fpath: Path) -> str:
    root = ET.parse(fpath).getroot()  # raises if the SVG is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))


def check_stamped(paths, explorer, latents) -> None:
    by_format = {p.suffix: p for p in paths}
    stamp = explorer.stamp()
    hashes = [stamp.sae_hash[:12], stamp.corpus_hash[:12], stamp.index_key[:12]]
    links = [figures.permalink(i) for i in latents]
    png = Image.open(by_format[".png"])
    png.load()
    assert tuple(round(v) for v in png.info["dpi"]) == (300, 300)
    assert all(h in png.info["Description"] for h in [*hashes, *links])
    shown = svg_text(by_format[".svg"])
    assert all(h in shown for h in [*hashes, *links, stamp.clip])  # drawn as text, not paths
    pdf = by_format[".pdf"].read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF")
    assert all(h.encode() in pdf for h in [*hashes, *links])  # in its metadata


def test_a_card_in_every_format(explorer, tmp_path):
    latent = int(np.flatnonzero(explorer.names.named_l)[0])
    files = figures.export_figure(explorer, [latent], tmp_path)
    assert files.latents == (latent,)
    assert [p.suffix for p in files.paths] == [".png", ".svg", ".pdf"]
    assert files.paths[0].name == f"latent-{latent}-{explorer.sae_hash[:8]}.png"
    check_stamped(files.paths, explorer, [latent])
    width_in = Image.open(files.paths[0]).size[0] / figures.DPI
    assert width_in == pytest.approx(figures.CARD_SIZE_IN[0], abs=0.01)
    shown = svg_text(files.paths[1])
    assert explorer.names.label(latent) in shown and "activation histogram" in shown


def test_a_grid_of_latents(explorer, tmp_path):
    files = figures.export_figure(explorer, [3, 5, 7], tmp_path, ["png", "svg", "pdf"])
    assert files.paths[0].name.startswith("latents-3-5-7-")
    check_stamped(files.paths, explorer, [3, 5, 7])
    width, height = Image.open(files.paths[0]).size
    card_w, card_h = figures.CARD_SIZE_IN
    assert width / figures.DPI == pytest.approx(2 * card_w, abs=0.01)  # two columns
    assert height / figures.DPI == pytest.approx(2 * card_h + figures.STAMP_HEIGHT_IN, abs=0.01)
    one_row = figures.export_figure(explorer, [3, 5], tmp_path / "row", ["png"], n_columns=3)
    assert Image.open(one_row.paths[0]).size[0] / figures.DPI == pytest.approx(2 * card_w, abs=0.01)


def test_what_a_card_shows(explorer):
    latent = 5
    card = figures.card_data(explorer, latent, n_images=6)
    top = explorer.top_items(latent, 6, "image")
    assert [v for _, v, _ in card.images] == pytest.approx(top["value"].tolist())
    assert [label for _, _, label in card.images] == top["label"].tolist()
    assert all(isinstance(image, Image.Image) for image, _, _ in card.images)
    table = candidates_table(explorer, latent, figures.N_NAMES)
    assert card.score_name == "AUROC"
    assert card.names["score"].tolist() == table["AUROC"].tolist()
    assert card.names["name"].tolist() == table["name"].tolist()
    assert card.title == f"Latent {latent}: {explorer.names_text(latent, 5)}"
    counts, edges = card.histogram
    want = explorer.index.histogram(latent)
    assert counts.tolist() == want.counts.tolist() and edges.tolist() == want.edges.tolist()
    top_items = explorer.index.top_examples(latent, figures.N_TOP_EXAMPLES)
    assert card.label_mix.sum() == len(top_items)
    assert card.label_mix.to_dict() == top_items["label"].value_counts().to_dict()
    assert set(card.label_mix.index) <= set(shapes.ATTRIBUTES["shape"])
    assert card.permalink == latent_link(latent) == "?tab=latent&latent=5"


def test_a_text_corpus_card_shows_texts(tmp_path):
    texts = explorer_over("builtin:shapes?n=40&modality=text", tmp_path)
    latent = int(np.argmax(texts.frequency_l))
    card = figures.card_data(texts, latent)
    assert card.images == [] and len(card.texts) > 0
    files = figures.export_figure(texts, [latent], tmp_path / "out", ["svg"])
    assert card.texts[0][0][:40] in svg_text(files.paths[0])


def test_bad_requests_are_named(explorer, tmp_path):
    with pytest.raises(ValueError, match=r"figure formats \['gif'\]"):
        figures.export_figure(explorer, [1], tmp_path, ["png", "gif"])
    with pytest.raises(ValueError, match="at least one latent"):
        figures.export_figure(explorer, [], tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        figures.export_figure(explorer, [10**6], tmp_path)
    with pytest.raises(ValueError, match="n_columns"):
        figures.latent_figure(explorer, [1], n_columns=0)
    with pytest.raises(ValueError, match="whole numbers separated by commas"):
        figures.parse_latents("12,x")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_the_latent_tab_button_writes_a_downloadable_figure(explorer):
    fpath = Path(latent_figure(explorer, 4.0, "svg"))
    assert fpath.is_file() and fpath.suffix == ".svg"
    assert figures.permalink(4) in svg_text(fpath)
    with pytest.raises(ValueError, match="open a latent first"):
        latent_figure(explorer, None, "png")


def test_the_command_line_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    world = ["--clip", "builtin:shapes", "--sae", "builtin:shapes"]
    args = [*world, "--corpus", "builtin:shapes?n=60", "--cache-dir", str(tmp_path / "cache")]
    rc = cli.main(["figure", "--latents", "12,87", *args, "--out", str(out), "--strict"])
    assert rc == 0
    printed = capsys.readouterr().out.split()
    paths = [Path(p) for p in printed]
    assert [p.suffix for p in paths] == [".png", ".svg", ".pdf"]
    assert all(p.parent == out and p.name.startswith("latents-12-87-") for p in paths)
    png = Image.open(paths[0])
    assert tuple(round(v) for v in png.info["dpi"]) == (300, 300)
    assert "?tab=latent&latent=87" in png.info["Description"]
    assert "corpus builtin:shapes?n=60" in svg_text(paths[1])
    rc = cli.main(["figure", "--latents", "12", *args, "--formats", "tiff", "--out", str(out)])
    assert rc == 2 and "choose from ['png', 'svg', 'pdf']" in capsys.readouterr().err
    assert "figure" in cli.COMMANDS


def test_dollar_signs_in_texts_and_labels_are_drawn_as_they_are(tmp_path):
    """Captions ("costs $5 and $6") and labels must not be read as matplotlib math."""
    import pandas as pd
    from matplotlib.figure import Figure

    card = figures.CardData(
        latent_id=3,
        title="Latent 3: $x (0.90)",
        stats="frequency $0.1",
        images=[],
        texts=[("a sign: costs $5 and $6", 1.0)],
        names=pd.DataFrame({"name": ["$y"], "score": [0.8], "named": [True]}),
        score_name="AUROC",
        histogram=(np.array([1, 2]), np.array([0.1, 0.2, 0.4])),
        label_mix=pd.Series({"$q": 3}),
        permalink="?tab=latent&latent=3",
    )
    fig = Figure()
    figures.draw_card(fig, card)  # math parsing would raise on the unbalanced "$"
    path = figures.save_figure(fig, Path(tmp_path) / "card", ["svg"], "stamp")[0]
    shown = svg_text(path)
    assert all(t in shown for t in ("costs $5 and $6", "$x (0.90)", "$y", "$q"))
