"""``python -m sae_explorer evaluate --clip ... --sae ... --corpus ...``: the report of an SAE over
a corpus. The corpus's activation index is reused when it is cached (its embeddings are read, CLIP
encodes only the class prompts), else built once as ``precompute`` builds it. Prints the tables
and writes ``evaluation.json``, ``.md`` and ``.tex``, stamped with the CLIP, SAE and corpus hashes.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from sae_explorer.cli import add_dataclass_args, add_source_args, dataclass_from_args
from sae_explorer.corpus import default_cache_dpath
from sae_explorer.evaluation.run import EvaluationConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer evaluate",
        description="Evaluate an SAE on a corpus: MSAE's reconstruction metrics, CKNNA and "
        "CLIP zero-shot fidelity with the SAE spliced in, per Matryoshka level.",
    )
    add_source_args(parser)
    parser.add_argument(
        "--out",
        default="evaluation",
        help="folder for evaluation.json/.md/.tex (default: %(default)s)",
    )
    add_dataclass_args(parser, EvaluationConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tqdm import tqdm

    try:
        cfg = dataclass_from_args(EvaluationConfig, args)
        with tqdm(total=1000, unit="‰", file=sys.stderr, dynamic_ncols=True) as bar:

            def progress(frac: float, msg: str) -> None:
                bar.n = int(1000 * frac)
                bar.set_description(msg, refresh=False)
                bar.refresh()

            report = evaluate_sources(args, cfg, progress)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sae_explorer.evaluation.report import text_table, write_report

    written = write_report(report, args.out)  # first: a closed pipe must not lose the files
    print(text_table(report))
    print(f"evaluated in {report.seconds:.1f} s; wrote " + ", ".join(map(str, written)))
    return 0


def evaluate_sources(args: argparse.Namespace, cfg: EvaluationConfig, progress):
    """Load the models and the corpus's index (cached, or built once), then evaluate."""
    from sae_explorer.checkpoints import load_sae
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder
    from sae_explorer.evaluation.report import EvaluationStamp, Report, clip_hash, now_utc
    from sae_explorer.precompute import PrecomputeConfig, precompute

    encoder = load_encoder(args.clip, args.pretrained, args.device)
    sae = load_sae(args.sae)
    corpus = load_corpus(args.corpus, args.max_items, args.cache_dir)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dpath()
    index = precompute(
        encoder, sae, corpus, cache, PrecomputeConfig(names=False), lambda f, m: progress(0, m)
    )
    t0 = time.perf_counter()
    evaluation = evaluate_index(encoder, sae, index, cfg, progress, cache)
    stamp = EvaluationStamp(
        clip=encoder.model_id,
        clip_hash=clip_hash(encoder.cache_id),
        sae=str(args.sae),
        sae_hash=sae.content_hash,
        corpus=corpus.source,
        corpus_hash=corpus.manifest_hash,
        index_key=str(index.manifest["key"]),
        created_at=now_utc(),
    )
    return Report(stamp, cfg, evaluation, time.perf_counter() - t0)


def evaluate_index(
    encoder, sae, index, cfg: EvaluationConfig, progress=None, cache_root: Path | None = None
):
    """Evaluate ``sae`` over an index's cached embeddings; CLIP encodes only the class prompts,
    whose embeddings are cached beside the vocabularies' under ``cache_root`` when given (a
    full-size text tower takes seconds for a few dozen prompts on a CPU)."""
    from sae_explorer.evaluation.run import evaluate, label_tasks, prompts_for_items
    from sae_explorer.explorer.steer import clip_logit_scale
    from sae_explorer.index.names import vocabulary_embeddings

    def encode_texts(texts: list[str]):
        if cache_root is None:
            return encoder.encode_texts(texts)
        return vocabulary_embeddings(encoder, texts, cache_root, lambda f, m: None)

    items = index.items
    tasks = label_tasks(items, cfg.labels)
    logit_scale = clip_logit_scale(encoder)
    prompts = prompts_for_items(
        items, tasks, encoder.model_id, encode_texts, logit_scale, cfg.templates
    )
    saes = index.input_stats.saes(sae)
    return evaluate(saes, index.embeddings, items, prompts, cfg, progress)
