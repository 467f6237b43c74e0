"""What the presets share: ``hparams`` (their arguments checked) and the :class:`Preset` base.

A preset is one file that wires a stack of bijections and says everything about itself:

- an explicit signature (no ``**kwargs``), so configs and the command line see its options;
- a docstring whose ``Args:`` documents every argument of that signature, in its order, with a
  ``References:`` line and a runnable example (``tests/test_preset_api.py`` checks all three);
- an ``__init__`` that calls :func:`preset_hparams` first (checks the arguments by
  :func:`~flowforge.flows.arguments.check_arguments`: the common ones, named in
  :data:`~flowforge.flows.arguments.COMMON_ARGS`, and the others against their declared types;
  keeps the JSON-able constructor arguments), builds its stack and hands both to
  :class:`Preset`.

What a valid argument is, and the one form of the error when it is not, stand in
:mod:`flowforge.flows.arguments`; the vector presets build their layers' networks from
:class:`~flowforge.flows._stack.StackArgs` (in :mod:`flowforge.flows._stack`).

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

from collections.abc import Sequence
from typing import Any

from flowforge.core.bijection import Bijection, Compose
from flowforge.core.flow import Flow
from flowforge.distributions.base import BaseDistribution, StandardNormal
from flowforge.flows.arguments import check_arguments

_NOT_HPARAMS = {"self", "__class__", "base"}


def preset_hparams(args: dict[str, Any]) -> dict[str, Any]:
    """Check a preset's arguments; return its hyper-parameters as a JSON-able dict.

    Args:
        args: the constructor's ``locals()``, taken before it defines anything else.

    Returns:
        Every argument but ``self`` and ``base``, sequences as lists, in signature order:
        ``type(flow)(**flow.hparams)`` rebuilds the architecture.

    Raises:
        ValueError: one line naming the preset and the first argument that
            :func:`~flowforge.flows.arguments.check_arguments` refuses.
    """
    check_arguments(type(args["self"]), args)
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


__all__ = ["Preset", "preset_hparams"]
