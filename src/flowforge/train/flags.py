"""The layers over :class:`TrainConfig`'s defaults: command-line flags and TOML files.

One flag per field (``--batch-size`` for ``batch_size``), its help text and choices from the
field's metadata. Flags default to ``argparse.SUPPRESS``, so a parsed namespace holds only the
options the user gave: :func:`flags_to_dict` turns it into a layer for
:meth:`TrainConfig.from_layers`, over the TOML file (:func:`read_toml`) and the defaults.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> flags_to_dict(parser.parse_args(["--hidden", "32,32", "--lr", "1e-3"]))
    {'hidden': (32, 32), 'lr': 0.001}
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from flowforge.runs.errors import ConfigError
from flowforge.runs.options import read_toml
from flowforge.train.config import AUTO, TrainConfig, field_type

__all__ = ["add_arguments", "flags_to_dict", "parse_flag_value", "read_toml"]


def parse_flag_value(key: str, text: str) -> Any:
    """Convert a command-line string to the Python value that field ``key`` expects.

    ``none`` (or ``null``) is ``None`` for an option that may be unset; an empty value is never
    taken for it.

    Example:
        >>> parse_flag_value("hidden", "64,64"), parse_flag_value("bins", "none")
        ((64, 64), None)

    Raises:
        ConfigError: a value that does not parse as the field's type (one line, naming the flag).
    """
    base, optional = field_type(key)
    if optional and text.lower() in ("none", "null"):
        return None
    flag = "--" + key.replace("_", "-")
    try:
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is tuple:
            parts = text.replace(" ", "").split(",")
            if not all(parts):  # "", ",", "64,,64": a missing width
                raise ValueError
            return tuple(int(t) for t in parts)
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: "integers separated by commas"}
        kind[dict] = "a JSON object"
        raise ConfigError(f"{flag} expects {kind[base]}, got {text!r}") from None
    return text


def add_arguments(
    parser: argparse.ArgumentParser, choices: dict[str, Sequence[str]] | None = None
) -> None:
    """Add one flag per :class:`TrainConfig` option to ``parser``.

    Args:
        parser: the parser of ``flowforge train``.
        choices: valid values of string options known only at run time (``{"flow": [...]}``).
    """
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in TrainConfig.option_names():
            continue  # bookkeeping, not an option
        flag = "--" + f.name.replace("_", "-")
        base, _ = field_type(f.name)
        default = getattr(defaults, f.name)
        text = f.metadata["help"]
        if base is bool:
            shown = "" if default is None else f" (default: {'yes' if default else 'no'})"
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=text + shown,
            )
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        valid = (choices or {}).get(f.name, f.metadata.get("choices"))
        if f.name == "flow" and valid is not None:
            valid = [*valid, AUTO]  # the search over presets (flowforge.train.auto)
        parser.add_argument(
            flag,
            dest=f.name,
            metavar=f.name.upper() if valid is None else None,
            choices=valid,
            default=argparse.SUPPRESS,
            help=text if default is None else f"{text} (default: {shown})",
        )


def flags_to_dict(namespace: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` options present in a parsed namespace, converted to values."""
    given = vars(namespace)
    out: dict[str, Any] = {}
    for key in TrainConfig.option_names():
        if key in given:
            value = given[key]
            out[key] = parse_flag_value(key, value) if isinstance(value, str) else value
    return out
