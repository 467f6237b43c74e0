"""Networks that conditioners use: MLP, MADE, their residual forms, conv nets, causal
transformers and ODE dynamics."""

from flowforge.nn.causal_transformer import CausalTransformer, KVCache
from flowforge.nn.conv import ConvNet
from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP
from flowforge.nn.ode import ODENet
from flowforge.nn.residual import ResidualMADE, ResidualMLP

__all__ = [
    "MADE",
    "MLP",
    "CausalTransformer",
    "ConvNet",
    "KVCache",
    "MaskedLinear",
    "ODENet",
    "ResidualMADE",
    "ResidualMLP",
]
