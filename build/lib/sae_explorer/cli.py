"""Frozen-dataclass configs as command-line flags: the field help texts are the CLI help.

A config field is declared as ``lr: float = field(default=1e-3, metadata=doc("learning rate"))``;
:func:`add_dataclass_args` turns every field into ``--lr`` (booleans into ``--x/--no-x``) and
:func:`dataclass_from_args` builds the config back from the parsed namespace.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def doc(text: str) -> dict[str, str]:
    """Field metadata carrying the help text."""
    return {"help": text}


def _flag(prefix: str, name: str) -> str:
    return "--" + (f"{prefix}-" if prefix else "") + name.replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}_{name}" if prefix else name


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per field of ``cls`` (``--prefix-field-name``), typed by its annotation."""
    for f in fields(cls):
        kind = str(f.type).split(" |")[0]
        help_ = f"{f.metadata.get('help', '')} (default: {f.default})"
        if kind == "bool":
            parser.add_argument(
                _flag(prefix, f.name),
                dest=_dest(prefix, f.name),
                action=argparse.BooleanOptionalAction,
                default=f.default,
                help=help_,
            )
        else:
            parser.add_argument(
                _flag(prefix, f.name),
                dest=_dest(prefix, f.name),
                type={"int": int, "float": float}.get(kind, str),
                default=f.default,
                help=help_,
            )


def dataclass_from_args(cls: type[T], args: argparse.Namespace, prefix: str = "") -> T:
    """The config whose fields were parsed by :func:`add_dataclass_args` with the same prefix."""
    values: dict[str, Any] = {f.name: getattr(args, _dest(prefix, f.name)) for f in fields(cls)}
    return cls(**values)
