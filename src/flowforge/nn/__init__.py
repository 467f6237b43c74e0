"""Networks that conditioners use: MLP and MADE."""

from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP

__all__ = ["MADE", "MLP", "MaskedLinear"]
