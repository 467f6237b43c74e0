"""z-scoring of parameters and observations: ``"none"``, ``"independent"``, ``"structured"``.

- Parameters ``theta`` (after the box's logit, when the prior is a box): a fixed bijection
  inside the posterior flow, so densities stay in the user's units and carry its Jacobian.
  ``"independent"``: ``Standardize`` with each coordinate's mean and standard deviation;
  ``"structured"``: the mean, then a fixed ``Whiten`` by the Cholesky factor of the full
  covariance (plus a ridge of 1e-6 of the mean variance, so a degenerate direction stays
  invertible).
- Observations ``x``: a fixed affine map in front of the embedding (not a bijection: the
  context needs no Jacobian). ``"independent"``: one mean and standard deviation per element of
  the observation (per feature of a trial for i.i.d. trials, shared across trials);
  ``"structured"``: ONE mean and ONE standard deviation over the whole observation (``sbi``'s
  meaning, for time series and images whose elements share a scale).

Statistics are computed in float64 from the training rows; a (nearly) constant coordinate keeps
scale 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flowforge.core import Bijection
from flowforge.transforms.standardize import Standardize
from flowforge.transforms.whiten import Whiten

__all__ = ["ZSCORE_MODES", "XScore", "check_mode", "theta_zscore"]

#: The z-scoring modes.
ZSCORE_MODES = ("none", "independent", "structured")

#: Standard deviations below this (relative to 1) count as constant and keep scale 1.
_TINY = 1e-12


def check_mode(mode: str, what: str) -> str:
    """``mode`` if it is one of :data:`ZSCORE_MODES`.

    Raises:
        ValueError: naming ``what`` and the valid modes.
    """
    if mode not in ZSCORE_MODES:
        raise ValueError(f"{what}: expected one of {', '.join(ZSCORE_MODES)}, got {mode!r}")
    return mode


def theta_zscore(mode: str, rows: Tensor | None, features: int) -> list[Bijection]:
    """The fixed bijections that z-score parameters ``(N, D)`` rows (empty for ``"none"``).

    Args:
        mode: one of :data:`ZSCORE_MODES`.
        rows: the training rows (in the unconstrained space); ``None``: placeholders of the
            right shapes (a saved posterior's values are loaded into them).
        features: ``D``.

    Example:
        >>> rows = torch.randn(500, 2) @ torch.tensor([[2.0, 0.0], [1.0, 0.5]]) + 3.0
        >>> z = rows
        >>> for b in theta_zscore("structured", rows, 2):
        ...     z, _ = b(z)
        >>> torch.allclose(torch.cov(z.T), torch.eye(2), atol=0.05)
        True
    """
    check_mode(mode, "z_score_theta")
    if mode == "none":
        return []
    zeros = torch.zeros(features, dtype=torch.float64)
    ones = torch.ones(features, dtype=torch.float64)
    if rows is None:
        blank = Standardize(zeros, ones)
        return [blank] if mode == "independent" else [blank, Whiten(torch.eye(features))]
    r = rows.detach().double()
    mean = r.mean(0)
    if mode == "independent":
        std = r.std(0) if r.shape[0] > 1 else ones
        return [Standardize(mean, torch.where(std > _TINY, std, ones))]
    if r.shape[0] > 1:
        cov = torch.cov(r.T).reshape(features, features)
        ridge = 1e-6 * float(cov.diagonal().mean().clamp_min(_TINY))  # a degenerate direction
        cov = cov + ridge * torch.eye(features, dtype=r.dtype)
    else:
        cov = torch.eye(features, dtype=r.dtype)
    return [Standardize(mean, ones), Whiten(torch.linalg.cholesky(cov))]


class XScore(nn.Module):
    """``(x - mean) / std`` with fixed statistics, broadcast over the observation's trailing
    dimensions (``(*, *x_shape)`` in, the same shape out).

    Args:
        mode: one of :data:`ZSCORE_MODES`.
        x_shape: the event shape of one observation.
        trial_axis: the observation's first event dimension is a trial axis of any length
            (:class:`~flowforge.nn.DeepSetEmbedding`): statistics are shared across trials.

    Example:
        >>> score = XScore("independent", (3,)).fit(torch.randn(100, 3) * 5 + 2)
        >>> y = score(torch.randn(100, 3) * 5 + 2)
        >>> y.shape, bool(y.std(0).gt(0.5).all() and y.std(0).lt(2).all())
        (torch.Size([100, 3]), True)
    """

    mean: Tensor
    std: Tensor

    def __init__(self, mode: str, x_shape: tuple[int, ...], trial_axis: bool = False) -> None:
        super().__init__()
        self.mode = check_mode(mode, "z_score_x")
        self.x_shape, self.trial_axis = tuple(x_shape), bool(trial_axis)
        shape = self._stat_shape()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def _stat_shape(self) -> tuple[int, ...]:
        if self.mode != "independent":
            return ()
        return self.x_shape[1:] if self.trial_axis else self.x_shape

    def fit(self, x: Tensor) -> XScore:
        """Set the statistics from training observations ``(N, *x_shape)``; returns itself."""
        if self.mode == "none":
            return self
        r = x.detach().double()
        if self.mode == "structured":
            mean, std = r.mean(), r.std() if r.numel() > 1 else r.new_ones(())
        else:
            flat = r.reshape(-1, *self._stat_shape())  # (N [* T], *stat_shape)
            mean = flat.mean(0)
            std = flat.std(0) if flat.shape[0] > 1 else torch.ones_like(mean)
        std = torch.where(std > _TINY * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(std.to(self.std))
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "none":
            return x
        return (x - self.mean.to(x)) / self.std.to(x)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, x_shape={self.x_shape}"
