"""Start-up of the explorer: which models and corpus to load, and the offline fallback.

The default is a real setup for machines with internet: OpenAI CLIP ViT-L/14 from open_clip, the
released MSAE checkpoint that matches it (chosen from the ``WolodjaZ/MSAE`` file list), over a
small capped slice of a streamed Hub dataset. Before any download the Hub is asked once, briefly,
whether it answers (``hub.hub_status``); when it does not, or ``HF_HUB_OFFLINE`` is set, the same
setup is loaded from the local Hugging Face cache only, without the minute of retries that
huggingface_hub and open_clip spend offline. When any of that cannot be fetched (no network and not
cached, no matching checkpoint) the built-in shapes world is loaded instead and the reason is kept
for the app's banner; ``strict`` turns the fallback off, ``demo`` goes straight to the built-in
world.

What to load is a :class:`~sae_explorer.startup_config.StartupConfig` (re-exported here): every
option is a flag and an environment variable (``SAE_EXPLORER_<NAME>``), so a Hugging Face Space
can be configured from its settings page; command-line flags override them.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sae_explorer import hub, hub_index, release_names
from sae_explorer.checkpoints import load_sae
from sae_explorer.checkpoints.hub import HUB_PREFIXES
from sae_explorer.corpus import default_cache_dpath
from sae_explorer.explorer import Explorer
from sae_explorer.index.cache import CacheError
from sae_explorer.progress import Progress
from sae_explorer.startup_config import AUTO, BUILTIN, StartupConfig, config_from_env

if TYPE_CHECKING:
    from sae_explorer.encoder import ClipEncoder
    from sae_explorer.release_names import ReleaseNames
    from sae_explorer.sae import SAE

__all__ = ["StartupConfig", "StartupError", "config_from_env", "load_explorer", "needs_hub"]

logger = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The requested setup could not be loaded and fallback was off (``--strict``)."""


def load_explorer(
    cfg: StartupConfig,
    progress: Progress | None = None,
    list_files: Callable[[str], Sequence[str]] | None = None,
    hub_status: Callable[[], hub.HubStatus] = hub.hub_status,
) -> Explorer:
    """Load the configured explorer, or the built-in world when that fails and ``cfg.strict``
    is off. The returned explorer's ``sources.note`` says why the built-in world was chosen.

    When ``cfg`` names anything on the Hub, ``hub_status`` is asked first; offline, everything
    loads from the local cache only. ``list_files`` lists the MSAE repo (default: the Hub's
    listing online, the cached files offline)."""
    if cfg.demo or cfg.is_builtin:
        lister = list_files or hub.list_repo_files
        explorer = _load(cfg.builtin() if cfg.demo else cfg, progress, lister, "")
        if cfg.demo:  # asked for, so not a warning: a plain line in the banner
            explorer.sources.details["mode"] = "the built-in shapes world (--demo)"
        return explorer
    status = hub_status() if needs_hub(cfg) else hub.HubStatus(True)
    try:
        if status.online:
            return _load(cfg, progress, list_files or hub.list_repo_files, "")
        logger.warning(
            "not using the Hugging Face Hub (%s): loading from the local cache only", status.reason
        )
        with hub.offline_mode():
            explorer = _load(cfg, progress, list_files or hub.list_cached_repo_files, "")
        explorer.sources.details["hub"] = f"offline, loaded from the local cache ({status.reason})"
        return explorer
    except Exception as e:  # any failure to fetch or match goes to the fallback, with its reason
        reason = f"{type(e).__name__}: {e}"
        if not status.online:
            reason = f"{status.reason}; not in the local cache: {reason}"
        if cfg.strict:
            raise StartupError(
                f"could not load {cfg.clip} / {cfg.sae} / {cfg.corpus}: {reason}"
            ) from e
        logger.warning("falling back to the built-in shapes world: %s", reason)
        return _load(cfg.builtin(), progress, hub.list_repo_files, fallback_note(cfg, e, status))


NETWORK_ERRORS = ("ConnectError", "ConnectTimeout", "ReadTimeout", "LocalEntryNotFoundError")


def fallback_note(cfg: StartupConfig, err: Exception, status: hub.HubStatus) -> str:
    """The banner's words when the app fell back: what was tried, why it failed (in words, not
    an exception's repr) and what the user can do."""
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not status.online:  # the probe's reason, without the exception after its colon
        why = f"{status.reason.split(': ', 1)[0]}; not in the local cache"
    elif type(err).__name__ in NETWORK_ERRORS or isinstance(err, ConnectionError | TimeoutError):
        why = "cannot reach the Hugging Face Hub (no network, or it is blocked)"
    elif isinstance(err, OSError):
        why = f"a download or file failed: {text[:160]}"
    else:
        why = text if len(text) <= 200 else text[:200] + "…"
    return (
        f"Could not load CLIP {cfg.clip} + SAE {cfg.sae} over {cfg.corpus}: {why}. Showing the "
        f"built-in shapes world instead. To start with it directly, use --demo; to use models "
        f"downloaded before, set HF_HUB_OFFLINE=1; or point --clip / --sae / --corpus at local "
        f"files (local-dir:/path, a checkpoint folder, an image folder)."
    )


def needs_hub(cfg: StartupConfig) -> bool:
    """Whether loading ``cfg`` may download from the Hub: an ``hf-hub:`` CLIP or a pretrained tag,
    an ``auto`` or ``hf-hub:`` SAE, an ``hf:`` dataset id, a published index. Local files and
    built-ins need no probe.
    """
    if cfg.index is not None:
        return True
    clip_hub = cfg.clip.startswith("hf-hub:") or (
        not cfg.clip.startswith(("local-dir:", "builtin:"))
        and cfg.pretrained is not None
        and not os.path.isfile(cfg.pretrained)
    )
    sae_hub = cfg.sae == AUTO or cfg.sae.startswith(HUB_PREFIXES)
    dataset = cfg.corpus[len("hf:") :].partition("?")[0]
    corpus_hub = cfg.corpus.startswith("hf:") and not Path(dataset).exists()
    return clip_hub or sae_hub or corpus_hub


def _load(
    cfg: StartupConfig,
    progress: Progress | None,
    list_files: Callable[[str], Sequence[str]],
    note: str,
) -> Explorer:
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dpath()
    sae_source = cfg.sae
    details: dict = {}
    encoder = None
    if sae_source == AUTO:
        if cfg.is_builtin:
            sae_source = BUILTIN
        else:
            from sae_explorer.encoder import load_encoder

            encoder = load_encoder(cfg.clip, cfg.pretrained, cfg.device)
            chosen, sae_source = hub.msae_source(
                cfg.clip, encoder.embed_dim, cfg.pretrained, list_files=list_files
            )
            logger.info("chose MSAE checkpoint %s for %s", chosen.path, cfg.clip)
            details["msae_file"] = chosen.path
    sae_model, names = load_sae(sae_source), None
    if sae_source.startswith(HUB_PREFIXES):  # a release file may ship its own latent names
        lookup = release_names.fetch_release_names(sae_source, sae_model.n_latents, list_files)
        names = lookup.names
        details["release_names"] = names.source if names else f"none ({lookup.reason})"
    if cfg.index is not None:
        explorer = _load_published(cfg, sae_source, encoder, sae_model, names, progress)
        explorer.sources.details.update(details)
        return explorer

    def from_sources(cache_dpath: Path, note: str) -> Explorer:
        return Explorer.from_sources(
            clip=cfg.clip,
            pretrained=cfg.pretrained,
            sae=sae_source,
            corpus=cfg.corpus,
            cache_dir=cache_dpath,
            device=cfg.device,
            progress=progress,
            max_items=cfg.max_items,
            note=note,
            encoder=encoder,
            sae_model=sae_model,
            release_names=names,
        )

    try:
        explorer = from_sources(cache_dir, note)
    except CacheError as e:  # a full disk or a read-only cache: this run on a temporary one
        logger.warning("%s", e)
        try:
            explorer = from_sources(temporary_cache_dpath(e), f"{note} {TEMPORARY}".strip())
        except CacheError as again:
            raise StartupError(f"{e}; and on a temporary cache: {again}") from again
    explorer.sources.details.update(details)
    return explorer


def world_explorer(
    cache_dpath: str | Path, n_items: int = 200, corpus: str | None = None
) -> Explorer:
    """The built-in shapes world's trained CLIP and MSAE over ``n_items`` freshly drawn shapes
    (each an image and its caption), or over ``corpus`` (any corpus source, e.g. a folder of
    images), its latents left unnamed: built in seconds on a CPU. What the tests, the benchmarks
    and the README's screenshots serve."""
    from sae_explorer.builtin import DEFAULT
    from sae_explorer.corpus import load_corpus
    from sae_explorer.encoder import load_encoder
    from sae_explorer.explorer import Sources
    from sae_explorer.precompute import PrecomputeConfig, precompute

    world = DEFAULT.source
    source = corpus or f"{world}?n={n_items}"  # the world's default seed
    encoder = load_encoder(world, device="cpu")
    sae = load_sae(world)
    loaded = load_corpus(source)
    index = precompute(encoder, sae, loaded, Path(cache_dpath), PrecomputeConfig(n_words=0))
    return Explorer(encoder, sae, index, loaded, Sources(world, world, source))


TEMPORARY = (
    "The cache could not be written (a full disk, or read-only without this index; the server "
    "log says which). This run uses a temporary cache: the index is built again at every start "
    "until the cache is fixed."
)
"""The banner's words when the cache could not be used and a temporary one was (no server
path: visitors see it)."""


def temporary_cache_dpath(err: CacheError) -> Path:
    """A fresh cache folder for this run only, removed at exit; ``StartupError`` when even that
    cannot be made."""
    try:
        dpath = Path(tempfile.mkdtemp(prefix="sae-explorer-cache-"))
    except OSError as e:
        raise StartupError(f"{err}; no temporary cache either: {e}") from e
    atexit.register(shutil.rmtree, dpath, ignore_errors=True)
    logger.warning("using a temporary cache for this run: %s", dpath)
    return dpath


def _load_published(
    cfg: StartupConfig,
    sae_source: str,
    encoder: ClipEncoder | None,
    sae_model: SAE,
    names: ReleaseNames | None,
    progress: Progress | None,
) -> Explorer:
    """The explorer over a published index (``cfg.index``): downloaded, checked, and served
    with the configured models once they prove to be the ones it was built with."""
    from sae_explorer.encoder import load_encoder
    from sae_explorer.explorer import Sources

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dpath()
    ref = hub_index.HubIndexRef.parse(cfg.index)
    published = hub_index.open_published(hub_index.fetch(ref, cache_dir, progress))
    if progress is not None:
        progress(0.8, f"loading CLIP {cfg.clip}")
    encoder = encoder or load_encoder(cfg.clip, cfg.pretrained, cfg.device)
    hub_index.check_models(published, encoder, sae_model)
    corpus = published.record.corpus.get("source", "published index")
    sources = Sources(
        clip=encoder.model_id,
        sae=sae_source,
        corpus=f"{corpus} (published as {ref})",
        details={"index": str(ref)},
    )
    return Explorer(
        encoder, sae_model, published.index, None, sources, published.thumbs_dpath, names
    )
