"""The contract: bijections, their inverses and compositions, flows, and the defensive mixture
of a flow with a fallback density."""

from flowforge.core.bijection import Bijection, Compose, Inverse
from flowforge.core.defensive import DefensiveMixture
from flowforge.core.flow import Flow, FlowDistribution

__all__ = ["Bijection", "Compose", "DefensiveMixture", "Flow", "FlowDistribution", "Inverse"]
