"""Networks that conditioners use: MLP, MADE, their residual forms, conv nets, WaveNet,
causal transformers and ODE dynamics."""

from flowforge.nn.causal_transformer import CausalTransformer, KVCache
from flowforge.nn.conv import ConvNet
from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP
from flowforge.nn.ode import ODENet
from flowforge.nn.residual import ResidualMADE, ResidualMLP
from flowforge.nn.wavenet import FrameUpsample, WaveNet

__all__ = [
    "MADE",
    "MLP",
    "CausalTransformer",
    "ConvNet",
    "FrameUpsample",
    "KVCache",
    "MaskedLinear",
    "ODENet",
    "ResidualMADE",
    "ResidualMLP",
    "WaveNet",
]
