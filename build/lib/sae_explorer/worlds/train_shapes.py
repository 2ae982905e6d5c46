"""Train the shapes world's tiny CLIP (open_clip ``ClipLoss``) and its Matryoshka SAE.

Recipe, and why:
- Every step shows the model each of the world's distinct captions exactly once (180 captions,
  one freshly drawn image each). Duplicate captions in a batch would be false negatives for
  ``ClipLoss``; with distinct captions its targets are exactly right.
- Images are drawn fresh for every step (seeded by ``TRAIN_SEED`` and the step). With a fixed
  pool the model memorised images by their exact (jittered) colours instead of learning shapes:
  training loss fell while held-out shape accuracy stayed at chance. Held-out checks use other
  seeds.
- The image tower is a small ViT with 16-pixel patches (17 tokens) and average pooling: cheap
  enough for ~1500 steps on a CPU, and the pooled patch features learn shape reliably.
- The SAE is trained with the project's trainer on the trained CLIP's raw embeddings of the
  world's images and of its texts (full captions plus shorter partial ones).

CLI: ``python -m sae_explorer.worlds.shapes train`` (into ``sae_explorer/worlds/data/shapes``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import open_clip
import torch
from safetensors.torch import save_file

from sae_explorer import builtin
from sae_explorer.atomic import atomic_path, atomic_write_text
from sae_explorer.cli import add_dataclass_args, dataclass_from_args, doc
from sae_explorer.progress import Progress
from sae_explorer.worlds import quality, shapes


@dataclass(frozen=True)
class ClipTrainConfig:
    """Training of the world's tiny CLIP; the help texts are also the CLI help."""

    steps: int = field(default=1500, metadata=doc("AdamW steps; each shows all 180 captions"))
    lr: float = field(default=2e-3, metadata=doc("peak learning rate (warmup, cosine decay)"))
    warmup_steps: int = field(default=100, metadata=doc("linear warmup steps"))
    weight_decay: float = field(default=0.05, metadata=doc("AdamW weight decay (matrices)"))
    seed: int = field(
        default=shapes.TRAIN_SEED, metadata=doc("seed of the training images and the init")
    )
    threads: int = field(
        default=1,
        metadata=doc(
            "torch CPU threads: 1 is fastest on a busy 2-core machine (OpenMP threads wait on "
            "each other when cores are oversubscribed), 2 on an idle one"
        ),
    )
    eval_every: int = field(default=250, metadata=doc("steps between held-out checks (0: off)"))
    eval_items: int = field(default=600, metadata=doc("held-out items per check"))


@dataclass(frozen=True)
class SaeTrainConfig:
    """Training of the world's Matryoshka SAE; the help texts are also the CLI help."""

    n_image_items: int = field(
        default=12_000, metadata=doc("world images (seed 1) to embed; as many texts join them")
    )
    n_latents: int = field(default=256, metadata=doc("SAE latents"))
    k: int = field(default=4, metadata=doc("first Matryoshka level (levels double)"))
    epochs: float = field(default=40.0, metadata=doc("passes over the embeddings"))
    batch_size: int = field(default=1024, metadata=doc("embeddings per step"))
    lr: float = field(default=1e-3, metadata=doc("AdamW learning rate"))
    seed: int = field(default=shapes.TRAIN_SEED, metadata=doc("seed of images, split, init"))


class ClipTrainResult(NamedTuple):
    model: torch.nn.Module  # open_clip CLIP, fp32, eval mode
    model_cfg: dict  # its open_clip architecture config
    metrics: dict


def _lr_at(step: int, cfg: ClipTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def draw_batch(seed: int, step: int) -> torch.Tensor:
    """uint8 [n_captions, 3, H, W]: a fresh image for every world caption, in caption order.

    The image of caption ``c`` at ``step`` is drawn from seed ``(seed, 1_000_003, c, step)``.
    """
    combos = shapes.all_attribute_combinations()
    size = shapes.IMAGE_SIZE
    batch = np.empty((len(combos), size, size, 3), dtype=np.uint8)
    for c, attributes in enumerate(combos):
        rng = np.random.default_rng([seed, 1_000_003, c, step])
        batch[c] = np.asarray(shapes.render(attributes, rng, size))
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def pixel_normalizer(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 [n, 3, H, W] -> what open_clip's eval transform gives for the same PIL images.

    Valid because the world draws images at the model's input size (no resize, no crop).
    """
    cfg = open_clip.get_model_preprocess_cfg(model)
    assert tuple(model.visual.image_size) == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    return lambda u8: (u8.float() / 255.0 - mean) / std


def create_world_clip(seed: int, model_cfg: dict | None = None) -> torch.nn.Module:
    """A randomly initialised ``CLIP_ARCH`` (or ``model_cfg``, an open_clip config) CLIP."""
    builtin.resolve(shapes.SOURCE).register_clip_arch()
    overrides = {} if model_cfg is None else model_cfg
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return open_clip.create_model(shapes.CLIP_ARCH, **overrides)


def train_clip(
    cfg: ClipTrainConfig, model_cfg: dict | None = None, progress: Progress | None = None
) -> ClipTrainResult:
    """Train the world's tiny CLIP from scratch on CPU; returns it with its training metrics.

    ``model_cfg`` (an open_clip architecture config) overrides ``CLIP_ARCH``, for experiments.
    """
    builtin.resolve(shapes.SOURCE).register_clip_arch()
    model_cfg = model_cfg or open_clip.get_model_config(shapes.CLIP_ARCH)
    torch.set_num_threads(cfg.threads)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = create_world_clip(cfg.seed, model_cfg)
    tokenizer = open_clip.get_tokenizer(shapes.CLIP_ARCH)
    tokens_ct = tokenizer(shapes.all_captions())
    normalize = pixel_normalizer(model)
    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)
    ]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    history: list[dict] = []
    model.train()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, cfg)
        pixels = normalize(draw_batch(cfg.seed, step))
        image_features = model.encode_image(pixels, normalize=True)
        text_features = model.encode_text(tokens_ct, normalize=True)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        done = step + 1
        if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
            model.eval()
            acc = quality.zero_shot_accuracy_model(
                model, tokenizer, cfg.eval_items, seed=shapes.HELDOUT_SEED + 100
            )
            model.train()
            history.append({"step": done, "loss": loss.item(), "accuracy": acc})
            print(
                f"step {done} loss {loss.item():.3f} t {time.perf_counter() - t0:.0f}s {acc}",
                flush=True,
            )
        if progress is not None:
            progress(done / cfg.steps, f"CLIP step {done}/{cfg.steps} loss {loss.item():.3f}")
    model.eval()
    metrics = {
        "train_seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - cpu0,
        "final_loss": loss.item(),
        "history": history,
        "config": asdict(cfg),
    }
    return ClipTrainResult(model=model, model_cfg=model_cfg, metrics=metrics)


def save_clip(
    model: torch.nn.Module, model_cfg: dict, dpath: Path, dtype: torch.dtype = torch.float16
) -> Path:
    """Write an open_clip ``local-dir`` folder: ``open_clip_config.json`` + safetensors weights."""
    dpath = Path(dpath)
    dpath.mkdir(parents=True, exist_ok=True)
    preprocess_cfg = open_clip.get_model_preprocess_cfg(model)
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            k: list(v) if isinstance(v, tuple) else v for k, v in preprocess_cfg.items()
        },
        "sae_explorer": {"world": "shapes", "architecture": shapes.CLIP_ARCH, "schema": 1},
    }
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(dpath / "open_clip_model.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_text(dpath / "open_clip_config.json", json.dumps(config, indent=2) + "\n")
    return dpath


def world_sae_data(encoder, n_image_items: int, seed: int) -> torch.Tensor:
    """Raw embeddings [2 * n_image_items, d]: world images, then as many texts (shuffled).

    Texts are the images' captions (half of them) and shorter partial captions (the other half),
    so the SAE sees every attribute named alone as well as in full descriptions.
    """
    items = shapes.make_items(n_image_items, seed)
    x_img = encoder.encode_images([it.image for it in items], batch_size=256)
    rng = np.random.default_rng([seed, 7])
    texts = []
    for i, it in enumerate(items):
        if i % 2 == 0:
            texts.append(it.caption)
        else:
            partial = shapes.partial_captions(it.attributes)
            texts.append(partial[int(rng.integers(len(partial)))])
    unique = sorted(set(texts))
    x_unique = encoder.encode_texts(unique)
    row = {t: i for i, t in enumerate(unique)}
    x_txt = x_unique[torch.tensor([row[t] for t in texts])]
    x = torch.cat([x_img, x_txt])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return x[perm]


def train_world_sae(encoder, cfg: SaeTrainConfig, progress: Progress | None = None):
    """Train the world's Matryoshka SAE on ``encoder``'s embeddings; returns F's ``TrainResult``."""
    from sae_explorer.train import TrainConfig, train_sae

    x_nd = world_sae_data(encoder, cfg.n_image_items, cfg.seed)
    train_cfg = TrainConfig(
        n_latents=cfg.n_latents,
        architecture="matryoshka",
        k=cfg.k,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        seed=cfg.seed,
        device="cpu",
        clip_model="builtin:shapes",
    )
    return train_sae(x_nd, train_cfg, progress)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer.worlds.shapes train",
        description="Train the shapes world's tiny CLIP and its Matryoshka SAE.",
    )
    parser.add_argument(
        "--out", type=Path, default=builtin.resolve(shapes.SOURCE).dpath, help="output folder"
    )
    add_dataclass_args(parser, ClipTrainConfig, prefix="clip")
    add_dataclass_args(parser, SaeTrainConfig, prefix="sae")
    parser.add_argument("--arch-json", type=Path, help="open_clip config overriding CLIP_ARCH")
    parser.add_argument("--skip-clip", action="store_true", help="reuse <out>/clip, train the SAE")
    parser.add_argument("--skip-sae", action="store_true", help="train and save only the CLIP")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    from sae_explorer.checkpoints import save_sae
    from sae_explorer.encoder import load_encoder

    args = parse_args(argv)
    clip_cfg = dataclass_from_args(ClipTrainConfig, args, prefix="clip")
    sae_cfg = dataclass_from_args(SaeTrainConfig, args, prefix="sae")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(clip_cfg.threads)
    if not args.skip_clip:
        model_cfg = json.loads(args.arch_json.read_text()) if args.arch_json else None
        with tqdm(total=clip_cfg.steps, desc="tiny CLIP", unit="step") as bar:
            result = train_clip(clip_cfg, model_cfg, lambda f, m: bar.update(1))
        save_clip(result.model, result.model_cfg, out / "clip")
        atomic_write_text(out / "clip" / "train_metrics.json", json.dumps(result.metrics, indent=2))
        print(f"saved CLIP to {out / 'clip'} after {result.metrics['train_seconds']:.0f} s")
    if not args.skip_sae:
        t0 = time.perf_counter()
        encoder = load_encoder(f"local-dir:{(out / 'clip').resolve()}", device="cpu")
        with tqdm(total=1000, desc="world MSAE", unit="‰") as bar:
            trained = train_world_sae(
                encoder, sae_cfg, lambda f, m: bar.update(int(f * 1000) - bar.n)
            )
        provenance = {
            "clip_model": "builtin:shapes",
            "world": "shapes",
            "train_config": asdict(sae_cfg),
            "seconds": time.perf_counter() - t0,
            "val_metrics": trained.metrics.get("val"),
        }
        save_sae(trained.sae, out / "sae", provenance={**trained.sae.provenance, **provenance})
        print(f"saved MSAE to {out / 'sae'} after {time.perf_counter() - t0:.0f} s")
    return 0
