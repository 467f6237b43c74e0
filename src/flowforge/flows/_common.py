"""What the presets share: the common arguments' docs and checks, ``hparams``, the base.

A preset is a short file that only wires a stack of bijections:

- an explicit signature (no ``**kwargs``), so configs and the command line see its options;
- a docstring whose ``Args:`` hold the preset's own arguments (and any common one it words
  differently); :func:`preset_docs` rebuilds ``Args:`` in signature order, filling each common
  argument (:data:`COMMON_ARGS`: ``features``, ``shape``, ``context``, ``transforms``,
  ``steps``, ``hidden``, ``scale_bound``, the conditioner options ``activation``,
  ``dropout``, ``residual_blocks``, ``permutation``, and ``base``) with its one wording;
- an ``__init__`` that calls :func:`preset_hparams` first (checks the common arguments, keeps
  the JSON-able constructor arguments), builds its stack and hands both to :class:`Preset`.

The vector presets build their layers' networks from :class:`~flowforge.flows._stack.StackArgs`
(in :mod:`flowforge.flows._stack`, with :class:`~flowforge.flows._stack.AffinePreset`, the one
signature of MAF, IAF and RealNVP, which differ only in their stack).

Example:
    >>> from flowforge.flows._common import Preset, preset_docs, preset_hparams
    >>> from flowforge.transforms import ActNorm
    >>> @preset_docs
    ... class Scaling(Preset):
    ...     '''Learned per-dimension affine scalings.
    ...
    ...     Args:
    ...         transforms: number of scalings.
    ...
    ...     References:
    ...         None: an example.
    ...     '''
    ...
    ...     def __init__(self, features: int, context: int = 0, transforms: int = 1, base=None):
    ...         hparams = preset_hparams(locals())
    ...         super().__init__(hparams, [ActNorm(features) for _ in range(transforms)], base)
    >>> flow = Scaling(features=3)
    >>> flow.hparams, flow.context, flow.event_shape
    ({'features': 3, 'context': 0, 'transforms': 1}, 0, (3,))
    >>> import inspect
    >>> doc = inspect.cleandoc(Scaling.__doc__)
    >>> print(doc[doc.index("Args:") : doc.index("References:")].rstrip())
    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of scalings.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

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
    """An argument that several presets take: one wording of its doc, one check.

    Attributes:
        doc: the text after ``name:`` in a docstring's ``Args:``.
        valid: whether a value is acceptable.
        expected: what a valid value is, for the error message (``"features >= 1"``).
    """

    doc: str
    valid: Callable[[Any], bool]
    expected: str


COMMON_ARGS: dict[str, CommonArg] = {
    "features": CommonArg(
        "dimension ``D`` of the data, which has shape ``(*, D)``.", _positive_int, "features >= 1"
    ),
    "shape": CommonArg(
        "event shape of the data, e.g. ``(C, H, W)`` for images; the data have shape "
        "``(*, *shape)``.",
        lambda v: _sizes(v) and len(v) > 0,
        "shape: a non-empty sequence of positive sizes",
    ),
    "context": CommonArg(
        "size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).",
        lambda v: _is_int(v) and v >= 0,
        "context >= 0",
    ),
    "transforms": CommonArg("number of transforms in the stack.", _positive_int, "transforms >= 1"),
    "depth": CommonArg("number of flow steps per level.", _positive_int, "depth >= 1"),
    "hidden": CommonArg(
        "hidden sizes ``(H_1, ..., H_k)`` of each conditioner network.",
        lambda v: _positive_int(v) or _sizes(v),
        "hidden: positive sizes",
    ),
    "scale_bound": CommonArg(
        "bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.",
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v > 0,
        "scale_bound > 0",
    ),
    "activation": CommonArg(
        "activation of the conditioner networks' hidden layers, one of "
        + ", ".join(f'``"{a}"``' for a in ACTIVATIONS)
        + " (the first, the default, is the only one the fused kernels implement).",
        lambda v: isinstance(v, str) and v in ACTIVATIONS,
        f"activation in {sorted(ACTIVATIONS)}",
    ),
    "dropout": CommonArg(
        "probability in ``[0, 1)`` of zeroing each hidden activation of the conditioner "
        "networks, in training mode only (``flow.train()``; ``flow.eval()`` is deterministic).",
        _probability,
        "dropout in [0, 1)",
    ),
    "residual_blocks": CommonArg(
        "0: plain conditioner networks; ``k > 0``: residual ones (an input layer to width "
        "``H``, ``k`` pre-activation residual blocks of ``len(hidden)`` layers of width ``H``, "
        "an output layer; ``hidden`` then holds one width ``(H, ..., H)``).",
        lambda v: _is_int(v) and v >= 0,
        "residual_blocks >= 0",
    ),
    "permutation": CommonArg(
        '``"reverse"``: the features reversed between each two coupling layers (autoregressive '
        'layers: alternately reversed input orders); ``"random"``: a fixed random permutation '
        "in each of those places (autoregressive layers: a random input order each), drawn "
        "from torch's random generator at construction and saved with the weights.",
        lambda v: v in PERMUTATIONS,
        f"permutation in {list(PERMUTATIONS)}",
    ),
    "base": CommonArg(
        "latent distribution, whose event shape is the stack's output shape; default a "
        "standard normal.",
        lambda v: v is None or isinstance(v, BaseDistribution),
        "base: None or a BaseDistribution",
    ),
}

_NOT_HPARAMS = {"self", "__class__", "base"}
_ENTRY = re.compile(r"(\w+)\s*(\(.*?\))?:")

_Cls = TypeVar("_Cls", bound=type)


def _own_entries(lines: list[str], indent: str) -> dict[str, list[str]]:
    """The ``Args:`` entries in ``lines`` (one entry: its line and deeper-indented ones)."""
    entries: dict[str, list[str]] = {}
    name = None
    for line in lines:
        top = len(line) > len(indent) and line.startswith(indent) and line[len(indent)] != " "
        m = _ENTRY.match(line[len(indent) :]) if top else None
        if m is not None:
            name = m.group(1)
            entries[name] = [line]
        elif name is not None:
            entries[name].append(line)
    return entries


def preset_docs(cls: _Cls) -> _Cls:
    """Rebuild the ``Args:`` of ``cls``'s docstring from the signature of ``cls.__init__``.

    Each parameter gets the docstring's own entry where it has one, else its
    :data:`COMMON_ARGS` doc; one that has neither is left out (and the preset API test fails).
    ``Args:`` goes where the docstring has it, else before its ``References:``.
    """
    lines = (cls.__doc__ or "").split("\n")

    def heads() -> list[int]:
        return [i for i, line in enumerate(lines) if re.fullmatch(r"\s*[A-Z]\w*:", line)]

    at = next((i for i in heads() if lines[i].strip() == "Args:"), None)
    if at is None:  # no argument of its own: ``Args:`` goes before ``References:``
        at = next((i for i in heads() if lines[i].strip() == "References:"), None)
        if at is None:
            raise ValueError(f"{cls.__name__}: a preset's docstring needs Args: or References:")
        lines[at:at] = [lines[at].replace("References:", "Args:"), ""]
    head = lines[at]
    end = next((i for i in heads() if i > at), len(lines))
    while end > at + 1 and not lines[end - 1].strip():
        end -= 1
    indent = head[: len(head) - len(head.lstrip())] + "    "
    own = _own_entries(lines[at + 1 : end], indent)
    params = [p for p in inspect.signature(cls).parameters]
    body: list[str] = []
    for name in params + [n for n in own if n not in params]:  # stale entries stay visible
        if name in own:
            body += own[name]
        elif name in COMMON_ARGS:
            text = f"{name}: {COMMON_ARGS[name].doc}"
            body += textwrap.wrap(
                text, 96, initial_indent=indent, subsequent_indent=indent + "    "
            )
    lines[at + 1 : end] = body
    cls.__doc__ = "\n".join(lines)
    return cls


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
    "preset_docs",
    "preset_hparams",
]
