"""Networks that conditioners use: MLP, MADE and convolutional nets."""

from flowforge.nn.conv import ConvNet
from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP

__all__ = ["MADE", "MLP", "ConvNet", "MaskedLinear"]
