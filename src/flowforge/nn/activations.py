"""The activations a conditioner network may use, by name (what presets and configs pass).

Example:
    >>> from flowforge.nn.activations import activation_factory
    >>> activation_factory("tanh")()
    Tanh()
    >>> activation_factory("nope")
    Traceback (most recent call last):
        ...
    ValueError: expected activation in ['elu', 'gelu', 'leaky_relu', 'relu', 'silu', 'tanh'], got 'nope'
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

#: Activation name -> module factory (``leaky_relu``: negative slope 0.01, torch's default).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def activation_factory(activation: str | Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A module factory from a name in :data:`ACTIVATIONS` (a factory is returned as it is).

    Raises:
        ValueError: on a name that is not in :data:`ACTIVATIONS`, listing the valid ones.
    """
    if not isinstance(activation, str):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"expected activation in {sorted(ACTIVATIONS)}, got {activation!r}")
    return ACTIVATIONS[activation]


def check_dropout(dropout: float) -> float:
    """``dropout`` as a float, checked to be a probability in ``[0, 1)``.

    Raises:
        ValueError: otherwise.
    """
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"expected dropout in [0, 1), got {dropout!r}")
    return float(dropout)


__all__ = ["ACTIVATIONS", "activation_factory", "check_dropout"]
