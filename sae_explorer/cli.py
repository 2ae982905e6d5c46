"""Frozen-dataclass configs as command-line flags and environment variables: the field help texts
are the CLI help, and each flag, variable and help text comes from the field, once.

A config field is declared as ``lr: float = field(default=1e-3, metadata=doc("learning rate"))``;
:func:`add_dataclass_args` turns every field into ``--lr`` (booleans into ``--x/--no-x``) and
:func:`dataclass_from_args` builds the config back from the parsed namespace. With an
``env_prefix`` (or a field's own ``doc(env=...)``) each field also reads an environment variable
(``SAE_EXPLORER_LR``): flags win over variables, variables over the dataclass defaults;
:func:`dataclass_from_env` reads the variables alone.

This module imports nothing heavy, so a ``--help`` built on it answers at once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

T = TypeVar("T")

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off", "")


def doc(
    text: str, *, env: str | None = None, parse: Callable[[str], Any] | None = None
) -> dict[str, Any]:
    """Field metadata: the help text; ``env``, the environment variable setting the field (instead
    of ``<env_prefix><NAME>``); ``parse``, how a flag's or variable's text becomes the value
    (default: by the field's type). ``parse`` raises ``ValueError`` naming what is allowed."""
    meta: dict[str, Any] = {"help": text}
    if env is not None:
        meta["env"] = env
    if parse is not None:
        meta["parse"] = parse
    return meta


def parse_bool(raw: str) -> bool:
    """``1/0, true/false, yes/no, on/off`` (any case); empty is false."""
    text = raw.strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError("use 1/0, true/false, yes/no or on/off")


def env_name(f: Field, env_prefix: str | None) -> str | None:
    """The environment variable of field ``f``, or None when it has none."""
    if "env" in f.metadata:
        return f.metadata["env"]
    return None if env_prefix is None else env_prefix + f.name.upper()


def dataclass_env_values(
    cls: type, env_prefix: str | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The fields of ``cls`` whose variable is set (and not empty), parsed; ``ValueError`` names
    the variable and its value when one does not parse."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = env_name(f, env_prefix)
        raw = environ.get(name) if name else None
        if raw is None or raw == "":
            continue
        try:
            values[f.name] = _parser(f)(raw)
        except ValueError as e:
            raise ValueError(f"{name}={raw!r}: {e}") from None
    return values


def dataclass_from_env(
    cls: type[T], env_prefix: str, environ: Mapping[str, str] | None = None
) -> T:
    """The config with its defaults replaced by the environment variables that are set."""
    return cls(**dataclass_env_values(cls, env_prefix, environ))


def _flag(prefix: str, name: str) -> str:
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def _kind(f: Field) -> str:
    """The field's type without ``| None``: ``"int"`` for ``int | None``."""
    type_ = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return str(type_).split(" |")[0]


def _parser(f: Field) -> Callable[[str], Any]:
    if "parse" in f.metadata:
        return f.metadata["parse"]
    kind = _kind(f)
    if kind == "bool":
        return parse_bool
    return {"int": int, "float": float}.get(kind, str)


def _flag_type(f: Field) -> Callable[[str], Any]:
    """The argparse ``type`` of a field: its ``parse`` with the message kept, else its type."""
    parse = f.metadata.get("parse")
    if parse is None:
        return {"int": int, "float": float}.get(_kind(f), str)

    def checked(raw: str) -> Any:
        try:
            return parse(raw)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{raw!r}: {e}") from None

    checked.__name__ = f.name
    return checked


def _help(f: Field, default: Any, env: str | None) -> str:
    text = f.metadata.get("help", "").replace("%", "%%")
    notes = [] if default is None else [f"default: {default}"]
    if env:
        notes.append(f"env {env}")
    return f"{text} ({'; '.join(notes)})" if notes else text


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    prefix: str = "",
    *,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """One flag per field of ``cls`` (``--prefix-field-name``), typed by its annotation. A field
    with an environment variable (``env_prefix`` + NAME, or its ``doc(env=...)``) takes its
    default from it when set, and the help names it."""
    from_env = dataclass_env_values(cls, env_prefix, environ)
    for f in fields(cls):
        assert f.default is not MISSING, f"{cls.__name__}.{f.name} needs a default to be a flag"
        default = from_env.get(f.name, f.default)
        help_ = _help(f, default, env_name(f, env_prefix))
        if _kind(f) == "bool":
            parser.add_argument(
                _flag(prefix, f.name),
                dest=_dest(prefix, f.name),
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_,
            )
        else:
            parser.add_argument(
                _flag(prefix, f.name),
                dest=_dest(prefix, f.name),
                type=_flag_type(f),
                default=default,
                help=help_,
            )


def dataclass_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "") -> T:
    """The config whose fields were parsed by :func:`add_dataclass_args` with the same prefix."""
    values: dict[str, Any] = {f.name: getattr(args, _dest(prefix, f.name)) for f in fields(cls)}
    return cls(**values)


def add_source_args(parser: argparse.ArgumentParser) -> None:
    """What the commands that read a corpus through a CLIP and an SAE take (``precompute``,
    ``evaluate``): ``--clip``, ``--pretrained``, ``--sae``, ``--corpus`` (repeatable),
    ``--max-items``, ``--cache-dir`` and ``--device``."""
    from sae_explorer.corpus import default_cache_dpath

    parser.add_argument(
        "--clip",
        required=True,
        help="CLIP model: builtin:shapes, ViT-B-32, hf-hub:org/repo, local-dir:/path",
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="open_clip pretrained tag or weights file (none: random init)",
    )
    parser.add_argument(
        "--sae", required=True, help="SAE: builtin:shapes, a folder, a file or a hub id"
    )
    parser.add_argument(
        "--corpus", required=True, action="append", help="corpus source; repeat to combine several"
    )
    parser.add_argument("--max-items", type=int, default=None, help="cap per corpus source")
    parser.add_argument(
        "--cache-dir", default=None, help=f"cache root (default {default_cache_dpath()})"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
