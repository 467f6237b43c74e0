"""The base-distribution interface a :class:`~flowforge.core.flow.Flow` draws its latents from.

The densities themselves are in :mod:`flowforge.distributions`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Shape, as_shape

__all__ = ["BaseDistribution", "ParameterFreeDistribution"]


class BaseDistribution(nn.Module):
    """A latent density with ``log_prob`` and reparameterised ``rsample``.

    Subclasses follow the device and dtype of their buffers and parameters.

    Attributes:
        event_shape: shape of one latent event.
        tempered_by_scaling: whether ``T * rsample(...)`` is exactly a draw at temperature
            ``T`` (density proportional to ``p(z)^(1/T^2)``): true for the standard normal only.
    """

    tempered_by_scaling: bool = False

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__()
        self.event_shape: Shape = as_shape(event_shape)

    def _ref(self) -> Tensor:
        raise NotImplementedError

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of ``z`` with shape ``(*, *event_shape)``; returns shape ``(*)``."""
        raise NotImplementedError

    def rsample(self, shape: Sequence[int], context: Tensor | None = None) -> Tensor:
        """Draw reparameterised samples of shape ``(*shape, *event_shape)``."""
        raise NotImplementedError

    def _noise(self, shape: Sequence[int]) -> Tensor:
        ref = self._ref()
        return torch.randn((*shape, *self.event_shape), dtype=ref.dtype, device=ref.device)


class ParameterFreeDistribution(BaseDistribution):
    """A base distribution without parameters (the standard normal, the standard logistic).

    A scalar buffer, not saved with the weights, follows ``.to(device, dtype)``, so samples
    take the module's device and dtype.
    """

    _anchor: Tensor

    def __init__(self, event_shape: int | Sequence[int]) -> None:
        super().__init__(event_shape)
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def _ref(self) -> Tensor:
        return self._anchor
