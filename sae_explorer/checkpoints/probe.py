"""What a local checkpoint source holds, read lazily and at most once for every format's
``detect`` and ``load``.

Pickled files are only ever opened with ``torch.load(weights_only=True)``: tensors and plain
containers, never code. A file that needs code is refused, and the message says so only when the
pickle really names a callable outside that safe set.
"""

from __future__ import annotations

import io
import json
import pickle
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
HEADER_MAX_BYTES = 1 << 16
"""The longest first line read as a JSON header (saev's ``dump``)."""


class UnsafeCheckpointError(ValueError):
    """A pickled checkpoint that would need arbitrary code to load; it is refused."""


class Probe:
    """One local source: a folder or a file, with its contents read on first use and cached.

    ``name`` is the name the source is known by (a Hub path's file name, say), which MSAE reads
    its configuration from."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name or path.name

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()

    def folder_holding(self, cfg_fname: str, weights_fname: str) -> Path | None:
        """The folder of a config + weights layout: the source itself when it holds
        ``cfg_fname``, or the folder of a source that is one of the two files; else None."""
        if self.is_dir:
            return self.path if (self.path / cfg_fname).is_file() else None
        if (
            self.path.name in {cfg_fname, weights_fname}
            and (self.path.parent / cfg_fname).is_file()
        ):
            return self.path.parent
        return None

    @cached_property
    def json_header(self) -> dict | None:
        """The first line as a JSON object when the file starts with one (saev), else None."""
        if self.is_dir:
            return None
        with open(self.path, "rb") as fh:
            line = fh.readline(HEADER_MAX_BYTES)
        if not line.startswith(b"{"):
            return None
        try:
            header = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return header if isinstance(header, dict) else None

    @cached_property
    def contents(self) -> Any:
        """The file's object: a safetensors dict, the pickle after a JSON header line, or a torch
        pickle. Raises ValueError (UnsafeCheckpointError for code) when none of these reads."""
        if self.is_dir:
            raise ValueError(f"{self.path} is a folder, not a weights file")
        if self.path.suffix == ".safetensors":
            try:
                return load_file(self.path)
            except Exception as err:  # safetensors raises its own error types
                raise ValueError(f"cannot read {self.path} as safetensors: {err}") from err
        if self.json_header is not None:
            with open(self.path, "rb") as fh:
                offset = len(fh.readline(HEADER_MAX_BYTES))
                return load_pickle_safely(io.BufferedReader(_Tail(fh, offset)), self.path)
        return load_pickle_safely(self.path, self.path)

    def state(self) -> tuple[dict | None, str]:
        """``(contents, "")`` when the file holds a dict, else ``(None, why not)``."""
        try:
            obj = self.contents
        except UnsafeCheckpointError:
            raise
        except ValueError as err:
            return None, str(err)
        if not isinstance(obj, dict):
            return None, f"it holds a {type(obj).__name__}, not a dict"
        return obj, ""


class _Tail(io.RawIOBase):
    """The part of an open file after ``offset``, as a file of its own (what follows saev's
    header line), so torch reads the checkpoint from disk instead of from a copy in memory."""

    def __init__(self, fh: io.BufferedReader, offset: int) -> None:
        super().__init__()
        self.fh, self.offset = fh, offset
        fh.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.fh.readinto(buffer)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        target = self.offset + pos if whence == io.SEEK_SET else pos
        return self.fh.seek(target, whence) - self.offset

    def tell(self) -> int:
        return self.fh.tell() - self.offset


def load_pickle_safely(src: Path | io.IOBase, fpath: Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers (never runs pickled code)."""
    try:
        if isinstance(src, Path):
            try:  # memory-map zip checkpoints: no copy of the weights in RAM
                return torch.load(src, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        code = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln), None)
        if code is not None:
            raise UnsafeCheckpointError(
                f"refusing to load {fpath}: its pickle references code outside tensors and plain "
                f"containers (loading it would run arbitrary pickled code, which sae-explorer "
                f"never does). Re-save it as a dict of tensors, or convert it on a trusted "
                f"machine. Detail: {code}"
            ) from err
        boilerplate = (
            "Weights only load failed",
            "Please file an issue",
            "Check the documentation",
        )
        reason = next((ln for ln in lines if not ln.startswith(boilerplate)), "unreadable pickle")
        raise ValueError(f"{fpath} is not a torch checkpoint ({reason})") from err
    except Exception as err:  # torch raises many types for files that are not checkpoints
        raise ValueError(
            f"cannot read {fpath} as a torch checkpoint ({type(err).__name__}: {err})"
        ) from err


def as_float(value: Any, name: str) -> float:
    """A Python float from a float, int or one-element tensor; ValueError otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def require_tensors(state: dict, names: list[str], what: str) -> dict[str, torch.Tensor]:
    """Pick ``names`` out of a state dict, naming the missing ones in a ValueError."""
    missing = [n for n in names if n not in state]
    if missing:
        raise ValueError(f"{what} is missing {missing}; it has {sorted(map(str, state))}")
    out = {}
    for name in names:
        if not isinstance(state[name], torch.Tensor):
            raise ValueError(f"{what}: {name!r} is a {type(state[name]).__name__}, not a tensor")
        out[name] = state[name]
    return out
