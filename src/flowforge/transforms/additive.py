"""The additive (volume-preserving) elementwise transformer."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.transforms.transformer import Transformer


class Additive(Transformer):
    """Additive (volume-preserving) transformer ``y = x + t``: one parameter per dimension.

    References:
        Dinh, Krueger, Bengio (2014). NICE: Non-linear Independent Components Estimation.
        arXiv:1410.8516.

    Example:
        >>> import torch
        >>> y, ladj = Additive()(torch.zeros(2, 3), torch.ones(2, 3, 1))
        >>> y.tolist(), ladj.abs().sum().item()
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], 0.0)
    """

    params_per_dim = 1

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return x + params.squeeze(-1), torch.zeros_like(x)  # a view backward, no scatter

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return y - params.squeeze(-1), torch.zeros_like(y)


__all__ = ["Additive"]
