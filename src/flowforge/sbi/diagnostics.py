"""Checks to run before trusting an amortised posterior: simulation-based calibration, expected
coverage, posterior predictive checks.

Each check takes the posterior as plain tensors or callables, so it works for any posterior
(a :class:`flowforge.sbi.Posterior`, another library's, an analytic one):

- ``sample(n, x)``: ``n`` posterior samples at a batch of observations ``x`` ``(B, *X)``,
  returned as ``(n, B, D)`` (``Posterior.sample``'s convention), or a tensor of such samples;
- ``log_prob(theta, x)``: ``theta`` ``(n, B, D)`` evaluated at ``x`` ``(B, *X)`` -> ``(n, B)``
  (only the HPD coverage needs it).

**Simulation-based calibration** (Talts et al. 2018): for ``N`` pairs ``(theta_i, x_i)`` from
the prior and the simulator, the rank of ``theta_i`` among ``L`` posterior samples at ``x_i``
is uniform on ``{0, ..., L}`` per coordinate when the posterior is calibrated. The uniformity
statistic is Pearson's chi-square over ``B`` bins of ranks (``B - 1`` degrees of freedom,
exact expected counts when ``L + 1`` is not a multiple of ``B``); a narrow posterior gives a
U-shaped histogram, a wide one a hump, a biased one a slope.

**Expected coverage**: for each pair, the fraction ``f_i`` of posterior mass "closer" than the
true ``theta_i``, randomised over ties so that ``f_i ~ U(0, 1)`` exactly under calibration;
``ECP(alpha) = mean(f_i < alpha)`` is the coverage of the credible regions of level ``alpha``,
the diagonal when calibrated, below it when over-confident. "Closer" is by posterior density
(the highest-posterior-density regions, :func:`hpd_coverage`) or by distance to a random
reference point (TARP, Lemos et al. 2023, :func:`tarp_coverage`, which needs no density). The
curve is the empirical CDF of the ``f_i``, so its largest distance to the diagonal is the
Kolmogorov-Smirnov statistic and comes with a p-value.

**Posterior predictive check**: simulate from posterior samples at ``x_o`` and locate ``x_o``
in that predictive cloud (per-coordinate quantiles and the quantile of its Mahalanobis
distance); an observation far in the tails means the posterior does not explain it.

References:
    Talts et al. 2018, "Validating Bayesian inference algorithms with simulation-based
    calibration", arXiv 1804.06788;
    Lemos et al. 2023, "Sampling-based accuracy testing of posterior estimators for general
    inference" (TARP), arXiv 2302.03026;
    Lueckmann et al. 2021, "Benchmarking simulation-based inference", arXiv 2101.04653.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from flowforge.runs.figures import new_figure, write_png

__all__ = [
    "CoverageResult",
    "PredictiveCheck",
    "SBCResult",
    "binomial_interval",
    "hpd_coverage",
    "plot_coverage",
    "plot_predictive_check",
    "plot_sbc",
    "posterior_predictive_check",
    "sbc",
    "tarp_coverage",
]

#: ``sample(n, x)``: ``x`` ``(B, *X)`` -> ``(n, B, D)``.
SampleFn = Callable[[int, Tensor], Tensor]
#: ``log_prob(theta, x)``: ``theta`` ``(n, B, D)``, ``x`` ``(B, *X)`` -> ``(n, B)``.
LogProbFn = Callable[[Tensor, Tensor], Tensor]


def _posterior_samples(
    sample: SampleFn | Tensor, x: Tensor, num_samples: int, batch_size: int
) -> Tensor:
    """``(L, N, D)`` posterior samples at each of the ``N`` observations of ``x``."""
    n = x.shape[0]
    if isinstance(sample, Tensor):
        if sample.dim() != 3 or sample.shape[1] != n:
            raise ValueError(
                f"expected posterior samples of shape (L, {n}, D), got {tuple(sample.shape)}"
            )
        return sample
    if num_samples < 1:
        raise ValueError(f"expected num_samples >= 1, got {num_samples}")
    parts = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            xb = x[start : start + batch_size]
            s = sample(num_samples, xb)
            if s.dim() != 3 or s.shape[:2] != (num_samples, xb.shape[0]):
                raise ValueError(
                    f"expected sample(n, x) to return (n, B, D) = ({num_samples}, "
                    f"{xb.shape[0]}, D) for x of shape {tuple(xb.shape)}, got {tuple(s.shape)}"
                )
            parts.append(s)
    return torch.cat(parts, 1)


def _check_pairs(theta: Tensor, x: Tensor) -> None:
    if theta.dim() != 2 or x.dim() < 2 or theta.shape[0] != x.shape[0]:
        raise ValueError(
            f"expected theta (N, D) and x (N, *X) with the same N, got {tuple(theta.shape)} "
            f"and {tuple(x.shape)}"
        )


def _chi2_sf(statistic: Tensor, dof: int) -> Tensor:
    """Survival function of the chi-square distribution: ``Q(dof / 2, statistic / 2)``."""
    k = statistic.new_full(statistic.shape, dof / 2)
    return torch.special.gammaincc(k, statistic / 2)


def _ks_sf(statistic: float, n: int) -> float:
    """Asymptotic p-value of the one-sample Kolmogorov-Smirnov statistic ``D_n`` (with
    Stephens' small-sample correction ``t = D (sqrt n + 0.12 + 0.11 / sqrt n)``)."""
    t = statistic * (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n))
    if t < 0.2:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101))
    return float(min(max(2 * total, 0.0), 1.0))


def binomial_interval(trials: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """The central ``level`` interval of ``Binomial(trials, p)``: the smallest ``lo`` and
    ``hi`` with ``P(X < lo) <= (1 - level) / 2`` and ``P(X > hi) <= (1 - level) / 2``.

    Example:
        >>> binomial_interval(100, 0.5, 0.95)
        (40, 60)
    """
    k = torch.arange(trials + 1, dtype=torch.float64)
    log_pmf = (
        math.lgamma(trials + 1)
        - torch.lgamma(k + 1)
        - torch.lgamma(trials - k + 1)
        + k * math.log(p)
        + (trials - k) * math.log1p(-p)
    )
    cdf = torch.cumsum(log_pmf.exp(), 0)
    tail = (1 - level) / 2
    lo = int((cdf <= tail).sum())  # P(X <= lo - 1) <= tail
    upper = 1 - cdf + log_pmf.exp()  # P(X >= k)
    hi = int((upper > tail).nonzero().max())
    return lo, hi


@dataclass
class SBCResult:
    """The outcome of :func:`sbc`.

    Attributes:
        ranks: ``(N, D)`` rank of each true parameter among its ``L`` posterior samples, in
            ``{0, ..., L}``.
        num_samples: ``L``.
        bins: ``B``, the bins of the chi-square statistic.
        statistic: ``(D,)`` Pearson's chi-square of the binned ranks against uniform.
        pvalue: ``(D,)`` its p-value (``B - 1`` degrees of freedom).
    """

    ranks: Tensor
    num_samples: int
    bins: int
    statistic: Tensor
    pvalue: Tensor

    def counts(self) -> tuple[Tensor, Tensor]:
        """Observed ``(B, D)`` and expected ``(B,)`` counts per bin."""
        return _binned(self.ranks, self.num_samples, self.bins)


def _binned(ranks: Tensor, num_samples: int, bins: int) -> tuple[Tensor, Tensor]:
    n = ranks.shape[0]
    values = num_samples + 1
    edges = torch.div(torch.arange(values) * bins, values, rounding_mode="floor")  # rank -> bin
    per_bin = torch.bincount(edges, minlength=bins).double()  # rank values in each bin
    which = edges[ranks.long()]  # (N, D)
    observed = torch.stack(
        [torch.bincount(which[:, d], minlength=bins) for d in range(ranks.shape[1])], 1
    ).double()
    return observed, n * per_bin / values


def sbc(
    theta: Tensor,
    x: Tensor,
    sample: SampleFn | Tensor,
    num_samples: int = 99,
    bins: int = 10,
    batch_size: int = 256,
) -> SBCResult:
    """Simulation-based calibration ranks and a chi-square uniformity test per coordinate.

    Args:
        theta: ``(N, D)`` parameters drawn from the prior.
        x: ``(N, *X)`` one simulation per parameter row.
        sample: ``sample(n, x)`` with ``x`` ``(B, *X)`` -> ``(n, B, D)`` (for instance
            ``posterior.sample``), or posterior samples ``(L, N, D)``.
        num_samples: ``L`` posterior samples per pair (``L + 1`` a multiple of ``bins`` gives
            equal bins).
        bins: ``B``, the bins of the chi-square statistic (each should expect 5 or more ranks).
        batch_size: Observations per call of ``sample``.

    Returns:
        The ranks, the statistic and p-values per coordinate. Under calibration each p-value
        is uniform on ``(0, 1)``; a p-value below 0.01 (say) flags the coordinate.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> theta = torch.randn(400, 2, generator=g)  # prior N(0, I)
        >>> x = theta + torch.randn(400, 2, generator=g)  # x ~ N(theta, I)
        >>> exact = lambda n, xb: xb / 2 + torch.randn(n, *xb.shape, generator=g) / 2**0.5
        >>> bool((sbc(theta, x, exact).pvalue > 0.001).all())
        True
        >>> narrow = lambda n, xb: xb / 2 + 0.5 * torch.randn(n, *xb.shape, generator=g) / 2**0.5
        >>> bool((sbc(theta, x, narrow).pvalue < 1e-6).all())
        True

    References:
        Talts et al. 2018, arXiv 1804.06788.
    """
    _check_pairs(theta, x)
    if bins < 2 or bins > num_samples + 1:
        raise ValueError(f"expected 2 <= bins <= num_samples + 1 = {num_samples + 1}, got {bins}")
    samples = _posterior_samples(sample, x, num_samples, batch_size)  # (L, N, D)
    num_samples = samples.shape[0]
    if samples.shape[2] != theta.shape[1]:
        raise ValueError(
            f"expected posterior samples of dimension {theta.shape[1]}, got {samples.shape[2]}"
        )
    ranks = (samples < theta.to(samples)[None]).sum(0)  # (N, D)
    observed, expected = _binned(ranks, num_samples, bins)
    statistic = ((observed - expected[:, None]) ** 2 / expected[:, None]).sum(0)
    return SBCResult(ranks, num_samples, bins, statistic, _chi2_sf(statistic, bins - 1))


@dataclass
class CoverageResult:
    """The outcome of :func:`hpd_coverage` or :func:`tarp_coverage`.

    Attributes:
        fractions: ``(N,)`` per pair, the posterior mass "closer" than the true parameter
            (uniform on ``(0, 1)`` when calibrated).
        levels: ``(K,)`` credibility levels ``alpha`` in ``[0, 1]``.
        coverage: ``(K,)`` expected coverage at each level, ``mean(fractions < alpha)``.
        statistic: The largest ``|coverage - alpha|`` (Kolmogorov-Smirnov statistic).
        pvalue: Its asymptotic p-value.
        method: ``"hpd"`` or ``"tarp"``.
    """

    fractions: Tensor
    levels: Tensor
    coverage: Tensor
    statistic: float
    pvalue: float
    method: str


def _coverage(
    closer: Tensor, num_samples: int, levels: int, method: str, generator: torch.Generator | None
) -> CoverageResult:
    """From the count of closer samples ``(N,)`` among ``L``: randomised fractions and the curve."""
    u = torch.rand(closer.shape, generator=generator, dtype=torch.float64)
    fractions = (closer.double() + u) / (num_samples + 1)  # exactly U(0, 1) under calibration
    alpha = torch.linspace(0, 1, levels, dtype=torch.float64)
    coverage = (fractions[None, :] < alpha[:, None]).double().mean(1)
    ordered = fractions.sort().values
    n = len(ordered)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    statistic = float(torch.maximum(i / n - ordered, ordered - (i - 1) / n).max())
    return CoverageResult(fractions, alpha, coverage, statistic, _ks_sf(statistic, n), method)


def hpd_coverage(
    theta: Tensor,
    x: Tensor,
    sample: SampleFn,
    log_prob: LogProbFn,
    num_samples: int = 100,
    levels: int = 51,
    batch_size: int = 256,
    seed: int = 0,
) -> CoverageResult:
    """Expected coverage of the highest-posterior-density regions.

    The true ``theta_i`` lies in the HPD region of level ``alpha`` when fewer than a fraction
    ``alpha`` of the posterior's samples have a higher density than it.

    Args:
        theta: ``(N, D)`` parameters drawn from the prior.
        x: ``(N, *X)`` their simulations.
        sample: ``sample(n, x)``: ``(B, *X)`` -> ``(n, B, D)``.
        log_prob: ``log_prob(theta, x)``: ``(n, B, D)`` and ``(B, *X)`` -> ``(n, B)``.
        num_samples: ``L`` posterior samples per pair.
        levels: Number of credibility levels in ``[0, 1]``.
        batch_size: Observations per call.
        seed: Seeds the randomisation of ties.

    Returns:
        The coverage curve; the diagonal when calibrated, below it when over-confident.

    Example:
        >>> import torch
        >>> from torch.distributions import Normal
        >>> g = torch.Generator().manual_seed(1)
        >>> theta = torch.randn(300, 1, generator=g)
        >>> x = theta + torch.randn(300, 1, generator=g)
        >>> post = lambda xb, s=1.0: Normal(xb / 2, s * 0.5**0.5)
        >>> sample = lambda n, xb: post(xb).sample((n,))
        >>> log_prob = lambda t, xb: post(xb).log_prob(t).sum(-1)
        >>> hpd_coverage(theta, x, sample, log_prob).pvalue > 0.001
        True

    References:
        Talts et al. 2018, arXiv 1804.06788; Lueckmann et al. 2021, arXiv 2101.04653.
    """
    _check_pairs(theta, x)
    parts = []
    with torch.no_grad():
        for start in range(0, len(theta), batch_size):
            xb, tb = x[start : start + batch_size], theta[start : start + batch_size]
            s = _posterior_samples(sample, xb, num_samples, len(xb))  # (L, B, D)
            lp_samples = log_prob(s, xb)  # (L, B)
            lp_true = log_prob(tb.to(s)[None], xb)  # (1, B)
            parts.append((lp_samples > lp_true).sum(0))
    closer = torch.cat(parts)
    return _coverage(closer, num_samples, levels, "hpd", torch.Generator().manual_seed(seed))


def tarp_coverage(
    theta: Tensor,
    x: Tensor,
    sample: SampleFn | Tensor,
    num_samples: int = 100,
    levels: int = 51,
    batch_size: int = 256,
    seed: int = 0,
) -> CoverageResult:
    """Expected coverage by TARP: balls around random reference points, no density needed.

    Parameters are z-scored with the mean and standard deviation of the true ``theta``; each
    pair draws a reference point uniformly in the box spanned by the z-scored parameters; the
    fraction of posterior samples nearer the reference than the true parameter is uniform when
    the posterior is calibrated (Lemos et al. 2023 show the converse for random references).

    Args:
        theta: ``(N, D)`` parameters drawn from the prior.
        x: ``(N, *X)`` their simulations.
        sample: ``sample(n, x)``: ``(B, *X)`` -> ``(n, B, D)``, or samples ``(L, N, D)``.
        num_samples: ``L`` posterior samples per pair.
        levels: Number of credibility levels in ``[0, 1]``.
        batch_size: Observations per call of ``sample``.
        seed: Seeds the reference points and the randomisation of ties.

    Returns:
        The coverage curve and its Kolmogorov-Smirnov statistic and p-value.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(2)
        >>> theta = torch.randn(300, 2, generator=g)
        >>> x = theta + torch.randn(300, 2, generator=g)
        >>> wide = lambda n, xb: xb / 2 + 2.0 * torch.randn(n, *xb.shape, generator=g) / 2**0.5
        >>> tarp_coverage(theta, x, wide).pvalue < 1e-6
        True

    References:
        Lemos et al. 2023, arXiv 2302.03026.
    """
    _check_pairs(theta, x)
    samples = _posterior_samples(sample, x, num_samples, batch_size)  # (L, N, D)
    theta = theta.to(samples)
    mean, std = theta.mean(0), theta.std(0).clamp_min(1e-12)
    z_true, z_samples = (theta - mean) / std, (samples - mean) / std
    # a stream of its own: a reference point drawn from the stream that drew theta (the same
    # seed) would be correlated with theta and break the test
    g = torch.Generator().manual_seed(104_729 + 7_919 * seed)
    lo, hi = z_true.min(0).values, z_true.max(0).values
    u = torch.rand(theta.shape, generator=g, dtype=torch.float64).to(theta)
    reference = lo + (hi - lo) * u  # (N, D)
    d_true = torch.linalg.vector_norm(z_true - reference, dim=-1)  # (N,)
    d_samples = torch.linalg.vector_norm(z_samples - reference[None], dim=-1)  # (L, N)
    closer = (d_samples < d_true[None]).sum(0)
    return _coverage(closer, samples.shape[0], levels, "tarp", g)


@dataclass
class PredictiveCheck:
    """The outcome of :func:`posterior_predictive_check`.

    Attributes:
        x_o: ``(X,)`` the observation (flattened).
        predictive: ``(n, X)`` simulations from posterior samples (flattened).
        quantiles: ``(X,)`` per coordinate, the fraction of predictive draws below ``x_o``
            (near 0 or 1: ``x_o`` lies in a tail).
        distance: The Mahalanobis distance of ``x_o`` to the predictive draws' mean (their
            covariance, shrunk by ``1e-9`` times its trace).
        distance_quantile: The fraction of predictive draws whose own distance is below
            ``distance`` (near 1: ``x_o`` is far out).
    """

    x_o: Tensor
    predictive: Tensor
    quantiles: Tensor
    distance: float
    distance_quantile: float


def posterior_predictive_check(
    x_o: Tensor,
    posterior_samples: Tensor,
    simulator: Callable[[Tensor], Tensor],
) -> PredictiveCheck:
    """Simulate from posterior samples at ``x_o`` and locate ``x_o`` among the simulations.

    Args:
        x_o: ``(*X)`` the observation.
        posterior_samples: ``(n, D)`` samples of the posterior at ``x_o``.
        simulator: Batched ``(n, D) -> (n, *X)``.

    Returns:
        The predictive draws and where ``x_o`` lies among them.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x_o = torch.tensor([1.0, -1.0])
        >>> post = x_o / 2 + torch.randn(2000, 2, generator=g) / 2**0.5  # exact, prior N(0, I)
        >>> check = posterior_predictive_check(x_o, post, lambda t: t + torch.randn(t.shape, generator=g))
        >>> 0.02 < check.distance_quantile < 0.98
        True
    """
    if posterior_samples.dim() != 2:
        raise ValueError(
            f"expected posterior samples of shape (n, D), got {tuple(posterior_samples.shape)}"
        )
    with torch.no_grad():
        predictive = simulator(posterior_samples)
    n = posterior_samples.shape[0]
    if predictive.shape[0] != n or predictive[0].shape != x_o.shape:
        raise ValueError(
            f"expected the simulator to return ({n}, {', '.join(map(str, x_o.shape))}), got "
            f"{tuple(predictive.shape)}"
        )
    pred = predictive.reshape(n, -1).double()
    obs = x_o.reshape(-1).to(pred)
    finite = torch.isfinite(pred).all(1)
    pred = pred[finite]
    quantiles = (pred < obs).double().mean(0)
    mean = pred.mean(0)
    cov = torch.atleast_2d(torch.cov(pred.T))
    cov = cov + 1e-9 * cov.trace().clamp_min(1e-300) * torch.eye(len(cov), dtype=cov.dtype)
    chol = torch.linalg.cholesky(cov)

    def mahalanobis(v: Tensor) -> Tensor:
        solved = torch.linalg.solve_triangular(chol, (v - mean).T, upper=False)
        return torch.linalg.vector_norm(solved, dim=0)

    distance = float(mahalanobis(obs[None])[0])
    own = mahalanobis(pred)
    return PredictiveCheck(obs, pred, quantiles, distance, float((own < distance).double().mean()))


def plot_sbc(
    result: SBCResult,
    path: str | Path,
    names: list[str] | None = None,
    level: float = 0.99,
) -> Path:
    """Rank histograms per coordinate with the band of a uniform histogram.

    The grey band is the central ``level`` interval of each bin's count under uniform ranks
    (``Binomial(N, p_bin)``); about ``1 - level`` of the bins of a calibrated posterior fall
    outside it.

    Args:
        result: From :func:`sbc`.
        path: The PNG to write (atomically).
        names: One label per coordinate (default ``theta_1, ...``).
        level: The band's probability.

    Returns:
        ``path``.
    """
    observed, expected = result.counts()
    n, d = result.ranks.shape
    names = names or [f"θ{i + 1}" for i in range(d)]
    cols = min(d, 5)
    rows = math.ceil(d / cols)
    fig = new_figure(2.6 * cols, 2.3 * rows + 0.4)
    fig.suptitle(
        f"SBC ranks: {n} pairs, {result.num_samples} posterior samples each, "
        f"{result.bins} bins; band: {level:.0%} interval of a uniform histogram"
    )
    values = result.num_samples + 1
    for i in range(d):
        ax = fig.add_subplot(rows, cols, i + 1)
        width = values / result.bins
        left = torch.arange(result.bins) * width
        ax.bar(
            left.tolist(),
            observed[:, i].tolist(),
            width=width,
            align="edge",
            color="C0",
            alpha=0.45,
            edgecolor="C0",
        )
        for b in range(result.bins):  # the band on top of the bars, so both edges show
            lo, hi = binomial_interval(n, float(expected[b]) / n, level)
            span = [float(left[b]), float(left[b]) + width]
            ax.fill_between(span, lo, hi, color="0.5", alpha=0.25, lw=0)
            ax.plot(span, [lo, lo], color="0.35", lw=0.8)
            ax.plot(span, [hi, hi], color="0.35", lw=0.8)
        ax.axhline(float(expected.mean()), color="k", lw=0.8, ls="--")
        ax.set_title(f"{names[i]}  (χ² p = {float(result.pvalue[i]):.2g})", fontsize=9)
        ax.set_xlabel("rank")
        ax.set_ylabel("count")
    return write_png(fig, path)


def plot_coverage(results: dict[str, CoverageResult], path: str | Path) -> Path:
    """Expected coverage curves against the diagonal (calibrated).

    Args:
        results: Curves by label (e.g. ``{"NPE": ..., "narrow": ...}``).
        path: The PNG to write (atomically).

    Returns:
        ``path``.
    """
    fig = new_figure(4.8, 4.6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="k", ls="--", lw=1, label="calibrated")
    for label, r in results.items():
        ax.plot(
            r.levels.tolist(),
            r.coverage.tolist(),
            lw=1.8,
            label=f"{label} (KS p = {r.pvalue:.2g})",
        )
    methods = sorted({r.method for r in results.values()})
    ax.set_title(f"Expected coverage ({', '.join(m.upper() for m in methods)})")
    ax.set_xlabel("credibility level α")
    ax.set_ylabel("fraction of true parameters inside")
    ax.text(
        0.62,
        0.08,
        "below: over-confident\nabove: under-confident",
        fontsize=8,
        transform=ax.transAxes,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    return write_png(fig, path)


def plot_predictive_check(
    check: PredictiveCheck, path: str | Path, names: list[str] | None = None
) -> Path:
    """Histograms of the predictive draws per coordinate (up to 12) with ``x_o`` marked.

    Args:
        check: From :func:`posterior_predictive_check`.
        path: The PNG to write (atomically).
        names: One label per coordinate of the flattened observation.

    Returns:
        ``path``.
    """
    k = min(check.predictive.shape[1], 12)
    names = names or [f"x{i + 1}" for i in range(k)]
    cols = min(k, 4)
    rows = math.ceil(k / cols)
    fig = new_figure(2.6 * cols, 2.2 * rows + 0.4)
    fig.suptitle(
        f"Posterior predictive check: x_o's Mahalanobis distance {check.distance:.2f} "
        f"(quantile {check.distance_quantile:.2f})"
    )
    for i in range(k):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.hist(check.predictive[:, i].tolist(), bins=40, color="C0", alpha=0.6)
        ax.axvline(float(check.x_o[i]), color="C3", lw=1.5)
        ax.set_title(f"{names[i]}: quantile {float(check.quantiles[i]):.2f}", fontsize=9)
        ax.set_xlabel("value")
        ax.set_ylabel("count")
    return write_png(fig, path)
