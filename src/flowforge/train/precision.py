"""Mixed precision for training: re-exported from :mod:`flowforge.fit.precision`, where it moved
(the engine's part, shared by every objective)."""

from flowforge.fit.precision import (
    NETWORKS,
    PRECISIONS,
    network_autocast,
    networks_of,
    precision_context,
)

__all__ = [
    "NETWORKS",
    "PRECISIONS",
    "network_autocast",
    "networks_of",
    "precision_context",
]
