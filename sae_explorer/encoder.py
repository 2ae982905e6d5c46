"""CLIP encoder: any open_clip model (or the built-in shapes world) behind one small interface.

Model names are open_clip's own and are passed through untouched: an architecture plus a
pretrained tag (``"ViT-B-32"`` + ``"openai"``), ``"hf-hub:org/repo"``, ``"local-dir:/path"``, or
an architecture plus a local weights file. The names added here are the built-in worlds'
(``"builtin:shapes"``, see :mod:`sae_explorer.builtin`): open_clip ``local-dir`` folders shipped
with the package.

Embeddings come back raw (unnormalised) by default: that is what MSAE was trained on (its
precompute stored ``encode_image``/``encode_text`` outputs as they are). ``normalize=True`` gives
unit vectors for similarity search.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from sae_explorer import builtin
from sae_explorer.images import to_rgb
from sae_explorer.pixels import DTYPES, PRECISIONS, Precision  # noqa: F401 (Precision: re-exported)
from sae_explorer.progress import Progress

OFFLINE_HINT = (
    "Working offline? The built-in world needs no download: load_encoder('builtin:shapes') "
    "(with load_sae('builtin:shapes'))."
)


class ModelDownloadError(OSError):
    """Weights or config could not be fetched (usually: no network); names the offline option."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The requested device, else CUDA, else MPS, else CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DEFAULT_INPUT_PX = 224
"""The resize size assumed for a transform without a recognisable ``Resize`` step."""


class _Preprocess:
    """Picklable ``PIL -> [3, H, W]`` transform: RGB conversion, then open_clip's own transform.

    For batches it also splits at the transform's ``ToTensor``: :meth:`to_array` runs the PIL
    steps (resize, crop) and :meth:`finish` the tensor steps (scale, normalise) on a whole
    batch at once. Decoding workers then run no torch op, so they never start thread teams that
    compete with the model for the cores; on a CPU the result is the same to the bit.
    """

    def __init__(self, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        from torchvision.transforms import Compose, ToTensor

        self.transform = transform
        self.pil_steps = self.tensor_steps = None
        steps = list(transform.transforms) if isinstance(transform, Compose) else []
        cut = next((i for i, t in enumerate(steps) if isinstance(t, ToTensor)), None)
        if cut is not None:
            self.pil_steps, self.tensor_steps = steps[:cut], steps[cut + 1 :]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(to_rgb(image))

    @property
    def input_px(self) -> int:
        """The short side the transform's first resize scales an image to (for a square
        resize, its smaller side): what an upload's size is checked against before decoding."""
        from torchvision.transforms import Resize

        steps = getattr(self.transform, "transforms", [])
        resize = next((t for t in steps if isinstance(t, Resize)), None)
        if resize is None:
            return DEFAULT_INPUT_PX
        size = resize.size
        return int(size) if isinstance(size, int) else int(min(size))

    @property
    def splits(self) -> bool:
        """Whether :meth:`to_array` / :meth:`finish` can stand in for ``__call__``."""
        return self.pil_steps is not None

    def to_array(self, image: Image.Image) -> np.ndarray:
        """uint8 ``[H, W, 3]``: the steps before ``ToTensor`` (PIL only; thread-friendly)."""
        image = to_rgb(image)
        for step in self.pil_steps:
            image = step(image)
        if not isinstance(image, Image.Image) or image.mode != "RGB":
            raise ValueError(f"expected an RGB image before ToTensor, got {image!r}")
        return np.asarray(image)

    def finish(
        self, arrays_nhw3: np.ndarray | torch.Tensor, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """float32 ``[n, 3, H, W]`` on ``device``: ``ToTensor`` and the steps after it, on a
        batch. On a GPU the uint8 pixels travel (a quarter of the float bytes) and the
        arithmetic runs there: on a CPU it would cap a fast model's throughput. CPU results
        equal the per-image transform's to the bit; CUDA divides by a scalar through its
        reciprocal, so GPU results may differ in the last float32 bit."""
        return self.finish_planar(torch.as_tensor(arrays_nhw3).permute(0, 3, 1, 2), device)

    def finish_planar(
        self, pixels_n3hw: torch.Tensor, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """:meth:`finish` for uint8 ``[n, 3, H, W]`` (torchvision's decoded layout)."""
        x = pixels_n3hw
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.contiguous().float().div(255)
        for step in self.tensor_steps:
            x = step(x)
        return x


class ClipEncoder:
    """An open_clip model with its preprocessing and tokenizer, for batch encoding on one device."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        model_id: str,
        device: torch.device,
        input_dtype: torch.dtype,
        cache_id: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.preprocess = _Preprocess(preprocess)
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.cache_id = cache_id or model_id
        """``model_id`` plus a fingerprint of local weight files, so caches notice a retrained or
        replaced model that keeps its name (``builtin:shapes``, ``local-dir:``, a weights file)."""
        self.device = device
        self.input_dtype = input_dtype
        self.embed_dim = int(self.encode_texts(["a"]).shape[1])

    def __repr__(self) -> str:
        return (
            f"ClipEncoder({self.model_id!r}, embed_dim={self.embed_dim}, device={self.device}, "
            f"{self.precision})"
        )

    @property
    def precision(self) -> str:
        """The towers' float type, one of :data:`PRECISIONS` but ``auto``."""
        return next(name for name, dtype in DTYPES.items() if dtype == self.input_dtype)

    def at_precision(self, precision: str) -> ClipEncoder:
        """This encoder with its towers in ``precision`` (a copy of the model; ``self`` when
        it is in that precision already, or for ``auto``), as open_clip builds a model in that
        precision: weights rounded, layer norms computed in fp32. ValueError where this
        device's torch cannot run the towers' operations in that type (:func:`check_precision`)
        and for an encoder loaded below fp32 (its weights are rounded already)."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "auto" or precision == self.precision:
            return self
        if self.precision != "fp32":  # widened or re-rounded, the weights would not be these
            raise ValueError(
                f"precision {precision!r} needs the weights as loaded: this encoder holds them "
                f"rounded to {self.precision}; load it with precision={precision!r}"
            )
        check_precision(precision, self.device)
        model = copy.deepcopy(self.model)
        open_clip.convert_weights_to_lp(model, DTYPES[precision])
        for module in model.modules():  # as open_clip builds a low-precision model
            if type(module) is open_clip.transformer.LayerNorm:
                module.__class__ = open_clip.transformer.LayerNormFp32
        other = copy.copy(self)
        other.model, other.input_dtype = model.eval(), DTYPES[precision]
        return other

    @staticmethod
    def load_image(image: Image.Image | str | Path) -> Image.Image:
        """A PIL image or a path -> RGB image; an unreadable file raises ValueError naming it."""
        if isinstance(image, Image.Image):
            return to_rgb(image)
        fpath = Path(image)
        try:
            with Image.open(fpath) as opened:
                opened.load()
                return to_rgb(opened)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            raise ValueError(f"cannot read image {str(fpath)!r}: {e}") from e

    @torch.inference_mode()
    def encode_pixels(self, pixels_n3hw: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Already-preprocessed pixels [n, 3, H, W] -> embeddings [n, d] (CPU fp32)."""
        if pixels_n3hw.ndim != 4 or pixels_n3hw.shape[1] != 3:
            raise ValueError(f"pixels must be [n, 3, H, W], got shape {tuple(pixels_n3hw.shape)}")
        x = pixels_n3hw.to(self.device, self.input_dtype)
        return self._finish(self.model.encode_image(x), normalize)

    def encode_images(
        self,
        images: Sequence[Image.Image | str | Path],
        batch_size: int = 64,
        normalize: bool = False,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """PIL images or paths -> embeddings [n, d] (CPU fp32), encoded ``batch_size`` at a time."""
        _check_batch_size(batch_size)
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            pixels_n3hw = torch.stack([self.preprocess(self.load_image(im)) for im in batch])
            chunks.append(self.encode_pixels(pixels_n3hw, normalize=normalize))
            if progress is not None:
                done = start + len(batch)
                progress(done / len(images), f"encoded {done}/{len(images)} images")
        if not chunks:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(chunks)

    @torch.inference_mode()
    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 256, normalize: bool = False
    ) -> torch.Tensor:
        """Strings -> embeddings [n, d] (CPU fp32), tokenized with the model's own tokenizer."""
        _check_batch_size(batch_size)
        if isinstance(texts, str):
            raise ValueError("texts must be a sequence of strings, got a single string")
        chunks = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            chunks.append(self._finish(self.model.encode_text(tokens), normalize))
        if not chunks:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(chunks)

    def check_sae(self, sae: Any) -> None:
        """Raise ValueError when the SAE was trained on embeddings of another width."""
        if int(sae.n_inputs) != self.embed_dim:
            raise ValueError(
                f"SAE expects {int(sae.n_inputs)}-d inputs, {self.model_id} gives "
                f"{self.embed_dim}-d embeddings; pick the CLIP model the SAE was trained on"
            )

    @staticmethod
    def _finish(x_nd: torch.Tensor, normalize: bool) -> torch.Tensor:
        x_nd = x_nd.float()
        if normalize:
            x_nd = F.normalize(x_nd, dim=-1)
        return x_nd.cpu()


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _precision(device: torch.device, precision: str = "auto") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        check_precision(precision, device)
        return precision
    return "fp16" if device.type in {"cuda", "mps"} else "fp32"


def check_precision(precision: str, device: torch.device | str) -> None:
    """ValueError naming the precision and device where torch cannot run a vision tower's
    operations (convolution, linear, layer norm, GELU, attention) in that type there."""
    dtype, dev = DTYPES[precision], torch.device(device)
    try:
        with torch.inference_mode():
            x = torch.ones(1, 3, 8, 8, device=dev, dtype=dtype)
            w = torch.ones(4, 3, 4, 4, device=dev, dtype=dtype)
            t = F.conv2d(x, w, stride=4).flatten(2).transpose(1, 2)  # [1, 4 tokens, 4]
            t = F.gelu(F.layer_norm(t, (4,)))
            t = F.linear(t, torch.ones(4, 4, device=dev, dtype=dtype))
            F.scaled_dot_product_attention(t[:, None], t[:, None], t[:, None]).softmax(-1)
    except (RuntimeError, NotImplementedError, TypeError) as e:
        raise ValueError(
            f"precision {precision!r} is not available on {dev.type}: this torch "
            f"({torch.__version__}) cannot run the image tower's operations in {dtype} there "
            f"({e}); use precision 'fp32'" + (" or 'bf16'" if precision == "fp16" else "")
        ) from e


def load_encoder(
    model: str,
    pretrained: str | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> ClipEncoder:
    """Load a CLIP model by its open_clip name (or ``"builtin:shapes"``) for encoding.

    Without ``pretrained`` an architecture name gives a randomly initialised model (seeded, so
    every load gives the same weights), which is what tests use with a world's ``clip_arch``.
    ``precision`` is one of :data:`PRECISIONS` (ValueError where the device cannot run it).
    """
    dev = pick_device(device)
    precision = _precision(dev, precision)
    model_id, open_clip_name = _resolve_name(model, pretrained)
    builtin.register_clip_arch(open_clip_name)
    if builtin.is_builtin(model):
        pretrained = None
    schema, _ = open_clip.factory.parse_model_name(open_clip_name)
    tag_cfg = (
        open_clip.pretrained.get_pretrained_cfg(open_clip_name, pretrained)
        if schema is None and pretrained and not os.path.isfile(pretrained)
        else {}
    )
    if schema is None and pretrained and not tag_cfg and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(open_clip_name)
        raise ValueError(
            f"pretrained={pretrained!r} is neither a weights file nor a known tag for "
            f"{open_clip_name}; known tags: {tags or 'none'}"
        )
    downloads = schema == "hf-hub" or bool(tag_cfg)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # random-init models are reproducible
            clip, _, preprocess = open_clip.create_model_and_transforms(
                open_clip_name,
                pretrained=pretrained,
                precision=precision,
                device=dev,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
            )
        tokenizer = open_clip.get_tokenizer(open_clip_name)
    except Exception as e:
        if downloads:
            raise ModelDownloadError(
                f"could not download CLIP {model_id} from the Hugging Face Hub (no network, or "
                f"no such repo/tag): {e}. {OFFLINE_HINT}"
            ) from e
        if isinstance(e, FileNotFoundError) or "not found in built-ins" in str(e):
            raise ValueError(
                f"unknown CLIP model {model!r} ({e}); expected an open_clip architecture such as "
                f"'ViT-B-32' (see open_clip.list_models()), 'hf-hub:org/repo', 'local-dir:/path' "
                f"or one of {[w.source for w in builtin.WORLDS.values()]}"
            ) from e
        raise
    input_dtype = open_clip.get_input_dtype(precision) or torch.float32
    local = _local_weight_files(open_clip_name, pretrained)
    cache_id = f"{model_id}@{weights_fingerprint(local)[:16]}" if local else model_id
    return ClipEncoder(clip, preprocess, tokenizer, model_id, dev, input_dtype, cache_id)


def _local_weight_files(open_clip_name: str, pretrained: str | None) -> list[Path]:
    """The local files a model's weights come from (none for Hub names and random init)."""
    if open_clip_name.startswith("local-dir:"):
        dpath = Path(open_clip_name[len("local-dir:") :])
        return sorted(f for f in dpath.iterdir() if f.is_file()) if dpath.is_dir() else []
    if pretrained and os.path.isfile(pretrained):
        return [Path(pretrained)]
    return []


def weights_fingerprint(fpaths: Sequence[Path], edge_bytes: int = 1 << 20) -> str:
    """sha256 over each file's size and its first and last MiB: changes when weights are
    retrained or replaced, yet costs milliseconds even for a multi-GB checkpoint."""
    digest = hashlib.sha256()
    for fpath in fpaths:
        size = fpath.stat().st_size
        digest.update(f"{fpath.name}\t{size}\n".encode())
        with open(fpath, "rb") as f:
            digest.update(f.read(edge_bytes))
            if size > edge_bytes:
                f.seek(max(edge_bytes, size - edge_bytes))
                digest.update(f.read(edge_bytes))
    return digest.hexdigest()


def _resolve_name(model: str, pretrained: str | None) -> tuple[str, str]:
    """(model_id for caches and display, name to hand to open_clip)."""
    if builtin.is_builtin(model):
        world = builtin.resolve(model)
        dpath = world.clip_dpath
        if not (dpath / "open_clip_config.json").is_file():
            raise ValueError(
                f"built-in model {model!r} not found at {dpath}; rebuild it with "
                f"`python -m {world.module_name} train`"
            )
        return world.source, f"local-dir:{dpath}"
    if model.startswith("local-dir:"):
        return f"local-dir:{Path(model[len('local-dir:') :]).resolve()}", model
    if model.startswith("hf-hub:"):
        return model, model
    if pretrained is None:
        return f"{model}/random-init", model
    if os.path.isfile(pretrained):
        return f"{model}/{Path(pretrained).resolve()}", model
    return f"{model}/{pretrained}", model
