"""``python -m sae_explorer verify INDEX_DIR``: check an index folder end to end.

Every file the manifest lists is hashed and compared with its recorded SHA-256, whatever its
modification time (an app start hashes only files whose size or time changed); then the values
the explorer serves are checked as an open does (item rows in range, finite maxima, codes
pointers), and the items table, input statistics and latent names are read. Every problem is
listed, not only the first; the exit status is 0 for a sound index, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

from sae_explorer.index.files import CorruptIndexError, check_files, parse_manifest


class Verdict(NamedTuple):
    """What :func:`verify_index` found."""

    n_files: int  # files the manifest lists
    n_bytes: int  # bytes hashed
    problems: list[str]  # one line per problem; empty for a sound index

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_index(dpath: str | Path, progress: bool = False) -> Verdict:
    """Every check of the ``verify`` command; ``progress`` shows a bar over the bytes hashed."""
    from tqdm import tqdm

    from sae_explorer.index.reader import ActivationIndex

    dpath = Path(dpath)
    try:
        manifest = parse_manifest(dpath)
    except CorruptIndexError as e:
        return Verdict(0, 0, [str(e)])
    files: dict[str, int] = manifest["files"]
    problems = []
    total = sum(files.values())
    with tqdm(total=total, unit="B", unit_scale=True, disable=not progress, file=sys.stderr) as bar:
        for name, size in files.items():
            bar.set_description(name, refresh=False)
            try:
                check_files(dpath, {**manifest, "files": {name: size}}, names=[name])
            except CorruptIndexError as e:
                problems.append(str(e))
            bar.update(size)
    if not problems:  # the values are only worth reading from files that check out
        try:
            index = ActivationIndex(dpath, manifest)
            index.items  # noqa: B018 (read to check)
            index.input_stats  # noqa: B018
            index.check_codes()
        except CorruptIndexError as e:
            problems.append(str(e))
        else:
            problems.extend(names_problems(dpath, index.n_latents))
    return Verdict(len(files), total, problems)


def names_problems(dpath: Path, n_latents: int) -> list[str]:
    """The latent names kept beside the index (not in its manifest: they are added per
    vocabulary after the build), read back and checked; a missing set is no problem."""
    from sae_explorer.naming import LatentNames

    if not LatentNames.exists(dpath):
        return []
    try:
        names = LatentNames.load(dpath)
    except ValueError as e:
        return [f"{e} (a precompute or an app start names the latents again)"]
    if names.n_latents != n_latents:
        return [f"the latent names are for {names.n_latents} latents, the index has {n_latents}"]
    return []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sae_explorer verify",
        description="Check an index folder: every file's SHA-256 against its manifest, the "
        "values the explorer serves, the items table and the latent names.",
    )
    parser.add_argument("index_dir", nargs="+", help="index folder(s) (holding manifest.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status = 0
    for dpath in args.index_dir:
        t0 = time.perf_counter()
        verdict = verify_index(dpath, progress=True)
        seconds = time.perf_counter() - t0
        if verdict.ok:
            print(
                f"ok: {dpath}: {verdict.n_files} files, {verdict.n_bytes / 1e6:.1f} MB "
                f"checked in {seconds:.2f}s"
            )
            continue
        status = 1
        print(f"damaged: {dpath}", file=sys.stderr)
        for problem in verdict.problems:
            print(f"  {problem}", file=sys.stderr)
    return status
