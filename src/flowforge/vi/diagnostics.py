"""How good is ``q``? Bounds with standard errors, importance sampling, Pareto-k.

Everything here works on the log importance weights ``log w = log p~(x) - log q(x)`` of
samples ``x ~ q`` (:func:`log_weights`), ``(n,)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowforge.core.flow import Flow
from flowforge.vi.objectives import LogDensity

__all__ = [
    "Diagnostics",
    "Estimate",
    "diagnose",
    "effective_sample_size",
    "elbo",
    "generalized_pareto_fit",
    "grid_log_normalizer",
    "log_evidence",
    "log_weights",
    "pareto_k",
]


@dataclass(frozen=True)
class Estimate:
    """A Monte Carlo estimate and its standard error.

    Attributes:
        value: the estimate.
        stderr: its standard error.
    """

    value: float
    stderr: float


@torch.no_grad()
def log_weights(
    flow: Flow,
    log_target: LogDensity,
    samples: int = 4096,
    context: Tensor | None = None,
    chunk: int = 4096,
) -> Tensor:
    """``log p~(x) - log q(x)`` for ``samples`` draws ``x ~ q``, without gradient.

    Args:
        flow: the variational distribution.
        log_target: ``(*, D) -> (*)``.
        samples: number of draws ``n``.
        context: ``(B, C)`` for a conditional flow (then ``(n, B)`` weights).
        chunk: draws per sampling pass.

    Returns:
        ``(n,)`` (``(n, B)`` with a context).
    """
    parts = []
    for start in range(0, samples, chunk):
        x, log_q = flow.sample_and_log_prob(min(chunk, samples - start), context)
        parts.append(log_target(x) - log_q)
    return torch.cat(parts)


def elbo(log_w: Tensor) -> Estimate:
    """The evidence lower bound ``mean(log w)`` and its standard error, over dim 0.

    Args:
        log_w: ``(n,)`` log importance weights.
    """
    log_w = log_w.detach()
    n = log_w.shape[0]
    return Estimate(float(log_w.mean()), float(log_w.std() / math.sqrt(n)) if n > 1 else math.inf)


def log_evidence(log_w: Tensor) -> Estimate:
    """The importance-sampling estimate of ``log Z``, ``log mean(w)``, with a standard error.

    The error is the delta method's, ``sqrt(1/ESS - 1/n)`` (from ``Var(w) / E[w]^2 =
    n / ESS - 1``); it is itself unreliable when :func:`pareto_k` exceeds 0.7.

    Args:
        log_w: ``(n,)`` log importance weights.

    Example:
        >>> import torch
        >>> log_evidence(torch.full((10,), 2.0))
        Estimate(value=2.0, stderr=0.0)
    """
    log_w = log_w.detach()
    n = log_w.shape[0]
    value = float(torch.logsumexp(log_w, 0) - math.log(n))
    ess = effective_sample_size(log_w)
    return Estimate(value, math.sqrt(max(1.0 / ess - 1.0 / n, 0.0)))


def effective_sample_size(log_w: Tensor) -> float:
    """Kish's effective sample size of the importance weights, ``(sum w)^2 / sum w^2``.

    Between 1 (one weight dominates) and ``n`` (equal weights; ``q`` proportional to the
    target).

    Args:
        log_w: ``(n,)`` log importance weights.

    Example:
        >>> import torch
        >>> effective_sample_size(torch.zeros(8)), round(effective_sample_size(torch.tensor([0.0, -50.0])), 6)
        (8.0, 1.0)
    """
    log_w = log_w.detach()
    return float(torch.exp(2 * torch.logsumexp(log_w, 0) - torch.logsumexp(2 * log_w, 0)))


def generalized_pareto_fit(x: Tensor) -> tuple[float, float]:
    """Fit a generalised Pareto distribution to positive exceedances, Zhang-Stephens style.

    The GPD ``P(X > x) = (1 + k x / sigma)^(-1/k)``; ``k > 0`` is a heavy tail with moments of
    order below ``1/k`` only. The estimator (Zhang and Stephens 2009) averages the profile
    likelihood over a grid of ``theta = -k / sigma`` built from the sample maximum and first
    quartile: for each ``theta``, ``k(theta) = mean(log(1 - theta x))`` and the profile
    log-likelihood is ``n (log(-theta / k) - k - 1)``; ``theta`` is the likelihood-weighted mean.

    Args:
        x: ``(n,)`` exceedances over a threshold, ``> 0``; ``n >= 2``.

    Returns:
        ``(k, sigma)``.

    References:
        Zhang, Stephens (2009). A New and Efficient Estimation Method for the Generalized
        Pareto Distribution. Technometrics 51(3), doi:10.1198/tech.2009.08017.
    """
    x = torch.sort(x.detach().to(torch.float64)).values
    n = x.shape[0]
    m = 30 + int(math.sqrt(n))
    quartile = x[max(math.floor(n / 4 + 0.5) - 1, 0)]
    j = torch.arange(1, m + 1, dtype=torch.float64, device=x.device)
    theta = 1.0 / x[-1] + (1.0 - torch.sqrt(m / (j - 0.5))) / (3.0 * quartile)  # (m,)
    k = torch.log1p(-theta.unsqueeze(-1) * x).mean(-1)  # (m,), k(theta)
    profile = n * (torch.log(-theta / k) - k - 1.0)
    weights = torch.softmax(profile, 0)
    theta_hat = (weights * theta).sum()
    k_hat = torch.log1p(-theta_hat * x).mean()
    return float(k_hat), float(-k_hat / theta_hat)


def pareto_k(log_w: Tensor) -> float:
    """Pareto-k of the importance weights (PSIS's k-hat): how heavy their right tail is.

    Fits a generalised Pareto (:func:`generalized_pareto_fit`) to the ``M = min(n / 5,
    3 sqrt(n))`` largest weights over the next one, then shrinks ``k`` towards 0.5 with the
    weakly informative prior of Vehtari et al., ``(M k + 5) / (M + 10)``. Read it as
    ``k < 0.5``: ``q`` covers the target well, importance sampling is reliable;
    ``0.5 <= k < 0.7``: usable; ``k >= 0.7``: ``q`` misses mass the target has, estimates
    from the weights (log Z, ESS) are unreliable.

    Args:
        log_w: ``(n,)`` log importance weights, ``n >= 25`` (else NaN).

    Returns:
        ``k``; ``-inf`` when the largest weights are all equal (the lightest possible tail).

    References:
        Vehtari, Simpson, Gelman, Yao, Gabry (2024). Pareto Smoothed Importance Sampling.
        arXiv:1507.02646.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> u = torch.rand(20000, generator=g, dtype=torch.float64)
        >>> w = ((1 - u) ** -0.5 - 1) / 0.5  # a generalised Pareto with k = 0.5
        >>> abs(pareto_k(w.log()) - 0.5) < 0.1
        True
    """
    log_w = log_w.detach().reshape(-1).to(torch.float64)
    n = log_w.shape[0]
    if n < 25:
        return math.nan
    tail = math.ceil(min(0.2 * n, 3 * math.sqrt(n)))
    top = torch.topk(log_w, tail + 1).values  # descending
    scale = top[0]
    w = torch.exp(top - scale)
    exceed = w[:tail] - w[tail]
    if not bool((exceed > 0).any()):
        return -math.inf
    exceed = exceed[exceed > 0]
    k, _ = generalized_pareto_fit(exceed)
    m = exceed.shape[0]
    return (m * k + 10 * 0.5) / (m + 10)


def grid_log_normalizer(
    log_density: LogDensity,
    bounds: Sequence[tuple[float, float]],
    points: int = 801,
    dtype: torch.dtype = torch.float64,
) -> float:
    """``log Z = log int exp(log_density)`` over a box, by the trapezoidal rule on a grid.

    For 1-D and 2-D densities (``points ** D`` evaluations); the box should hold all the
    mass.

    Args:
        log_density: ``(*, D) -> (*)``.
        bounds: ``[(lo, hi)] * D``.
        points: grid points per dimension.
        dtype: of the grid.

    Example:
        >>> import math, torch
        >>> lz = grid_log_normalizer(lambda x: -0.5 * x.pow(2).sum(-1), [(-9, 9), (-9, 9)])
        >>> abs(lz - math.log(2 * math.pi)) < 1e-8
        True
    """
    axes = [torch.linspace(lo, hi, points, dtype=dtype) for lo, hi in bounds]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (P, ..., P, D)
    with torch.no_grad():
        logp = log_density(grid)  # (P, ..., P)
    for d, (lo, hi) in enumerate(bounds):
        h = (hi - lo) / (points - 1)
        end = torch.ones(points, dtype=dtype)
        end[0] = end[-1] = 0.5
        shape = [1] * len(bounds)
        shape[d] = points
        logp = logp + torch.log(end * h).reshape(shape)
    return float(torch.logsumexp(logp.reshape(-1), 0))


@dataclass(frozen=True)
class Diagnostics:
    """A summary of how well ``q`` fits a target, from ``samples`` draws.

    Attributes:
        elbo: the evidence lower bound with its standard error.
        log_z: the importance-sampling estimate of ``log Z`` with its standard error.
        ess: Kish's effective sample size.
        ess_fraction: ``ess / samples``.
        pareto_k: PSIS's k-hat (below 0.7: importance sampling is reliable).
        samples: number of draws.
    """

    elbo: Estimate
    log_z: Estimate
    ess: float
    ess_fraction: float
    pareto_k: float
    samples: int


def diagnose(
    flow: Flow, log_target: LogDensity, samples: int = 4096, context: Tensor | None = None
) -> Diagnostics:
    """:class:`Diagnostics` of ``flow`` against ``log_target`` from ``samples`` draws.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Planar(features=2, transforms=2)
        >>> d = diagnose(flow, lambda x: -0.5 * x.pow(2).sum(-1), samples=1000)
        >>> d.elbo.value <= d.log_z.value + 1e-6, d.samples
        (True, 1000)
    """
    log_w = log_weights(flow, log_target, samples, context).reshape(-1)
    ess = effective_sample_size(log_w)
    return Diagnostics(
        elbo(log_w), log_evidence(log_w), ess, ess / log_w.shape[0], pareto_k(log_w), samples
    )
