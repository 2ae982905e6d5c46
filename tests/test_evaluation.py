"""The evaluation report (``sae_explorer.evaluation``, ``python -m sae_explorer evaluate``) against
known answers: CKNNA of a representation with itself and with noise, an identity SAE, the error
term added back, per-level numbers against a direct computation, the written files, and the
index's cached embeddings read instead of encoding the corpus again."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from _explorer_helpers import explorer_over, small_explorer

from explorer_ui import overview_tab
from sae_explorer import __main__ as entry
from sae_explorer.checkpoints import load_sae
from sae_explorer.encoder import ClipEncoder
from sae_explorer.evaluation import (
    ClassPrompts,
    EvaluationConfig,
    cknna,
    cuts_of,
    evaluate,
    label_tasks,
    run_cuts,
)
from sae_explorer.evaluation import cli as evaluate_cli
from sae_explorer.evaluation.prompts import check_templates, templates_for
from sae_explorer.evaluation.report import JSON_FNAME, LATEX_FNAME, MARKDOWN_FNAME
from sae_explorer.modality_stats import ModalityStats
from sae_explorer.sae import SAE, SAEConfig
from sae_explorer.worlds import shapes


# --------------------------------------------------------------------------- helpers
def dense_cknna(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """CKNNA written out densely from its definition (Huh et al.; MSAE's metrics.py): the
    reference the O(n k) implementation is checked against."""
    a, b = a.double(), b.double()
    kernel_a, kernel_b = a @ a.T, b @ b.T

    def hsic(p, q):
        m = p.shape[0]
        p, q = p.clone().fill_diagonal_(0), q.clone().fill_diagonal_(0)
        total = (p * q.T).sum() + p.sum() * q.sum() / ((m - 1) * (m - 2))
        return (total - 2 * (p @ q).sum() / (m - 2)) / (m * (m - 3))

    def mask(kernel):
        idx = kernel.clone().fill_diagonal_(float("-inf")).topk(k, dim=1).indices
        return torch.zeros_like(kernel).scatter_(1, idx, 1.0)

    mask_a, mask_b = mask(kernel_a), mask(kernel_b)
    shared = mask_a * mask_b
    cross = hsic(shared * kernel_a, shared * kernel_b)
    return float(
        cross
        / (
            hsic(mask_a * kernel_a, mask_a * kernel_a) * hsic(mask_b * kernel_b, mask_b * kernel_b)
        ).sqrt()
    )


def identity_sae(d: int) -> SAE:
    """relu(x) - relu(-x) = x: a ReLU "SAE" of 2d latents that reconstructs exactly."""
    eye = torch.eye(d)
    cfg = SAEConfig(n_inputs=d, n_latents=2 * d, activation="ReLU")
    tensors = {
        "pre_bias": torch.zeros(d),
        "encoder": torch.cat([eye, -eye], dim=1),
        "latent_bias": torch.zeros(2 * d),
        "decoder": torch.cat([eye, -eye], dim=0),
    }
    return SAE.from_tensors(cfg, tensors)


def labelled_data(n: int = 400, d: int = 16, n_classes: int = 4, seed: int = 0):
    """Embeddings clustered by class, half images half texts, with random class prompts."""
    gen = torch.Generator().manual_seed(seed)
    centres_cd = torch.randn(n_classes, d, generator=gen)
    label_n = torch.arange(n) % n_classes
    x_nd = centres_cd[label_n] + 1.5 * torch.randn(n, d, generator=gen)
    classes = [f"class{c}" for c in range(n_classes)]
    items = pd.DataFrame(
        {
            "modality": ["image" if i % 2 else "text" for i in range(n)],
            "label": [classes[int(c)] for c in label_n],
        }
    )
    unit_cd = torch.nn.functional.normalize(
        centres_cd + 0.3 * torch.randn(n_classes, d, generator=gen), dim=-1
    )
    prompts = ClassPrompts("label", classes, unit_cd, 20.0, 1)
    return x_nd.numpy().astype(np.float32), items, prompts


def saes_of(sae: SAE):
    return ModalityStats().saes(sae)


# --------------------------------------------------------------------------- CKNNA
def test_cknna_of_a_representation_with_itself_is_one_and_with_noise_about_zero():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 32, generator=gen)
    assert cknna(a, a) == pytest.approx(1.0, abs=1e-9)
    assert cknna(a, 3.0 * a) == pytest.approx(1.0, abs=1e-9)  # a linear kernel's scale cancels
    noise = torch.randn(500, 48, generator=gen)
    assert abs(cknna(a, noise)) < 0.05


def test_cknna_matches_its_dense_definition():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(200, 12, generator=gen)
    b = a @ torch.randn(12, 20, generator=gen) + 0.7 * torch.randn(200, 20, generator=gen)
    value = cknna(a, b)
    assert 0.1 < value < 0.95
    assert value == pytest.approx(dense_cknna(a, b), abs=1e-6)  # float32 kernels
    assert cknna(a, b, k=4) == pytest.approx(dense_cknna(a, b, k=4), abs=1e-6)


def test_cknna_refuses_too_few_items():
    with pytest.raises(ValueError, match="more than 10 items"):
        cknna(torch.randn(10, 4), torch.randn(10, 4))


# --------------------------------------------------------------------------- known answers
def test_an_identity_sae_costs_nothing():
    x_nd, items, prompts = labelled_data()
    ev = evaluate(
        saes_of(identity_sae(x_nd.shape[1])),
        x_nd,
        items,
        [prompts],
        EvaluationConfig(cknna_items=100),
    )
    assert ev.fidelity and {row.modality for row in ev.fidelity} == {"image", "text"}
    for row in ev.fidelity:
        assert row.accuracy_reconstruction == row.accuracy_original
        assert row.agreement == 1.0 and row.kl == pytest.approx(0.0, abs=1e-6)
        assert 0.5 < row.accuracy_original < 1.0  # a real task: neither trivial nor hopeless
    for row in ev.reconstruction:
        assert row.fvu == pytest.approx(0.0, abs=1e-10) and row.cosine == pytest.approx(1.0)
        assert row.fvu_clip == pytest.approx(0.0, abs=1e-10)
        assert row.l0 == pytest.approx(x_nd.shape[1])  # one of relu(x), relu(-x) per feature
        assert row.sparsity == pytest.approx(0.5)
    for row in ev.reconstruction:
        if row.modality != "all":  # x_hat == x; codes (relu(x), relu(-x)) have another kernel
            assert row.cknna_recon == pytest.approx(1.0)
            assert 0.3 < row.cknna_codes < 1.0


def test_the_error_term_added_back_restores_clips_predictions():
    x_nd, items, prompts = labelled_data(seed=3)
    cfg = SAEConfig.matryoshka(x_nd.shape[1], 32, 2)
    sae = SAE(cfg, generator=torch.Generator().manual_seed(0))  # random: a poor reconstruction
    ev = evaluate(saes_of(sae), x_nd, items, [prompts], EvaluationConfig(cknna_items=100))
    assert min(row.agreement for row in ev.fidelity) < 0.9
    for row in ev.fidelity:
        assert row.agreement_with_error == 1.0
        assert row.kl_with_error == pytest.approx(0.0, abs=1e-5)
        assert row.kl > 1e-3


def test_per_level_numbers_match_a_direct_computation():
    x_nd, items, prompts = labelled_data(n=300, seed=5)
    cfg = SAEConfig.matryoshka(x_nd.shape[1], 64, 4)
    sae = SAE(cfg, generator=torch.Generator().manual_seed(2)).requires_grad_(False)
    with torch.no_grad():
        sae.mean.copy_(torch.from_numpy(x_nd.mean(0)))  # a mean-centred SAE, as MSAE's are
    ev = evaluate(saes_of(sae), x_nd, items, [prompts], EvaluationConfig(ks=(8,), batch_size=64))
    assert ev.cuts == ["k=4", "k=8", "k=16", "k=32", "k=64", "top-8"]
    rows = {(r.modality, r.cut): r for r in ev.reconstruction}
    fidelity = {(r.modality, r.cut): r for r in ev.fidelity}
    x = torch.from_numpy(x_nd)
    image = torch.from_numpy((items["modality"] == "image").to_numpy().copy())
    xm = sae.preprocess(x)
    codes = sae.level_codes(sae.pre_activations_model(xm))  # dense codes: not the pass's path
    codes.append(sae.encode(x, topk=8))
    for cut, z in zip(ev.cuts, codes):
        recon_m = sae.decode_model(z)
        recon = sae.postprocess(recon_m)
        for modality, rows_mask in (("image", image), ("text", ~image), ("all", image | ~image)):
            row = rows[(modality, cut)]
            xs, xms, rs, rms, zs = (
                x[rows_mask],
                xm[rows_mask],
                recon[rows_mask],
                recon_m[rows_mask],
                z[rows_mask],
            )
            fvu = ((xms - rms).var(-1) / xms.var(-1)).mean()
            assert row.fvu == pytest.approx(float(fvu), rel=1e-4)
            assert row.cosine == pytest.approx(
                float(torch.cosine_similarity(xms, rms).mean()), rel=1e-5
            )
            assert row.l0 == pytest.approx(float((zs != 0).sum(1).float().mean()), rel=1e-6)
            assert row.sparsity == pytest.approx(float((zs == 0).float().mean()), rel=1e-6)
            assert row.dead_latents == int(((zs != 0).sum(0) == 0).sum())
            total = float(((xs - xs.mean(0)) ** 2).sum())
            assert row.fvu_clip == pytest.approx(float(((xs - rs) ** 2).sum()) / total, rel=1e-4)
            if modality == "all":
                continue
            assert row.cknna_codes == pytest.approx(dense_cknna(xms, zs), abs=1e-6)
            assert row.cknna_recon == pytest.approx(dense_cknna(xms, rms), abs=1e-6)
            labels = torch.tensor(
                [prompts.classes.index(v) for v in items["label"][rows_mask.numpy()]]
            )
            scores = lambda v: torch.nn.functional.normalize(v, dim=-1) @ prompts.embeddings_cd.T  # noqa: E731
            f = fidelity[(modality, cut)]
            assert f.accuracy_original == pytest.approx(
                float((scores(xs).argmax(1) == labels).float().mean())
            )
            assert f.accuracy_reconstruction == pytest.approx(
                float((scores(rs).argmax(1) == labels).float().mean())
            )
            assert f.agreement == pytest.approx(
                float((scores(xs).argmax(1) == scores(rs).argmax(1)).float().mean())
            )
            p, q = (20 * scores(xs)).log_softmax(1), (20 * scores(rs)).log_softmax(1)
            assert f.kl == pytest.approx(float((p.exp() * (p - q)).sum(1).mean()), rel=1e-4)
    per_class = [r for r in ev.per_class if r.modality == "image" and r.cut == "k=4"]
    assert sum(r.n_items for r in per_class) == fidelity[("image", "k=4")].n_items
    weighted = sum(r.agreement * r.n_items for r in per_class) / sum(r.n_items for r in per_class)
    assert weighted == pytest.approx(fidelity[("image", "k=4")].agreement)


@pytest.mark.parametrize(
    "cfg",
    [
        SAEConfig.matryoshka(8, 32, 2),  # nesting ends at n_latents: the full level is inference
        SAEConfig(n_inputs=8, n_latents=32, activation="TopKReLU", k=4, nesting_list=(4, 8)),
        SAEConfig(n_inputs=8, n_latents=32, activation="TopKReLU", k=4, inference="topk"),
        SAEConfig(n_inputs=8, n_latents=32, activation="ReLU"),
        SAEConfig(
            n_inputs=8,
            n_latents=32,
            activation="TopKReLU",
            k=4,
            nesting_list=(8, 32),
            nesting_by="width",
        ),
    ],
)
def test_the_inference_cut_appears_only_when_no_level_gives_it(cfg):
    sae = SAE(cfg, generator=torch.Generator().manual_seed(0))
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    cuts = cuts_of(sae)
    batch = run_cuts(sae, x, cuts)
    inference = sae.forward(x).x_hat_bd
    last = batch.outputs[-1]
    torch.testing.assert_close(last.recon_bd, inference)  # the last cut is always the inference one
    level_recon = batch.outputs[len(cfg.levels) - 1].recon_bd
    assert sae.inference_is_last_level() == torch.allclose(level_recon, inference, atol=1e-6)
    assert (cuts[-1].kind == "inference") != sae.inference_is_last_level()


def test_bad_settings_are_refused_by_name():
    sae = SAE(SAEConfig.matryoshka(8, 32, 2))
    with pytest.raises(ValueError, match=r"1\.\.32"):
        cuts_of(sae, [0])
    with pytest.raises(ValueError, match="exactly once"):
        check_templates(["a photo"])
    items = pd.DataFrame({"modality": ["image"], "label": ["cat"], "attr_color": ["red"]})
    assert label_tasks(items) == ["attr_color"]
    assert label_tasks(items, ["color", "label"]) == ["attr_color", "label"]
    with pytest.raises(ValueError, match=r"no label column 'shape'.*attr_color"):
        label_tasks(items, ["shape"])
    with pytest.raises(ValueError, match="cknna_k"):
        EvaluationConfig(cknna_k=0)


def test_the_shapes_world_prompts_are_its_captions():
    templates = templates_for("attr_color", "builtin:shapes", ())
    assert len(templates) == 5 * 3 * 2
    captions = {t.format("red") for t in templates}
    red = {shapes.caption(a) for a in shapes.all_attribute_combinations() if a["color"] == "red"}
    assert captions == red
    assert templates_for("label", "builtin:shapes", ()) == templates_for(
        "attr_shape", "builtin:shapes", ()
    )
    assert templates_for("label", "ViT-B-32", ())[0] == "a photo of a {}."


# --------------------------------------------------------------------------- the command
def test_the_command_writes_stamped_reports_from_the_cached_index(tmp_path, monkeypatch, capsys):
    assert entry.COMMANDS["evaluate"][0] == "sae_explorer.evaluation.cli"
    args = [
        "--clip",
        "builtin:shapes",
        "--sae",
        "builtin:shapes",
        "--corpus",
        "builtin:shapes?n=40",
    ]
    args += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--ks", "16"]
    assert entry.main(["evaluate", *args, "--out", str(tmp_path / "first")]) == 0

    def no_encoding(*a, **k):
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(ClipEncoder, "encode_pixels", no_encoding)
    monkeypatch.setattr(ClipEncoder, "encode_images", no_encoding)
    texts_encoded: list[list[str]] = []
    encode_texts = ClipEncoder.encode_texts

    def counted(self, texts, *a, **k):
        texts_encoded.append(list(texts))
        return encode_texts(self, texts, *a, **k)

    monkeypatch.setattr(ClipEncoder, "encode_texts", counted)
    out = tmp_path / "second"
    assert evaluate_cli.main([*args, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert texts_encoded == [["a"]]  # the width probe at load; the prompts came from the cache
    sae_hash = load_sae("builtin:shapes").content_hash
    report = json.loads((out / JSON_FNAME).read_text())
    first = json.loads((tmp_path / "first" / JSON_FNAME).read_text())
    assert report["reconstruction"] == first["reconstruction"]
    assert report["stamp"]["sae_hash"] == sae_hash and len(report["stamp"]["clip_hash"]) == 64
    assert report["stamp"]["corpus_hash"] and report["stamp"]["index_key"]
    assert report["cuts"][-1] == "top-16" and report["config"]["ks"] == [16]
    tasks = {row["task"] for row in report["fidelity"]}
    assert tasks == {"attr_shape", "attr_color", "attr_background", "attr_size"}
    assert all(row["agreement_with_error"] == 1.0 for row in report["fidelity"])
    assert sae_hash[:16] in printed and "agreement" in printed
    markdown = (out / MARKDOWN_FNAME).read_text()
    assert sae_hash[:16] in markdown and report["stamp"]["corpus_hash"][:16] in markdown
    table = next(line for line in markdown.splitlines() if line.startswith("| image | k=4 |"))
    cells = [c.strip() for c in table.strip("|").split("|")]
    image_k4 = next(
        r for r in report["reconstruction"] if r["modality"] == "image" and r["cut"] == "k=4"
    )
    assert float(cells[2]) == pytest.approx(image_k4["fvu"], abs=1e-4)
    latex = (out / LATEX_FNAME).read_text()
    assert sae_hash[:16] in latex and latex.count(r"\begin{tabular}") == 2
    body = latex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    columns = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", latex).group(1))
    for line in body.strip().splitlines():
        assert line.endswith(r"\\") and line.count("&") == columns - 1


def test_the_command_says_why_there_is_no_fidelity_without_labels(tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "\n".join(f"a {c} circle on a white background" for c in shapes.ATTRIBUTES["color"] * 3)
    )
    args = ["--clip", "builtin:shapes", "--sae", "builtin:shapes", "--corpus", str(texts)]
    args += [
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "out"),
        "--cknna-items",
        "12",
    ]
    assert evaluate_cli.main(args) == 0
    report = json.loads((tmp_path / "out" / JSON_FNAME).read_text())
    assert report["fidelity"] == [] and "has a label" in report["fidelity_note"]
    assert "has a label" in capsys.readouterr().out
    assert evaluate_cli.main([*args, "--labels", "color"]) == 2
    assert "no label column 'color'" in capsys.readouterr().err


# --------------------------------------------------------------------------- the Overview
def test_the_overview_plots_fidelity_per_level_for_a_labelled_corpus(tmp_path):
    explorer = small_explorer(tmp_path / "cache", n_items=60)
    overview = explorer.overview()
    assert overview.fidelity_plot is not None and overview.fidelity_note == ""
    levels = list(explorer.sae.cfg.levels)
    agreement = {t.name: list(t.y) for t in overview.fidelity_plot.data if "agreement" in t.name}
    assert set(agreement) == {f"{a}: agreement" for a in shapes.ATTRIBUTES}
    rows = {(r.task, r.cut): r for r in overview.evaluation.fidelity if r.modality == "image"}
    cuts = overview.evaluation.cuts[: len(levels)]
    assert agreement["color: agreement"] == [rows[("attr_color", cut)].agreement for cut in cuts]
    corpus = {r.cut: r for r in overview.evaluation.corpus_rows()}
    assert overview.stats.level_fvu == [corpus[cut].fvu_clip for cut in cuts]
    recon, fidelity = overview_tab.metrics_tables(overview)
    assert len(recon) == len(overview.evaluation.reconstruction) and "CKNNA(x, z)" in recon
    assert list(fidelity["labels"].unique()) == [f"attr_{a}" for a in shapes.ATTRIBUTES]


def test_the_overview_says_in_words_why_an_unlabelled_corpus_has_no_fidelity(tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(shapes.all_captions()[:30]))
    overview = explorer_over(str(texts), tmp_path / "cache").overview()
    assert overview.fidelity_plot is None
    assert overview.fidelity_note.startswith("No zero-shot fidelity: none of the 30 items")
    assert len(overview_tab.metrics_tables(overview)) == 1


def test_the_command_line_reads_lists_and_template_files(tmp_path):
    from sae_explorer.cli import dataclass_from_args

    base = ["--clip", "c", "--sae", "s", "--corpus", "x"]
    parser = evaluate_cli.build_parser()
    args = parser.parse_args([*base, "--templates", "a {}.; art of the {}", "--ks", "8, 32"])
    cfg = dataclass_from_args(EvaluationConfig, args)
    assert cfg.templates == ("a {}.", "art of the {}") and cfg.ks == (8, 32)
    listed = tmp_path / "templates.txt"
    listed.write_text("a photo of a {}.\n\nitap of a {}.\n")
    args = parser.parse_args([*base, "--templates", str(listed), "--labels", "color,size"])
    cfg = dataclass_from_args(EvaluationConfig, args)
    assert cfg.templates == ("a photo of a {}.", "itap of a {}.")
    assert cfg.labels == ("color", "size")
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--ks", "8,many"])
