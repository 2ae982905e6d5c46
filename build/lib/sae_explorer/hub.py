"""The Hugging Face Hub: pick the released MSAE checkpoint that fits a CLIP model, and know
quickly whether the Hub can be reached at all.

The MSAE release (``WolodjaZ/MSAE``) stores image SAEs for OpenAI CLIP models under names such as
``ViT-L_14/centered/6144_768_TopKReLU_64_RW_False_False_0.0_cc3m_ViT-L~14_train_image_2905936_768.pth``:
latents, input width, activation (+k), Matryoshka weighting, tied, normalize, soft cap, then the
training data (dataset, CLIP model, split, modality, size, width). The file names are only read
here to *choose* a file; the weights' configuration is read by the checkpoint loader.

Offline, ``huggingface_hub`` and open_clip retry every request with backoff (about a minute before
they give up), so start-up first asks :func:`hub_status`: ``HF_HUB_OFFLINE`` or one short request
to the endpoint. When the Hub is out of reach, :func:`offline_mode` makes every Hub download answer
from the local cache at once, and :func:`list_cached_repo_files` lists what an earlier online run
downloaded, so models fetched before still load.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

MSAE_REPO = "WolodjaZ/MSAE"
MSAE_PRETRAINED = "openai"
"""The released MSAEs were trained on embeddings of OpenAI's CLIP weights."""
PROBE_TIMEOUT_S = 3.0
"""How long :func:`hub_status` waits for the Hub endpoint to answer before calling it offline."""


class MsaeFile(NamedTuple):
    """What an MSAE checkpoint's file name says about it."""

    path: str
    n_latents: int
    n_inputs: int
    activation: str  # e.g. "TopKReLU_64", "ReLU_003"
    weighting: str | None  # "RW" / "UW" for Matryoshka SAEs, None otherwise
    clip_tag: str | None  # e.g. "ViT-L~14"
    modality: str | None  # "image" / "text" (training embeddings)
    centered: bool | None  # from a "centered"/"not_centered" folder, if any


_CLIP_TAG = re.compile(r"^(ViT|RN)[A-Za-z0-9~\-]*$")


def describe_release_file(path: str) -> MsaeFile | None:
    """Describe one repo path; None when it is not an MSAE SAE checkpoint (README, concept
    files...). The name itself is parsed by the checkpoint adapter's own parser."""
    from sae_explorer.checkpoints.msae import parse_msae_filename as parse_name

    name = Path(path).name
    if not name.endswith((".pth", ".pt")) or name.startswith("Concept_Interpreter"):
        return None
    try:
        parsed = parse_name(name)
    except ValueError:
        return None
    activation = parsed.activation + (
        f"_{parsed.k}" if parsed.k is not None else f"_{parsed.l1_coefficient or ''}".rstrip("_")
    )
    data_tokens = parsed.dataset.split("_")  # e.g. cc3m, ViT-L~14, train, image, 2905936, 768
    clip_tag = next((t for t in data_tokens if _CLIP_TAG.match(t)), None)
    modality = next((t for t in data_tokens if t in ("image", "text")), None)
    folders = Path(path).parts[:-1]
    centered = True if "centered" in folders else (False if "not_centered" in folders else None)
    return MsaeFile(
        path,
        parsed.n_latents,
        parsed.n_inputs,
        activation,
        parsed.weighting,
        clip_tag,
        modality,
        centered,
    )


def clip_key(name: str) -> str:
    """Compare CLIP names across spellings: ``ViT-L-14``, ``ViT-L/14``, ``ViT-L~14``, ``ViT-L_14``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def select_msae_checkpoint(
    files: Sequence[str], clip_model: str, embed_dim: int, pretrained: str | None = MSAE_PRETRAINED
) -> MsaeFile:
    """The best MSAE checkpoint in ``files`` for ``clip_model`` with ``embed_dim``-d embeddings.

    A match has the CLIP model in its file name (or folder) and ``n_inputs == embed_dim``. Among
    matches: image-trained before text, Matryoshka (RW, then UW) before plain SAEs, the
    ``centered`` variant first, then the smallest dictionary (fastest on a CPU Space); ties go to
    the path name, so the choice is deterministic. Raises ``ValueError`` naming what is available
    when nothing matches.
    """
    if pretrained is not None and pretrained != MSAE_PRETRAINED:
        raise ValueError(
            f"the released MSAE checkpoints were trained on {MSAE_PRETRAINED!r} CLIP weights, "
            f"not {pretrained!r}; use --pretrained {MSAE_PRETRAINED} or pass --sae explicitly"
        )
    parsed = [m for m in (describe_release_file(f) for f in files) if m is not None]
    if not parsed:
        raise ValueError(f"no MSAE checkpoint files (*.pth) among the {len(files)} files listed")
    key = clip_key(clip_model)
    same_model = [m for m in parsed if _model_key(m) == key]
    matches = [m for m in same_model if m.n_inputs == embed_dim]
    if not matches:
        available = sorted({f"{m.clip_tag or '?'} ({m.n_inputs}-d)" for m in parsed})
        why = (
            f"they take {sorted({m.n_inputs for m in same_model})}-d inputs"
            if same_model
            else "none is for this model"
        )
        raise ValueError(
            f"no released MSAE checkpoint matches CLIP {clip_model!r} with {embed_dim}-d "
            f"embeddings ({why}); available: {', '.join(available)}"
        )

    def rank(m: MsaeFile) -> tuple:
        return (
            m.modality != "image",
            {"RW": 0, "UW": 1}.get(m.weighting or "", 2),
            m.centered is not True,
            m.n_latents,
            m.path,
        )

    return min(matches, key=rank)


def _model_key(m: MsaeFile) -> str | None:
    if m.clip_tag is not None:
        return clip_key(m.clip_tag)
    folder = Path(m.path).parts[0] if len(Path(m.path).parts) > 1 else None
    return clip_key(folder) if folder else None


def list_repo_files(repo_id: str = MSAE_REPO) -> list[str]:
    """The repo's file names (a network call; patched in tests)."""
    from huggingface_hub import HfApi

    return HfApi().list_repo_files(repo_id)


def msae_source(
    clip_model: str,
    embed_dim: int,
    pretrained: str | None = MSAE_PRETRAINED,
    repo_id: str = MSAE_REPO,
    list_files: Callable[[str], Sequence[str]] = list_repo_files,
) -> tuple[MsaeFile, str]:
    """Choose the checkpoint (see :func:`select_msae_checkpoint`) from the repo's file list;
    returns it and the ``hf-hub:`` source ``load_sae`` downloads it from. Network errors
    propagate, for the caller to fall back."""
    chosen = select_msae_checkpoint(list_files(repo_id), clip_model, embed_dim, pretrained)
    return chosen, f"hf-hub:{repo_id}/{chosen.path}"


# --------------------------------------------------------------------------- reaching the Hub
class HubStatus(NamedTuple):
    """Whether to use the Hub, and why not."""

    online: bool
    reason: str = ""
    """Why the Hub is not used ('' when online), for logs and the app's banner."""


def hub_status(endpoint: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> HubStatus:
    """Offline without a request when ``HF_HUB_OFFLINE`` is set (huggingface_hub reads it once at
    import; the environment is read here too, so setting it later also counts); otherwise one HEAD
    request to ``endpoint`` (default: huggingface_hub's, i.e. ``HF_ENDPOINT``) decides, within
    ``timeout_s`` seconds. Any HTTP answer, even an error status, means online."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or _is_true(os.environ.get("HF_HUB_OFFLINE", "")):
        return HubStatus(False, "HF_HUB_OFFLINE is set")
    endpoint = endpoint or constants.ENDPOINT
    problem = _probe(endpoint, timeout_s)
    if problem is None:
        return HubStatus(True)
    return HubStatus(False, f"the Hugging Face Hub at {endpoint} cannot be reached: {problem}")


def _probe(url: str, timeout_s: float) -> str | None:
    """None when ``url`` answers HTTP within ``timeout_s``, else what went wrong. The request runs
    on huggingface_hub's own client (same proxies and certificates as the downloads) in a daemon
    thread, so a resolver that hangs cannot hold start-up longer than ``timeout_s``."""
    from huggingface_hub import get_session

    outcome: list[str | None] = []

    def ask() -> None:
        try:
            get_session().head(url, timeout=timeout_s, follow_redirects=False)
            outcome.append(None)
        except Exception as e:  # any failure to get an answer means offline, with its reason
            outcome.append(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    thread = threading.Thread(target=ask, name="hub-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer within {timeout_s:g} s"


def _is_true(value: str) -> bool:
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


@contextmanager
def offline_mode() -> Iterator[None]:
    """Inside the block every huggingface_hub request (``hf_hub_download`` from ``load_sae`` and
    open_clip, ``datasets`` streaming) fails at once instead of retrying, and downloads answer from
    the local cache. ``HF_HUB_OFFLINE`` is read at import, so this sets the constant it became
    (process-wide, for the block only: start-up runs before the app serves anyone)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    datasets_known = "datasets.config" in sys.modules
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
        datasets_config = sys.modules.get("datasets.config")
        imported_inside = datasets_config is not None and not datasets_known
        if imported_inside and os.environ.get("HF_DATASETS_OFFLINE") is None:
            # datasets copied the constant at import: give it the value it would have had
            datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = saved


def list_cached_repo_files(
    repo_id: str = MSAE_REPO, revision: str = "main", cache_dpath: str | Path | None = None
) -> list[str]:
    """The files of ``repo_id`` already in the local Hugging Face cache (what earlier online runs
    downloaded), as :func:`list_repo_files` would name them; the offline stand-in for it. Raises
    ``FileNotFoundError`` naming the folder looked in when nothing of the repo is cached."""
    from huggingface_hub import constants

    repo_dpath = Path(cache_dpath or constants.HF_HUB_CACHE) / (
        "models--" + repo_id.replace("/", "--")
    )
    ref_fpath = repo_dpath / "refs" / revision
    commit = ref_fpath.read_text().strip() if ref_fpath.is_file() else revision
    snapshot_dpath = repo_dpath / "snapshots" / commit
    found = snapshot_dpath.rglob("*") if snapshot_dpath.is_dir() else []
    files = sorted(f.relative_to(snapshot_dpath).as_posix() for f in found if f.is_file())
    if not files:
        raise FileNotFoundError(
            f"no files of {repo_id}@{revision} in the local Hugging Face cache ({repo_dpath})"
        )
    return files
