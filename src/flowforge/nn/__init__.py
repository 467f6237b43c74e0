"""Networks that conditioners use: MLP, MADE, their residual forms, conv nets and ODE dynamics."""

from flowforge.nn.conv import ConvNet
from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP
from flowforge.nn.ode import ODENet
from flowforge.nn.residual import ResidualMADE, ResidualMLP

__all__ = ["MADE", "MLP", "ConvNet", "MaskedLinear", "ODENet", "ResidualMADE", "ResidualMLP"]
