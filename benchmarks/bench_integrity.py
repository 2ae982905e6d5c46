"""What the index's checksums cost: hashing throughput, an open whose files kept their times
(no hashing: the normal start), an open after a copy changed every file's time (everything
hashed once), and the ``verify`` command's full pass. On a fake index of the given size
(``bench_index.write_fake_index``: same files and sizes as a real one, random contents).

    python benchmarks/bench_integrity.py                     # 100,000 items x 768, 6,144 latents
    python benchmarks/bench_integrity.py --n-items 500000
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=100_000)
    parser.add_argument("--n-latents", type=int, default=6144)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()

    from bench_index import write_fake_index

    from sae_explorer.index import ActivationIndex
    from sae_explorer.index.cache import reuse_index
    from sae_explorer.index.files import file_checksum, read_manifest
    from sae_explorer.index.verify import verify_index

    root = Path(tempfile.mkdtemp(prefix="bench-integrity-"))
    try:
        dpath = root / "index" / "fake"
        t0 = time.perf_counter()
        write_fake_index(dpath, args.n_items, args.n_latents, args.dim, top_m=32)
        print(f"fake index written in {time.perf_counter() - t0:.1f}s: {dpath}")
        manifest = read_manifest(dpath)
        n_bytes = sum(manifest["files"].values())
        n_files = len(manifest["files"])
        print(f"{args.n_items} items x {args.dim}, {args.n_latents} latents: {n_files} files, "
              f"{n_bytes / 1e6:.0f} MB")  # fmt: skip

        hash_s = best_of(3, lambda: [file_checksum(dpath / n) for n in manifest["files"]])
        print(
            f"sha256 of every file: {hash_s:.2f}s ({n_bytes / 1e6 / hash_s:.0f} MB/s, warm cache)"
        )
        open_s = best_of(5, lambda: ActivationIndex.load(dpath))
        print(f"open, times as recorded (the normal start): {open_s * 1e3:.1f} ms")

        def touched_open() -> None:
            for name in manifest["files"]:
                os.utime(dpath / name)  # as a copy would: new times, same contents
            ActivationIndex.load(dpath)

        touched_s = best_of(3, touched_open)
        print(f"open after every file's time changed (all hashed): {touched_s:.2f}s "
              f"({touched_s / open_s:.0f}x the normal open)")  # fmt: skip
        from sae_explorer.index.cache import _locked

        _locked.add(dpath.absolute())  # reuse_index runs under the build lock
        for name in manifest["files"]:
            os.utime(dpath / name)
        reuse_index(dpath, "fake")  # hashes once, records the new times
        again_s = best_of(5, lambda: ActivationIndex.load(dpath))
        print(f"next open after a reuse recorded the new times: {again_s * 1e3:.1f} ms")
        verify_s = best_of(1, lambda: verify_index(dpath))
        print(f"verify (every checksum + every value check): {verify_s:.2f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
