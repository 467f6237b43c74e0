"""An invertible linear map parameterised by its LU decomposition.

References:
    Kingma, Dhariwal (2018). Glow: Generative Flow with Invertible 1x1 Convolutions.
    arXiv:1807.03039.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of


class LULinear(Bijection):
    """``z = W x + b`` with ``W = P L U``: ``P`` a fixed permutation, ``L`` unit lower
    triangular, ``U`` upper triangular with diagonal ``sign * exp(log_diag)``.

    ``log|det W| = sum(log_diag)`` costs ``O(D)``; the inverse is two triangular solves.
    Initialised at a random rotation.

    Args:
        features: number of features ``D``.
    """

    perm: Tensor
    sign: Tensor
    lower_mask: Tensor

    def __init__(self, features: int) -> None:
        super().__init__(features)
        q, _ = torch.linalg.qr(torch.randn(features, features))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(features, features), -1))
        self.lower = nn.Parameter(lower * self.lower_mask)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diag = nn.Parameter(torch.log(diag.abs()))
        self.bias = nn.Parameter(torch.zeros(features))

    def _lu(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.event_shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign * torch.exp(self.log_diag))
        return lower, upper

    def weight(self) -> Tensor:
        """The matrix ``W = P L U``, shape ``(D, D)``."""
        lower, upper = self._lu()
        return self.perm @ lower @ upper

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        z = x @ self.weight().T + self.bias
        return z, self.log_diag.sum().expand(batch).to(x.dtype)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        lower, upper = self._lu()
        y = (z - self.bias).reshape(-1, self.event_shape[0]) @ self.perm  # rows: P^T (z - b)
        y = torch.linalg.solve_triangular(lower, y.T, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True).T
        return x.reshape(z.shape), (-self.log_diag.sum()).expand(batch).to(z.dtype)


__all__ = ["LULinear"]
