"""Type checks of option values against a dataclass's field types (TOML, flags, JSON), and
the fields' metadata (:func:`option_doc`).

Example:
    >>> from flowforge.train.config import TrainConfig
    >>> coerce(TrainConfig, "lr", 1, "", []), plain_type(TrainConfig, "hidden")
    (1.0, (<class 'tuple'>, True))
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Sequence
from typing import Any

from flowforge.runs.errors import ConfigError

__all__ = ["coerce", "option_doc", "plain_type"]


def option_doc(help: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata of an option: the flag's help text and, for string options, the valid
    choices (:mod:`flowforge.train.flags` builds the flag from it, :func:`coerce` checks)."""
    return {"help": help} if choices is None else {"help": help, "choices": choices}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, evaluated once per class: evaluating the string
    annotations took 1.3 of the 2.1 CPU seconds of a tiny ``flowforge train`` run."""
    return typing.get_type_hints(cls)


def plain_type(cls: type, key: str) -> tuple[type, bool]:
    """The plain type of field ``key`` of dataclass ``cls`` (``int`` for ``int | None``) and
    whether None is allowed."""
    hint = _type_hints(cls)[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint, optional


def coerce(cls: type, key: str, value: Any, source: str, valid: Sequence[str]) -> Any:
    """Check one option's value against the type of field ``key`` of dataclass ``cls`` (and its
    ``choices`` metadata) and return it in canonical form (floats for ints, tuples for lists).

    Raises:
        ConfigError: an unknown key (naming the ``valid`` ones) or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise ConfigError(f"{source}unknown key {key!r}; valid keys: {', '.join(valid)}")
    base, optional = plain_type(cls, key)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}{key} must not be empty")
    choices = fields[key].metadata.get("choices")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is tuple:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    else:  # dict
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        want |= {tuple: "a list of integers", dict: "a table"}
        raise ConfigError(f"{source}{key} must be {want[base]}, got {value!r}")
    ints = [value] if base is int else list(value) if base is tuple else []
    if any(not -(2**63) <= v < 2**63 for v in ints):  # torch, numpy and JSON readers: 64 bits
        what = f"{key} must be a 64-bit integer" if base is int else f"{key}'s widths must be"
        raise ConfigError(
            f"{source}{what} (from -2**63 to 2**63 - 1), got {value!r}"
            if base is int
            else f"{source}{what} 64-bit integers (at most 2**63 - 1), got {list(value)}"
        )
    if choices is not None and value not in choices:
        raise ConfigError(f"{source}{key} must be one of {', '.join(choices)}; got {value!r}")
    return value
