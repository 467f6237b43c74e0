"""What the vector presets build their stacks from: the networks' arguments, one signature.

:class:`StackArgs` holds the common arguments a vector stack is built from and builds each
layer's conditioner network (:meth:`StackArgs.mlp` for a coupling, :meth:`StackArgs.made` for
an autoregressive layer); :func:`stack_args` reads it from a preset's ``hparams``. The
presets' own files hold their signatures and the stack builders
(:func:`~flowforge.flows.coupling.coupling_stack`,
:func:`~flowforge.flows.autoregressive.autoregressive_stack`).

Example:
    >>> from flowforge.flows._stack import stack_args
    >>> args = stack_args("MAF", {"features": 4, "context": 0, "transforms": 2, "hidden": 8})
    >>> args.hidden, args.permutation
    ([8], 'reverse')
    >>> net = args.mlp(2, 4)
    >>> type(net).__name__
    'MLP'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flowforge.flows.arguments import is_int
from flowforge.nn.made import MADE
from flowforge.nn.mlp import MLP
from flowforge.nn.residual import ResidualMADE, ResidualMLP


@dataclass(frozen=True)
class StackArgs:
    """The common arguments a vector stack is built from.

    Attributes:
        preset: the preset's name, for error messages.
        features: dimension ``D`` of the data.
        context: size ``C`` of the context (0: unconditional).
        transforms: number of conditioned layers.
        hidden: hidden sizes of each conditioner network.
        activation: name of the networks' activation.
        dropout: dropout probability after each hidden activation (training mode only).
        residual_blocks: 0 (plain networks) or the number of residual blocks.
        permutation: ``"reverse"`` or ``"random"`` (see
            :data:`~flowforge.flows.arguments.COMMON_ARGS`).
    """

    preset: str
    features: int
    context: int
    transforms: int
    hidden: Sequence[int]
    activation: str = "relu"
    dropout: float = 0.0
    residual_blocks: int = 0
    permutation: str = "reverse"

    def mlp(self, in_features: int, out_features: int) -> MLP:
        """A coupling's network ``(*, in_features) -> (*, out_features)``."""
        opts: dict[str, Any] = {"activation": self.activation, "dropout": self.dropout}
        if self.residual_blocks:
            return ResidualMLP(in_features, out_features, self.hidden, self.residual_blocks, **opts)
        return MLP(in_features, out_features, self.hidden, **opts)

    def made(self, params_per_dim: int, order: Any) -> MADE:
        """An autoregressive layer's MADE over ``features`` inputs in ``order``; a random
        order (``permutation="random"``) is kept in the state dict."""
        opts: dict[str, Any] = {
            "context": self.context,
            "order": order,
            "activation": self.activation,
            "dropout": self.dropout,
            "save_order": self.permutation == "random",
        }
        if self.residual_blocks:
            return ResidualMADE(
                self.features, params_per_dim, self.hidden, self.residual_blocks, **opts
            )
        return MADE(self.features, params_per_dim, self.hidden, **opts)


def stack_args(preset: str, hparams: dict[str, Any]) -> StackArgs:
    """The :class:`StackArgs` in the ``hparams`` of the vector preset named ``preset`` (from
    :func:`~flowforge.flows._common.preset_hparams`)."""
    hidden = hparams["hidden"]
    return StackArgs(
        preset,
        hparams["features"],
        hparams["context"],
        hparams["transforms"],
        [hidden] if is_int(hidden) else list(hidden),
        hparams.get("activation", "relu"),
        float(hparams.get("dropout", 0.0)),
        hparams.get("residual_blocks", 0),
        hparams.get("permutation", "reverse"),
    )


__all__ = ["StackArgs", "stack_args"]
