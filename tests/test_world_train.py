"""The world's training script runs end to end (a reduced run of seconds) and learns something."""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import torch
from safetensors.torch import load_file

from sae_explorer import load_sae
from sae_explorer.encoder import load_encoder
from sae_explorer.worlds import shapes, train_shapes


def test_reduced_training_run_writes_loadable_world(tmp_path) -> None:
    out = tmp_path / "world"
    argv = ["--out", str(out), "--clip-steps", "30", "--clip-warmup-steps", "5"]
    argv += ["--clip-eval-every", "30", "--clip-eval-items", "150"]
    argv += ["--sae-n-image-items", "300", "--sae-n-latents", "64", "--sae-k", "2"]
    argv += ["--sae-epochs", "3", "--sae-batch-size", "128"]
    assert shapes.main(["train", *argv]) == 0

    config = json.loads((out / "clip" / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config(shapes.CLIP_ARCH)
    weights = load_file(out / "clip" / "open_clip_model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float16}

    metrics = json.loads((out / "clip" / "train_metrics.json").read_text())
    (last,) = metrics["history"]
    # 30 steps already beat chance clearly on the easy attributes (chance: 1/3 and 1/2) and the
    # contrastive loss is far below log(180 captions)
    assert last["accuracy"]["background"] > 0.6
    assert last["loss"] < math.log(len(shapes.all_captions())) - 1.0

    enc = load_encoder(f"local-dir:{out / 'clip'}", device="cpu")
    sae = load_sae(out / "sae")
    enc.check_sae(sae)
    assert (sae.n_inputs, sae.n_latents, sae.cfg.k) == (enc.embed_dim, 64, 2)
    assert sae.provenance["clip_model"] == "builtin:shapes"
    x = enc.encode_images([it.image for it in shapes.make_items(20, seed=9)])
    cosine = torch.nn.functional.cosine_similarity(sae(x).x_hat_bd, x, dim=-1)
    assert cosine.mean() > 0.5


def test_training_pixels_equal_the_encoder_preprocessing() -> None:
    from sae_explorer.worlds.quality import eval_transform

    model = train_shapes.create_world_clip(seed=0)
    batch = train_shapes.draw_batch(seed=3, step=7)
    combos = shapes.all_attribute_combinations()
    assert batch.shape == (len(combos), 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
    assert batch.dtype == torch.uint8
    # row c is caption c's attributes, drawn as shapes.render does; pixels as the encoder sees them
    preprocess = eval_transform(model)
    images = [
        shapes.render(a, np.random.default_rng([3, 1_000_003, c, 7]), shapes.IMAGE_SIZE)
        for c, a in enumerate(combos[:5])
    ]
    expected = torch.stack([preprocess(im) for im in images])
    normalize = train_shapes.pixel_normalizer(model)
    torch.testing.assert_close(normalize(batch[:5]), expected, atol=1e-5, rtol=0)
    assert not torch.equal(train_shapes.draw_batch(seed=3, step=8), batch)  # fresh every step
