"""Base distributions of flows."""

from flowforge.distributions.base import (
    BaseDistribution,
    ConditionalDiagNormal,
    DiagNormal,
    GaussianMixture,
    StandardNormal,
)

__all__ = [
    "BaseDistribution",
    "ConditionalDiagNormal",
    "DiagNormal",
    "GaussianMixture",
    "StandardNormal",
]
