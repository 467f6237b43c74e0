"""The contract: bijections, their inverses and compositions, and flows."""

from flowforge.core.bijection import Bijection, Compose, Inverse
from flowforge.core.flow import Flow, FlowDistribution

__all__ = ["Bijection", "Compose", "Flow", "FlowDistribution", "Inverse"]
