"""Base distributions of flows."""

from flowforge.distributions.base import (
    BaseDistribution,
    ConditionalDiagNormal,
    DiagNormal,
    GaussianMixture,
    StandardNormal,
)
from flowforge.distributions.logistic import StandardLogistic

__all__ = [
    "BaseDistribution",
    "ConditionalDiagNormal",
    "DiagNormal",
    "GaussianMixture",
    "StandardLogistic",
    "StandardNormal",
]
