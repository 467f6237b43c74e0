"""The posterior's linear skip from the observation's context into the parameters' shift."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LinearShift"]


class LinearShift(nn.Module):
    """``c -> (A c + b, c)``: a linear estimate of the (z-scored, unconstrained) parameters from
    the context, and the context passed on unchanged, the ``net`` of a
    :class:`~flowforge.transforms.SourceShift` around the posterior's preset layers.

    The flow then models ``theta - (A c + b)`` given ``c``. Fitted by least squares to the
    training pairs (:meth:`fit`) before training and trained jointly with the flow, it makes a
    posterior whose mean is linear in the context (Gaussian linear) a shift the preset starts
    from instead of one its conditioner must learn.

    Args:
        context: the context size ``E``.
        features: the parameter dimension ``D``.

    Example:
        >>> import torch
        >>> c = torch.randn(500, 3)
        >>> z = c @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
        >>> net = LinearShift(3, 1)
        >>> _ = net.fit(z, c, ridge=0.0)  # the exact least squares (the default shrinks a little)
        >>> s, e = net(c)
        >>> bool((s - z).abs().max() < 1e-4), e is c
        (True, True)
    """

    def __init__(self, context: int, features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(context, features)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.linear(c), c

    @torch.no_grad()
    def fit(self, z: Tensor, c: Tensor, ridge: float = 1e-3) -> LinearShift:
        """Set ``A, b`` to the ridge least-squares fit of ``z (N, D)`` on ``c (N, E)`` (float64;
        ``ridge`` times the mean squared context on the diagonal, the intercept unpenalised)."""
        c64, z64 = c.detach().double().reshape(len(c), -1), z.detach().double()
        design = torch.cat([c64, c64.new_ones(len(c64), 1)], 1)
        gram = design.T @ design
        scale = float(gram.diagonal()[:-1].mean()) if c64.shape[1] else 1.0
        penalty = torch.full((design.shape[1],), ridge * max(scale, 1e-12), dtype=torch.float64)
        penalty[-1] = 0.0
        coef = torch.linalg.solve(gram + torch.diag(penalty), design.T @ z64)  # (E + 1, D)
        self.linear.weight.copy_(coef[:-1].T)
        self.linear.bias.copy_(coef[-1])
        return self
