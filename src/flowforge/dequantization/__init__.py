"""Dequantization of integer levels (images): the dequantizers, their noise flows and the bound.

Between the presets and the runs: it builds flows (the learned dequantizer's noise flows), so
:mod:`flowforge.data` (datasets only) knows no models.

- :mod:`.dequantizers`: :class:`Dequantizer`, :class:`UniformDequantizer`,
  :class:`VariationalDequantizer`;
- :mod:`.noise_flows`: the noise flows of the learned dequantizer;
- :mod:`.likelihood`: :func:`dequantized_log_likelihood`, the bound and its
  importance-sampled estimate.

The names are also importable from :mod:`flowforge.data`, where they were first.
"""

from flowforge.dequantization.dequantizers import (
    Dequantizer,
    UniformDequantizer,
    VariationalDequantizer,
)
from flowforge.dequantization.likelihood import DequantizedLikelihood, dequantized_log_likelihood
from flowforge.dequantization.noise_flows import (
    NOISE_FLOWS,
    conv_encoder,
    conv_noise_flow,
    realnvp_noise_flow,
)

__all__ = [
    "NOISE_FLOWS",
    "DequantizedLikelihood",
    "Dequantizer",
    "UniformDequantizer",
    "VariationalDequantizer",
    "conv_encoder",
    "conv_noise_flow",
    "dequantized_log_likelihood",
    "realnvp_noise_flow",
]
