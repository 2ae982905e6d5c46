"""``hf-hub:org/repo[@revision][/path]`` and ``hf://org/repo[/path]`` sources: the files they name
are fetched with ``huggingface_hub.hf_hub_download`` (its cache, its offline mode) and then read
like any local source. A path with a weights suffix is one file; any other path is a folder
holding ``config.json`` + ``sae.safetensors`` (sae-explorer) or ``cfg.json`` +
``sae_weights.safetensors`` (SAELens)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import NamedTuple

from sae_explorer.checkpoints import project, saelens
from sae_explorer.checkpoints.probe import PICKLE_SUFFIXES

HUB_PREFIXES = ("hf-hub:", "hf://")
FOLDER_LAYOUTS = (
    (project.CONFIG_FNAME, project.WEIGHTS_FNAME),
    (saelens.CFG_FNAME, saelens.WEIGHTS_FNAME),
)


class HubSource(NamedTuple):
    repo_id: str
    revision: str | None
    path: str
    """Path inside the repo; '' for its root."""


class Fetched(NamedTuple):
    """A Hub source once downloaded: a local file or folder, and the name it is known by."""

    path: Path
    name: str


def is_hub_source(source: str) -> bool:
    return source.startswith(HUB_PREFIXES)


def parse_hub_source(source: str) -> HubSource:
    """``hf-hub:org/repo[@rev]/path`` -> (repo_id, revision, path inside the repo, maybe '')."""
    rest = next(source[len(p) :] for p in HUB_PREFIXES if source.startswith(p))
    parts = [p for p in rest.split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"Hub source {source!r} must look like hf-hub:org/repo[/path/to/file]")
    repo, revision = parts[1], None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    return HubSource(f"{parts[0]}/{repo}", revision, "/".join(parts[2:]))


def fetch(source: str) -> Fetched:
    """Download what ``source`` names; ValueError when the repo has no SAE there."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    hub = parse_hub_source(source)

    def download(fname: str) -> Path:
        return Path(hf_hub_download(hub.repo_id, fname, revision=hub.revision))

    posix = PurePosixPath(hub.path)
    if posix.suffix in PICKLE_SUFFIXES:
        return Fetched(download(hub.path), posix.name)
    folder, single = hub.path, None
    if posix.suffix in (".safetensors", ".json"):
        folder, single = ("" if str(posix.parent) == "." else str(posix.parent)), posix.name
    for cfg_name, weights_name in FOLDER_LAYOUTS:
        if single is not None and single not in (cfg_name, weights_name):
            continue
        prefix = f"{folder}/" if folder else ""
        try:
            cfg_fpath = download(prefix + cfg_name)
        except EntryNotFoundError:
            continue
        weights_fpath = download(prefix + weights_name)
        if weights_fpath.parent != cfg_fpath.parent:  # a plain cache layout keeps them together
            raise ValueError(
                f"Hub files {cfg_fpath} and {weights_fpath} landed in different folders"
            )
        return Fetched(cfg_fpath.parent, PurePosixPath(folder).name)
    if single is not None and single.endswith(".safetensors"):
        return Fetched(download(hub.path), single)
    names = " nor ".join(
        f"{cfg} ({fmt})" for (cfg, _), fmt in zip(FOLDER_LAYOUTS, ("sae-explorer", "SAELens"))
    )
    raise ValueError(f"Hub folder {folder or '/'} of {hub.repo_id} has neither {names}")
