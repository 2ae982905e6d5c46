"""Faults injected into the Ray workers of tests/test_ray_engine.py (its
``worker_process_setup_hook``): a file ``die-<chunk>`` or ``raise-<chunk>`` in the folder named
by ``$SAE_EXPLORER_TEST_FAULTS`` makes the worker that reaches that chunk exit on the spot (once:
the file is removed first) or raise (every time, until the file is removed)."""

from __future__ import annotations

import os
from pathlib import Path

FAULTS_ENV = "SAE_EXPLORER_TEST_FAULTS"


def install() -> None:
    from sae_explorer.index.build import IndexBuilder

    original = IndexBuilder.encode_chunk

    def encode_chunk(self, c: int, *args, **kwargs):
        dpath = Path(os.environ[FAULTS_ENV])
        die = dpath / f"die-{c}"
        if die.exists():
            die.unlink()
            os._exit(1)  # a worker killed mid-shard: no clean-up, no exception
        if (dpath / f"raise-{c}").exists():
            raise RuntimeError(f"injected fault in chunk {c}")
        return original(self, c, *args, **kwargs)

    IndexBuilder.encode_chunk = encode_chunk
