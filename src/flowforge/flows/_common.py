"""What the presets share: the common arguments' checks, ``hparams``, the base.

A preset is one file that wires a stack of bijections and says everything about itself:

- an explicit signature (no ``**kwargs``), so configs and the command line see its options;
- a docstring whose ``Args:`` documents every argument of that signature, in its order, with a
  ``References:`` line and a runnable example (``tests/test_preset_api.py`` checks all three);
- an ``__init__`` that calls :func:`preset_hparams` first (checks the common arguments, named
  in :data:`COMMON_ARGS`, and the others against their declared types; keeps the JSON-able
  constructor arguments), builds its stack and hands both to :class:`Preset`.

The vector presets build their layers' networks from :class:`~flowforge.flows._stack.StackArgs`
(in :mod:`flowforge.flows._stack`).

Example:
    >>> from flowforge.flows._common import Preset, preset_hparams
    >>> from flowforge.transforms import ActNorm
    >>> class Scaling(Preset):
    ...     def __init__(self, features: int, *, context: int = 0, transforms: int = 1) -> None:
    ...         hparams = preset_hparams(locals())
    ...         super().__init__(hparams, [ActNorm(features) for _ in range(transforms)])
    >>> flow = Scaling(features=3)
    >>> flow.hparams, flow.context, flow.event_shape
    ({'features': 3, 'context': 0, 'transforms': 1}, 0, (3,))
    >>> Scaling(features=3, transforms=0)
    Traceback (most recent call last):
    ...
    ValueError: Scaling: expected transforms >= 1, got 0
"""

from __future__ import annotations

import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flowforge.core.bijection import Bijection, Compose
from flowforge.core.flow import Flow
from flowforge.distributions.base import BaseDistribution, StandardNormal
from flowforge.nn.activations import ACTIVATIONS


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def _sizes(v: Any) -> bool:
    return isinstance(v, Sequence) and all(_positive_int(s) for s in v)


def _probability(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


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
    "context": CommonArg(lambda v: _is_int(v) and v >= 0, "context >= 0"),
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
    "residual_blocks": CommonArg(lambda v: _is_int(v) and v >= 0, "residual_blocks >= 0"),
    "permutation": CommonArg(lambda v: v in PERMUTATIONS, f"permutation in {list(PERMUTATIONS)}"),
    "base": CommonArg(
        lambda v: v is None or isinstance(v, BaseDistribution), "base: None or a BaseDistribution"
    ),
}

_NOT_HPARAMS = {"self", "__class__", "base"}


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
        return _is_int(value)
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


def preset_hparams(args: dict[str, Any]) -> dict[str, Any]:
    """Check a preset's common arguments; return its hyper-parameters as a JSON-able dict.

    Args:
        args: the constructor's ``locals()``, taken before it defines anything else.

    Returns:
        Every argument but ``self`` and ``base``, sequences as lists, in signature order:
        ``type(flow)(**flow.hparams)`` rebuilds the architecture.

    Raises:
        ValueError: naming the preset and the first common argument out of range, an argument
            that is not of its declared type (``lu="false"`` for a ``bool``), a layer count
            above :data:`MAX_LAYERS`, or ``residual_blocks > 0`` with hidden widths that
            differ.
    """
    name = type(args["self"]).__name__
    declared = _declared(type(args["self"]))
    for key, value in args.items():
        arg = COMMON_ARGS.get(key)
        if arg is not None and not arg.valid(value):
            raise ValueError(f"{name}: expected {arg.expected}, got {value!r}")
        if arg is None and key in declared and not _matches(value, declared[key]):
            raise ValueError(
                f"{name}: expected {key} of type {_shown(declared[key])}, got {value!r}"
            )
        if key in ("transforms", "residual_blocks") and _is_int(value) and value > MAX_LAYERS:
            raise ValueError(
                f"{name}: expected {key} <= {MAX_LAYERS} (a deeper stack does not fit in memory), "
                f"got {value}"
            )
    hidden: Any = args.get("hidden", ())
    if args.get("residual_blocks") and not _is_int(hidden) and len(set(hidden)) != 1:
        raise ValueError(
            f"{name}: residual_blocks needs hidden layers of one width (H, ..., H), "
            f"got {tuple(hidden)}"
        )
    return {
        k: list(v) if isinstance(v, tuple | list) else v
        for k, v in args.items()
        if k not in _NOT_HPARAMS
    }


class Preset(Flow):
    """A flow that a preset assembled: its stack, its base and its constructor arguments.

    Args:
        hparams: the output of :func:`preset_hparams` (it holds ``context``).
        layers: the stack of bijections, data -> latent, chained by ``Compose``.
        base: the latent distribution; ``None``: a standard normal over the stack's output
            shape (``(D,)`` for a vector flow).

    Attributes:
        hparams: the preset's constructor arguments but ``base``, JSON-able.
    """

    def __init__(
        self,
        hparams: dict[str, Any],
        layers: Sequence[Bijection],
        base: BaseDistribution | None = None,
    ) -> None:
        bijection = Compose(list(layers))
        if base is None:
            base = StandardNormal(bijection.forward_shape(bijection.event_shape))
        super().__init__(bijection, base, context=hparams["context"])
        self.hparams = hparams


__all__ = [
    "COMMON_ARGS",
    "MAX_LAYERS",
    "PERMUTATIONS",
    "CommonArg",
    "Preset",
    "preset_hparams",
]
