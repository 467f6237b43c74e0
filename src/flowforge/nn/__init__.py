"""Networks that conditioners use: MLP, MADE, their residual forms, conv nets, WaveNet,
causal transformers, ODE dynamics and the embedding networks of conditional flows."""

from flowforge.nn.causal_transformer import CausalTransformer, KVCache
from flowforge.nn.conv import ConvNet
from flowforge.nn.embedding import (
    Conv1dEmbedding,
    Conv2dEmbedding,
    DeepSetEmbedding,
    MLPEmbedding,
)
from flowforge.nn.griffin_lim import MelGriffinLim
from flowforge.nn.made import MADE, MaskedLinear
from flowforge.nn.mlp import MLP
from flowforge.nn.ode import ODENet, TimeMLP
from flowforge.nn.residual import ResidualMADE, ResidualMLP
from flowforge.nn.wavenet import AnchoredOutput, CentredOutput, FrameUpsample, WaveNet

__all__ = [
    "MADE",
    "MLP",
    "AnchoredOutput",
    "CausalTransformer",
    "CentredOutput",
    "Conv1dEmbedding",
    "Conv2dEmbedding",
    "ConvNet",
    "DeepSetEmbedding",
    "FrameUpsample",
    "KVCache",
    "MLPEmbedding",
    "MaskedLinear",
    "MelGriffinLim",
    "ODENet",
    "ResidualMADE",
    "ResidualMLP",
    "TimeMLP",
    "WaveNet",
]
