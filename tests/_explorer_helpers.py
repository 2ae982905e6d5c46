"""A small explorer for tests: the built-in shapes world when its trained checkpoints are
present, otherwise the world's tiny CLIP architecture with random weights and a random
Matryoshka SAE (same code paths, meaningless latents)."""

from __future__ import annotations

import socket
import struct
import zlib
from pathlib import Path

import torch

from sae_explorer.checkpoint import load_sae
from sae_explorer.corpus import load_corpus
from sae_explorer.encoder import load_encoder
from sae_explorer.explorer import Explorer, Sources
from sae_explorer.precompute import PrecomputeConfig, precompute
from sae_explorer.sae import SAE, SAEConfig
from sae_explorer.worlds import shapes

N_ITEMS = 200
"""Shapes drawn for the test corpus (each gives an image and its caption: 2x items)."""


def builtin_world_trained() -> bool:
    dpath = shapes.CHECKPOINT_DPATH
    return (dpath / "clip" / "open_clip_config.json").is_file() and (
        dpath / "sae" / "config.json"
    ).is_file()


def small_explorer(cache_dpath: Path, n_items: int = N_ITEMS) -> Explorer:
    if builtin_world_trained():
        encoder = load_encoder("builtin:shapes", device="cpu")
        sae = load_sae("builtin:shapes")
        clip_id, sae_id = "builtin:shapes", "builtin:shapes"
    else:
        encoder = load_encoder(shapes.CLIP_ARCH, device="cpu")
        cfg = SAEConfig.matryoshka(encoder.embed_dim, 256, 8)
        sae = SAE(cfg, generator=torch.Generator().manual_seed(0))
        clip_id, sae_id = encoder.model_id, "random matryoshka (256 latents)"
    corpus_source = f"builtin:shapes?n={n_items}&seed={shapes.DEFAULT_DEMO_SEED}"
    corpus = load_corpus(corpus_source)
    index = precompute(encoder, sae, corpus, cache_dpath, PrecomputeConfig(n_words=0))
    return Explorer(encoder, sae, index, corpus, Sources(clip_id, sae_id, corpus_source))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width x height`` pixels and no data: a decompression bomb's
    shape without its bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
