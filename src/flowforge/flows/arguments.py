"""The presets' arguments: what a valid value is, and the one error when it is not.

Every preset argument that is out of range or of the wrong type is refused with one line in
one form, ``"{Preset}: expected {what a valid value is}, got {the value!r}"``
(:func:`bad_argument`), so the same bad input gets the same message from every preset that
takes the argument:

- the arguments several presets take (:data:`COMMON_ARGS`: ``features``, ``context``,
  ``transforms``, ``hidden``, ...) have one check each, which :func:`check_arguments` applies
  to a preset's constructor arguments together with each other argument's declared type;
- checks that depend on the architecture stand here once too: an image preset's ``shape``
  against its levels (:func:`image_shape`), the one channel count of a 1-D conv preset
  (:func:`conv_width`), a coupling stack's ``features >= 2``
  (:func:`check_coupling_features`);
- an argument's old name keeps working for a while (:func:`renamed_steps`).

:func:`~flowforge.flows._common.preset_hparams` calls :func:`check_arguments` first thing
in every preset's ``__init__``.

Example:
    >>> from flowforge.flows.arguments import COMMON_ARGS, bad_argument
    >>> COMMON_ARGS["context"].valid(-1), COMMON_ARGS["context"].expected
    (False, 'context >= 0')
    >>> bad_argument("MAF", "context >= 0", -1)
    ValueError('MAF: expected context >= 0, got -1')
"""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flowforge.distributions.base import BaseDistribution
from flowforge.nn.activations import ACTIVATIONS

#: An image preset's event shape ``(C, H, W)``.
Image = tuple[int, int, int]


def is_int(v: Any) -> bool:
    """Whether ``v`` is an integer (``True`` is not one)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return is_int(v) and v >= 1


def _sizes(v: Any) -> bool:
    return isinstance(v, Sequence) and all(_positive_int(s) for s in v)


def _probability(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


def bad_argument(preset: str, expected: str, found: Any) -> ValueError:
    """The error for a preset argument out of range:
    ``"{preset}: expected {expected}, got {found!r}"`` (one line)."""
    return ValueError(f"{preset}: expected {expected}, got {found!r}")


#: The orders a vector preset's layers may take (``permutation=``).
PERMUTATIONS = ("reverse", "random")


@dataclass(frozen=True)
class CommonArg:
    """An argument that several presets take: one check, wherever it appears.

    Attributes:
        valid: whether a value is acceptable.
        expected: what a valid value is, for the error message (``"features >= 1"``).
    """

    valid: Callable[[Any], bool]
    expected: str


#: The arguments several presets take, by name, with their checks (a preset documents each
#: in its own docstring).
COMMON_ARGS: dict[str, CommonArg] = {
    "features": CommonArg(_positive_int, "features >= 1"),
    "shape": CommonArg(
        lambda v: _sizes(v) and len(v) > 0, "shape: a non-empty sequence of positive sizes"
    ),
    "context": CommonArg(lambda v: is_int(v) and v >= 0, "context >= 0"),
    "transforms": CommonArg(_positive_int, "transforms >= 1"),
    "depth": CommonArg(_positive_int, "depth >= 1"),
    "hidden": CommonArg(lambda v: _positive_int(v) or _sizes(v), "hidden: positive sizes"),
    "scale_bound": CommonArg(
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "scale_bound > 0",
    ),
    "activation": CommonArg(
        lambda v: isinstance(v, str) and v in ACTIVATIONS, f"activation in {sorted(ACTIVATIONS)}"
    ),
    "dropout": CommonArg(_probability, "dropout in [0, 1)"),
    "residual_blocks": CommonArg(lambda v: is_int(v) and v >= 0, "residual_blocks >= 0"),
    "permutation": CommonArg(lambda v: v in PERMUTATIONS, f"permutation in {list(PERMUTATIONS)}"),
    "base": CommonArg(
        lambda v: v is None or isinstance(v, BaseDistribution), "base: None or a BaseDistribution"
    ),
}

#: The most layers a count option may ask for (``transforms``, ``residual_blocks``): a deeper
#: stack does not fit in memory (10^9 residual blocks raised MemoryError) or trains for days.
MAX_LAYERS = 1000


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the declared type ``hint`` (``bool`` is not an ``int``, an
    ``int`` is a ``float``, a string is not a sequence)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is typing.Union or origin is types.UnionType:
        return any(_matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return is_int(value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin in (Sequence, list, tuple):
        item = args[0] if args else Any
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    return not isinstance(hint, type) or isinstance(value, hint)


def _shown(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " or ".join(map(repr, typing.get_args(hint)))
    return getattr(hint, "__name__", None) or str(hint).replace("collections.abc.", "")


_DECLARED: dict[type, dict[str, Any]] = {}


def _declared(cls: type) -> dict[str, Any]:
    """The declared types of ``cls.__init__``'s arguments (resolved once per class)."""
    if cls not in _DECLARED:
        _DECLARED[cls] = typing.get_type_hints(cls.__init__)  # type: ignore[misc]
    return _DECLARED[cls]


def check_arguments(preset: type, args: dict[str, Any]) -> None:
    """Check a preset's constructor arguments: the common ones by :data:`COMMON_ARGS`, the
    others against their declared types.

    Args:
        preset: the preset's class (its name leads each message; its ``__init__`` declares
            the types).
        args: argument name -> value (a constructor's ``locals()``; ``self`` is passed over).

    Raises:
        ValueError: one line (:func:`bad_argument`) naming the preset and the first argument
            out of range, an argument that is not of its declared type (``lu="false"`` for a
            ``bool``), a layer count above :data:`MAX_LAYERS`, or ``residual_blocks > 0``
            with hidden widths that differ.

    Example:
        >>> import flowforge as ff
        >>> check_arguments(ff.flows.Glow, {"shape": (1, 8, 8), "lu": "false"})
        Traceback (most recent call last):
        ...
        ValueError: Glow: expected lu of type bool, got 'false'
    """
    name = preset.__name__
    declared = _declared(preset)
    for key, value in args.items():
        arg = COMMON_ARGS.get(key)
        if arg is not None and not arg.valid(value):
            raise bad_argument(name, arg.expected, value)
        if arg is None and key in declared and not _matches(value, declared[key]):
            raise bad_argument(name, f"{key} of type {_shown(declared[key])}", value)
        if key in ("transforms", "residual_blocks") and is_int(value) and value > MAX_LAYERS:
            why = "a deeper stack does not fit in memory"
            raise bad_argument(name, f"{key} <= {MAX_LAYERS} ({why})", value)
    hidden: Any = args.get("hidden", ())
    if args.get("residual_blocks") and not is_int(hidden) and len(set(hidden)) != 1:
        raise ValueError(
            f"{name}: residual_blocks needs hidden layers of one width (H, ..., H), "
            f"got {tuple(hidden)}"
        )


def check_coupling_features(preset: str, features: int) -> None:
    """Refuse a coupling stack over fewer than 2 features (one half conditions the other).

    Raises:
        ValueError: ``"{preset}: expected features >= 2 (...), got {features}"``.
    """
    if features < 2:
        why = "a coupling layer conditions one half of the features on the other"
        raise bad_argument(preset, f"features >= 2 ({why})", features)


def image_shape(name: str, shape: Sequence[int], levels: int, squeezes: int | None = None) -> Image:
    """Check an image preset's ``shape`` against its levels, of which ``squeezes`` (default:
    all) halve the height and width.

    Example:
        >>> image_shape("Glow", [1, 8, 8], levels=2)
        (1, 8, 8)
        >>> image_shape("Glow", [1, 6, 8], levels=2)
        Traceback (most recent call last):
        ...
        ValueError: Glow: 2 levels halve the height and width 2 times, so they must be divisible by 4; got 6x8
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3:
        raise bad_argument(name, "shape=(C, H, W)", tuple(shape))
    if not is_int(levels) or levels < 1:
        raise bad_argument(name, "levels >= 1", levels)
    c, h, w = dims
    halvings = levels if squeezes is None else squeezes
    step = 2**halvings
    if h % step or w % step:
        raise ValueError(
            f"{name}: {levels} levels halve the height and width {halvings} times, so they "
            f"must be divisible by {step}; got {h}x{w}"
        )
    return c, h, w


def conv_width(name: str, hidden: int | Sequence[int]) -> int:
    """One channel count from ``hidden`` (a number or a one-element sequence): WaveGlow's."""
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return hidden
    if isinstance(hidden, Sequence) and len(hidden) == 1:
        return int(hidden[0])
    raise bad_argument(name, "hidden to be a number of channels", hidden)


def renamed_steps(preset: str, steps: int | None, value: int, new: str) -> int:
    """The value of an option once called ``steps``, now ``new`` (``steps`` means optimisation
    steps only): ``steps`` if given (with a :class:`DeprecationWarning`), else ``value``.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as seen:
        ...     warnings.simplefilter("always")
        ...     renamed_steps("Glow", 3, 8, "depth"), str(seen[0].message)[:40]
        (3, 'Glow(steps=...) is deprecated: use depth')
    """
    if steps is None:
        return value
    warnings.warn(
        f"{preset}(steps=...) is deprecated: use {new}=... (steps are optimisation steps only)",
        DeprecationWarning,
        stacklevel=3,
    )
    return steps


__all__ = [
    "COMMON_ARGS",
    "MAX_LAYERS",
    "PERMUTATIONS",
    "CommonArg",
    "Image",
    "bad_argument",
    "check_arguments",
    "check_coupling_features",
    "conv_width",
    "image_shape",
    "is_int",
    "renamed_steps",
]
