"""The dequantization bound of discrete data and its importance-sampled estimate, in bits/dim.

For levels ``v`` in ``{0, ..., K-1}^D`` dequantized as ``u = (v + e) / K`` with noise
``e ~ q(e | v)`` (:mod:`flowforge.dequantization`), every density ``p`` of ``u`` gives

    ``log P(v) >= E_q[ log p(u) - D log K - log q(e | v) ]``  (nats per example);

:func:`dequantized_log_likelihood` reports that bound and the importance-sampled estimate
``log (1/S) sum_s exp(w_s)``, ``w_s = log p(u_s) - D log K - log q(e_s | v)``, which is also a
lower bound of ``log P(v)`` in expectation, never looser than the plain bound, and tends to
``log P(v)`` as the number of samples ``S`` grows.

References:
    Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative Models
    with Variational Dequantization and Architecture Design. arXiv:1902.00275.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from flowforge.dequantization.dequantizers import Dequantizer

__all__ = ["DequantizedLikelihood", "dequantized_log_likelihood"]


@dataclass
class DequantizedLikelihood:
    """Per-example log-likelihood bounds of discrete data and their bits/dim.

    Attributes:
        bound: ``(N,)`` float64, the mean over ``S`` samples of
            ``w = log p(u) - D log K - log q(e | v)`` (nats per example).
        importance: ``(N,)`` float64, ``logsumexp_s w_s - log S``.
        samples: ``S``.
        dim: ``D``.
        levels: ``K``.
    """

    bound: Tensor
    importance: Tensor
    samples: int
    dim: int
    levels: int

    def _bpd(self, ll: Tensor) -> tuple[float, float]:
        per = -ll / (self.dim * math.log(2.0))
        err = 2 * float(per.std(unbiased=True)) / math.sqrt(per.numel()) if per.numel() > 1 else 0
        return float(per.mean()), err

    @property
    def bound_bpd(self) -> float:
        """Mean bits/dim of the bound, ``-mean(bound) / (D log 2)``."""
        return self._bpd(self.bound)[0]

    @property
    def importance_bpd(self) -> float:
        """Mean bits/dim of the importance-sampled estimate."""
        return self._bpd(self.importance)[0]

    @property
    def bound_bpd_err(self) -> float:
        """Two standard errors (over examples) of :attr:`bound_bpd`."""
        return self._bpd(self.bound)[1]

    @property
    def importance_bpd_err(self) -> float:
        """Two standard errors (over examples) of :attr:`importance_bpd`."""
        return self._bpd(self.importance)[1]


@torch.no_grad()
def dequantized_log_likelihood(
    flow: nn.Module,
    dequantizer: Dequantizer,
    v: Tensor,
    samples: int = 16,
    batch_size: int = 1024,
    *,
    context: Tensor | None = None,
) -> DequantizedLikelihood:
    """The dequantization bound of ``log P(v)`` and its importance-sampled estimate.

    For each example, ``S = samples`` noises ``e_s ~ q(. | v)`` give
    ``w_s = log p(u_s) - D log K - log q(e_s | v)`` with ``u_s = (v + e_s) / K``; the bound is
    ``mean_s w_s``, the importance-sampled estimate ``logsumexp_s w_s - log S``. Both flow and
    dequantizer are evaluated in evaluation mode (their modes are restored afterwards).

    Args:
        flow: the density ``p`` of ``u`` (anything with ``log_prob(u) -> (B,)``), with every
            pre-transform (``Logit``) inside it.
        dequantizer: a :class:`~flowforge.dequantization.UniformDequantizer` or
            :class:`~flowforge.dequantization.VariationalDequantizer`.
        v: ``(N, *event)`` integer levels ``0 .. K-1``.
        samples: ``S >= 1`` noise samples per example.
        batch_size: examples per pass (each pass evaluates ``batch_size * S`` rows).
        context: ``(N, C)`` the examples' context for a conditional flow (a one-hot class):
            ``log p(u | c)``; ``None``: unconditional.

    Returns:
        A :class:`DequantizedLikelihood` (per-example float64 values on the CPU).

    Raises:
        FloatingPointError: if any ``w_s`` is not finite (a NaN is an error, never skipped).

    Example:
        >>> import torch
        >>> from flowforge.dequantization import UniformDequantizer
        >>> class Uniform(nn.Module):  # the uniform density on [0, 1)^D
        ...     def log_prob(self, u):
        ...         return u.new_zeros(u.shape[0])
        >>> deq = UniformDequantizer((1, 2, 2), 17)
        >>> res = dequantized_log_likelihood(Uniform(), deq, torch.zeros(3, 1, 2, 2), samples=4)
        >>> round(res.importance_bpd, 4), round(res.bound_bpd, 4)  # log2(17)
        (4.0875, 4.0875)
    """
    if samples < 1:
        raise ValueError(f"dequantized_log_likelihood: samples must be >= 1, got {samples}")
    n = dequantizer._check(v)
    shift = dequantizer.dim * math.log(dequantizer.levels)
    modes = (flow.training, dequantizer.training)
    flow.eval()
    dequantizer.eval()
    bounds, estimates = [], []
    try:
        for i in range(0, n, batch_size):
            vb = v[i : i + batch_size]
            b = vb.shape[0]
            rep = vb.repeat(samples, *([1] * (vb.dim() - 1)))  # (S b, *event), sample-major
            u, log_q = dequantizer.sample(rep)
            if context is None:
                lp = flow.log_prob(u)  # type: ignore[operator]
            else:  # each noise of an example given the example's context, sample-major
                c = context[i : i + batch_size].repeat(samples, 1).to(u)  # (S b, C)
                lp = flow.log_prob(u, c)  # type: ignore[operator]
            w = (lp - shift - log_q).double().reshape(samples, b)
            if not bool(torch.isfinite(w).all()):
                bad = int((~torch.isfinite(w)).any(0).sum())
                raise FloatingPointError(
                    f"dequantized_log_likelihood: {bad} example(s) of rows {i}..{i + b - 1} "
                    "have a non-finite log-likelihood"
                )
            bounds.append(w.mean(0).cpu())
            estimates.append((torch.logsumexp(w, 0) - math.log(samples)).cpu())
    finally:
        flow.train(modes[0])
        dequantizer.train(modes[1])
    empty = torch.zeros(0, dtype=torch.float64)
    return DequantizedLikelihood(
        bound=torch.cat(bounds) if bounds else empty,
        importance=torch.cat(estimates) if estimates else empty,
        samples=samples,
        dim=dequantizer.dim,
        levels=dequantizer.levels,
    )
