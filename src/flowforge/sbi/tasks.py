"""Benchmark tasks of simulation-based inference, each with a reference posterior computed
without a neural network.

Three tasks of the sbibm benchmark (Lueckmann et al. 2021), defined as there:

- :class:`GaussianLinear`: ``theta ~ N(0, 0.1 I_10)``, ``x ~ N(theta, 0.1 I_10)``; the posterior is
  ``N(x / 2, 0.05 I)`` in closed form.
- :class:`TwoMoons`: ``theta ~ U(-1, 1)^2``; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
  ``p = (r cos a + 0.25, r sin a)``, ``x = p + (-|t1 + t2| / sqrt 2, (-t1 + t2) / sqrt 2)``. The
  likelihood is ``N(|u|; 0.1, 0.01^2) / (pi |u|)`` for ``u = x - shift(theta) - (0.25, 0)`` with
  ``u_1 > 0`` (polar change of variables), and the posterior is sampled exactly by inverting
  the simulator: draw ``p``, solve ``shift(theta) = x - p`` (two mirror solutions, one taken at
  random; the map has unit Jacobian), keep solutions inside the prior's box.
- :class:`SLCP`: ``theta ~ U(-3, 3)^5``; four i.i.d. draws of ``N(m, S)`` with
  ``m = (t1, t2)``, ``s1 = t3^2``, ``s2 = t4^2``, ``rho = tanh(t5)``,
  ``S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]]``, flattened to ``x`` of shape ``(8,)``. The
  posterior (four mirror modes: the signs of ``t3`` and ``t4``) is sampled by random-walk
  Metropolis-Hastings on the exact likelihood with many chains, a sign-flip move, a proposal
  covariance adapted during burn-in, and a split-R-hat check.

Every simulator is batched (``theta`` ``(N, D)`` -> ``x`` ``(N, X)``) and seeded through an
optional ``torch.Generator``. Observations are fixed: observation ``i`` draws ``theta_o`` from
the prior and ``x_o`` from the simulator with seeds derived from ``i``. Reference samples can be
cached as ``.npy`` files in a directory of the caller's choosing (never inside the package).

References:
    Lueckmann et al. 2021, "Benchmarking simulation-based inference", arXiv 2101.04653;
    Papamakarios et al. 2019, "Sequential neural likelihood" (SLCP), arXiv 1805.07226;
    Greenberg et al. 2019, "Automatic posterior transformation" (two moons), arXiv 1905.07488.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal, Uniform

__all__ = ["SLCP", "TASKS", "GaussianLinear", "Task", "TwoMoons", "get_task", "split_rhat"]


def _box(low: float, high: float, dim: int) -> Distribution:
    """``U(low, high)^dim`` as ``Independent(Uniform)`` (what ``flowforge.sbi`` and ``sbi`` read
    as a box prior)."""
    lo = torch.full((dim,), float(low), dtype=torch.float64)
    return Independent(Uniform(lo, torch.full_like(lo, high), validate_args=False), 1)


def split_rhat(chains: Tensor) -> Tensor:
    """Split-R-hat of each coordinate of MCMC chains.

    Args:
        chains: ``(C, T, D)``: ``C`` chains of ``T`` draws (``T >= 4``).

    Returns:
        ``(D,)`` potential scale reduction factors; values near 1 (below about 1.01) mean the
        chains agree.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> bool(split_rhat(torch.randn(8, 1000, 2, generator=g)).max() < 1.01)
        True

    References:
        Gelman et al. 2013, "Bayesian Data Analysis", 3rd ed., section 11.4.
    """
    t = chains.shape[1]
    half = t // 2
    parts = torch.cat([chains[:, :half], chains[:, half : 2 * half]], dim=0)  # (2C, T/2, D)
    n = parts.shape[1]
    means = parts.mean(1)  # (2C, D)
    within = parts.var(1, unbiased=True).mean(0)  # (D,)
    between = n * means.var(0, unbiased=True)  # (D,)
    var_plus = (n - 1) / n * within + between / n
    return torch.sqrt(var_plus / within)


class Task:
    """A benchmark task: prior, batched simulator, fixed observations, reference posterior.

    Subclasses set :attr:`name`, :attr:`dim_theta`, :attr:`dim_x`, :attr:`prior` and implement
    :meth:`simulator`, :meth:`log_likelihood` and :meth:`_reference` (the sampler). Tensors are
    float64.

    Attributes:
        name: The task's name in :data:`TASKS`.
        dim_theta: ``D``, the parameter dimension.
        dim_x: ``X``, the observation dimension.
        prior: A ``torch.distributions.Distribution`` with event shape ``(D,)``.
        num_observations: How many fixed observations :meth:`observation` offers.
    """

    name: str = ""
    dim_theta: int = 0
    dim_x: int = 0
    num_observations: int = 10  # sbibm's count
    prior: Distribution

    def __call__(self, theta: Tensor) -> Tensor:
        """The simulator on the global torch random stream (for ``ff.sbi.simulate``)."""
        return self.simulator(theta)

    def simulator(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Simulate one observation per parameter row.

        Args:
            theta: ``(N, D)`` parameters.
            generator: Random stream (``None``: torch's global one).

        Returns:
            ``(N, X)`` observations.
        """
        raise NotImplementedError

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """``log p(x | theta)``: ``theta`` ``(N, D)`` and one observation ``x`` ``(X,)`` or one
        per row ``(N, X)`` -> ``(N,)``."""
        raise NotImplementedError

    def _reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def _check_theta(self, theta: Tensor) -> Tensor:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        if theta.dim() != 2 or theta.shape[1] != self.dim_theta:
            raise ValueError(
                f"{self.name}: expected theta of shape (N, {self.dim_theta}), got "
                f"{tuple(theta.shape)}"
            )
        return theta

    def _check_x(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.shape != (self.dim_x,):
            raise ValueError(
                f"{self.name}: expected one observation of shape ({self.dim_x},), got "
                f"{tuple(x.shape)}"
            )
        return x

    def _check_xs(self, x: Tensor) -> Tensor:
        """One observation ``(X,)`` or one per parameter row ``(N, X)``."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() not in (1, 2) or x.shape[-1] != self.dim_x:
            raise ValueError(
                f"{self.name}: expected x of shape ({self.dim_x},) or (N, {self.dim_x}), got "
                f"{tuple(x.shape)}"
            )
        return x

    def sample_joint(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` pairs ``(theta, x)`` from the prior and the simulator, seeded.

        Returns:
            ``(n, D)`` parameters and ``(n, X)`` observations.
        """
        g = torch.Generator().manual_seed(int(seed))
        theta = self._sample_prior(n, g)
        return theta, self.simulator(theta, generator=g)

    def _sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def observation(self, i: int) -> tuple[Tensor, Tensor]:
        """The fixed observation number ``i`` (0-based) and the parameter that made it.

        Returns:
            ``theta_o`` ``(D,)`` and ``x_o`` ``(X,)``.
        """
        if not 0 <= i < self.num_observations:
            raise ValueError(
                f"{self.name}: expected an observation index in [0, {self.num_observations}), "
                f"got {i}"
            )
        theta, x = self.sample_joint(1, seed=10_000 + 17 * i)
        return theta[0], x[0]

    def reference_posterior_samples(
        self,
        x_o: Tensor,
        n: int,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Tensor:
        """``n`` samples of the reference posterior ``p(theta | x_o)``.

        Args:
            x_o: ``(X,)`` one observation.
            n: Number of samples.
            seed: Seeds the sampler.
            cache_dir: A directory to keep the samples in as ``.npy`` (keyed by task, ``x_o``,
                ``n`` and ``seed``) and read them back from; ``None``: always compute.

        Returns:
            ``(n, D)`` float64 samples.
        """
        x_o = self._check_x(x_o)
        if n < 1:
            raise ValueError(f"{self.name}: expected n >= 1 reference samples, got {n}")
        path = None
        if cache_dir is not None:
            key = hashlib.sha256(x_o.numpy().tobytes()).hexdigest()[:16]
            path = Path(cache_dir) / f"{self.name}-{key}-n{n}-seed{seed}.npy"
            if path.exists():
                return torch.from_numpy(np.load(path, allow_pickle=False))
        samples = self._reference(x_o, n, torch.Generator().manual_seed(int(seed)))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
            with os.fdopen(fd, "wb") as f:
                np.save(f, samples.numpy(), allow_pickle=False)
            os.replace(tmp, path)
        return samples


class GaussianLinear(Task):
    """``theta ~ N(0, 0.1 I)``, ``x ~ N(theta, 0.1 I)`` in 10-D; posterior ``N(x / 2, 0.05 I)``.

    Example:
        >>> task = GaussianLinear()
        >>> theta_o, x_o = task.observation(0)
        >>> task.reference_posterior_samples(x_o, 4).shape
        torch.Size([4, 10])
    """

    name = "gaussian_linear"

    def __init__(self, dim: int = 10, variance: float = 0.1) -> None:
        self.dim_theta = self.dim_x = dim
        self.variance = variance
        self.prior = MultivariateNormal(
            torch.zeros(dim, dtype=torch.float64),
            variance * torch.eye(dim, dtype=torch.float64),
        )

    def _sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.dim_theta, generator=generator, dtype=torch.float64)
        return math.sqrt(self.variance) * z

    def simulator(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        theta = self._check_theta(theta)
        noise = torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        return theta + math.sqrt(self.variance) * noise

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        theta, x = self._check_theta(theta), self._check_xs(x)
        sq = ((x - theta) ** 2).sum(-1)
        return -0.5 * sq / self.variance - 0.5 * self.dim_x * math.log(2 * math.pi * self.variance)

    def posterior(self, x_o: Tensor) -> MultivariateNormal:
        """The exact posterior ``N(x_o / 2, variance / 2 I)`` (equal prior and noise variances)."""
        x_o = self._check_x(x_o)
        eye = torch.eye(self.dim_theta, dtype=torch.float64)
        return MultivariateNormal(x_o / 2, self.variance / 2 * eye)

    def _reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        z = torch.randn(n, self.dim_theta, generator=generator, dtype=torch.float64)
        return x_o / 2 + math.sqrt(self.variance / 2) * z


class TwoMoons(Task):
    """The two-moons task (2-D parameters, 2-D observations, crescent-shaped bimodal posterior).

    Example:
        >>> task = TwoMoons()
        >>> theta_o, x_o = task.observation(0)
        >>> s = task.reference_posterior_samples(x_o, 1000)
        >>> s.shape, bool((s.abs() <= 1).all())
        (torch.Size([1000, 2]), True)
    """

    name = "two_moons"
    dim_theta = 2
    dim_x = 2
    r_mean, r_std, offset = 0.1, 0.01, 0.25

    def __init__(self) -> None:
        self.prior = _box(-1.0, 1.0, 2)

    def _sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        return 2 * torch.rand(n, 2, generator=generator, dtype=torch.float64) - 1

    @staticmethod
    def shift(theta: Tensor) -> Tensor:
        """``(-|t1 + t2| / sqrt 2, (-t1 + t2) / sqrt 2)``: ``(N, 2) -> (N, 2)``."""
        s = math.sqrt(2.0)
        return torch.stack(
            [-(theta[:, 0] + theta[:, 1]).abs() / s, (theta[:, 1] - theta[:, 0]) / s], -1
        )

    def _moon(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` draws of ``p = (r cos a + 0.25, r sin a)``: ``(n, 2)``."""
        a = math.pi * (torch.rand(n, generator=generator, dtype=torch.float64) - 0.5)
        r = self.r_mean + self.r_std * torch.randn(n, generator=generator, dtype=torch.float64)
        return torch.stack([r * torch.cos(a) + self.offset, r * torch.sin(a)], -1)

    def simulator(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        theta = self._check_theta(theta)
        return self._moon(len(theta), generator) + self.shift(theta)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        """Exact: ``u = x - shift(theta) - (0.25, 0)`` in polar coordinates ``(r, a)`` has
        density ``N(r; 0.1, 0.01^2) / pi`` on ``a in (-pi/2, pi/2)``, and ``dp = r dr da``."""
        theta, x = self._check_theta(theta), self._check_xs(x)
        u = x - self.shift(theta) - x.new_tensor([self.offset, 0.0])
        r = torch.linalg.vector_norm(u, dim=-1)
        log_normal = (
            -0.5 * ((r - self.r_mean) / self.r_std) ** 2
            - math.log(self.r_std)
            - 0.5 * math.log(2 * math.pi)
        )
        out = log_normal - math.log(math.pi) - torch.log(r.clamp_min(1e-300))
        return torch.where(u[:, 0] > 0, out, out.new_tensor(-math.inf))

    def _reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        s = math.sqrt(2.0)
        kept: list[Tensor] = []
        have = 0
        while have < n:
            m = max(4 * (n - have), 1000)
            z = x_o - self._moon(m, generator)  # z = shift(theta): z1 = -|t1 + t2| / sqrt 2
            sign = torch.where(torch.rand(m, generator=generator) < 0.5, -1.0, 1.0).double()
            total = sign * (-s * z[:, 0])  # t1 + t2, either branch
            diff = s * z[:, 1]  # t2 - t1
            theta = torch.stack([(total - diff) / 2, (total + diff) / 2], -1)
            ok = (z[:, 0] <= 0) & (theta.abs() <= 1).all(-1)
            kept.append(theta[ok])
            have += int(ok.sum())
        return torch.cat(kept)[:n]


class SLCP(Task):
    """Simple likelihood, complex posterior: 5 parameters, 4 i.i.d. 2-D Gaussian draws.

    Args:
        chains: Metropolis-Hastings chains of the reference sampler.
        burn_in: Steps of each chain discarded (the proposal adapts during the first half).
        thin: Keep every ``thin``-th state after burn-in.

    Example:
        >>> task = SLCP()
        >>> theta_o, x_o = task.observation(0)
        >>> task.simulator(theta_o[None]).shape
        torch.Size([1, 8])
    """

    name = "slcp"
    dim_theta = 5
    dim_x = 8
    num_draws = 4

    def __init__(self, chains: int = 100, burn_in: int = 5000, thin: int = 50) -> None:
        self.prior = _box(-3.0, 3.0, 5)
        self.chains, self.burn_in, self.thin = chains, burn_in, thin
        self.last_rhat: Tensor | None = None

    def _sample_prior(self, n: int, generator: torch.Generator) -> Tensor:
        return 6 * torch.rand(n, 5, generator=generator, dtype=torch.float64) - 3

    @staticmethod
    def _moments(theta: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean ``(N, 2)``, scales ``s1, s2`` ``(N,)`` and correlation ``rho`` ``(N,)``."""
        return theta[:, :2], theta[:, 2] ** 2, theta[:, 3] ** 2, torch.tanh(theta[:, 4])

    def simulator(self, theta: Tensor, generator: torch.Generator | None = None) -> Tensor:
        theta = self._check_theta(theta)
        m, s1, s2, rho = self._moments(theta)
        z = torch.randn(len(theta), self.num_draws, 2, generator=generator, dtype=torch.float64)
        # Cholesky factor of S = [[s1^2, rho s1 s2], [rho s1 s2, s2^2]]
        y1 = s1[:, None] * z[..., 0]
        y2 = s2[:, None] * (rho[:, None] * z[..., 0] + torch.sqrt(1 - rho**2)[:, None] * z[..., 1])
        draws = m[:, None, :] + torch.stack([y1, y2], -1)  # (N, 4, 2)
        return draws.reshape(len(theta), 2 * self.num_draws)

    def log_likelihood(self, theta: Tensor, x: Tensor) -> Tensor:
        theta, x = self._check_theta(theta), self._check_xs(x)
        m, s1, s2, rho = self._moments(theta)
        d = x.reshape(-1, self.num_draws, 2) - m[:, None, :]  # (N, 4, 2)
        a, b = d[..., 0] / s1[:, None], d[..., 1] / s2[:, None]
        one_minus = (1 - rho**2)[:, None]
        quad = (a**2 - 2 * rho[:, None] * a * b + b**2) / one_minus
        log_det = 2 * torch.log(s1) + 2 * torch.log(s2) + torch.log1p(-(rho**2))
        per_draw = -0.5 * quad - math.log(2 * math.pi) - 0.5 * log_det[:, None]
        out = per_draw.sum(-1)
        return torch.nan_to_num(out, nan=-math.inf)

    def _log_target(self, theta: Tensor, x_o: Tensor) -> Tensor:
        inside = (theta.abs() < 3).all(-1)
        lp = self.log_likelihood(theta.clamp(-3, 3), x_o)
        return torch.where(inside, lp, lp.new_tensor(-math.inf))

    def _reference(self, x_o: Tensor, n: int, generator: torch.Generator) -> Tensor:
        c = self.chains
        draws = x_o.reshape(self.num_draws, 2)
        # starts: importance resampling of prior draws by their likelihood
        pool = self._sample_prior(20_000, generator)
        weights = torch.softmax(self._log_target(pool, x_o), 0)
        state = pool[torch.multinomial(weights, c, replacement=True, generator=generator)]
        state[:, 2:4] = state[:, 2:4].abs()  # the folded chain: t3, t4 >= 0
        logp = self._log_target(state, x_o)
        steps = self.burn_in + self.thin * math.ceil(n / c)
        scale = 2.38**2 / 3
        cov = 0.01 * torch.eye(3, dtype=torch.float64)
        history: list[Tensor] = []
        kept: list[Tensor] = []
        for t in range(steps):
            # 1. the mean m = (t1, t2): an independence proposal from its conditional without
            # the box, N(mean of the draws, S / 4), accepted when it lies in the box (exact
            # Gibbs for the box-truncated conditional).
            _, s1, s2, rho = self._moments(state)
            z = torch.randn(c, 2, generator=generator, dtype=torch.float64) / 2
            m1 = draws[:, 0].mean() + s1 * z[:, 0]
            m2 = draws[:, 1].mean() + s2 * (rho * z[:, 0] + torch.sqrt(1 - rho**2) * z[:, 1])
            proposal = torch.cat([torch.stack([m1, m2], -1), state[:, 2:]], -1)
            ok = (proposal[:, :2].abs() < 3).all(-1)
            state = torch.where(ok[:, None], proposal, state)
            logp = self._log_target(state, x_o)
            # 2. (t3, t4, t5): random-walk Metropolis, proposal covariance adapted during the
            # first half of burn-in, reflected at t3 = 0 and t4 = 0 (a symmetric proposal on the
            # folded space; the likelihood and the prior are symmetric under both sign flips).
            if t < self.burn_in // 2 and t % 100 == 99 and history:
                past = torch.cat(history[-50:])
                cov = torch.cov(past.T) + 1e-10 * torch.eye(3, dtype=torch.float64)
            chol = torch.linalg.cholesky(scale * cov)
            step = torch.randn(c, 3, generator=generator, dtype=torch.float64) @ chol.T
            proposal = state.clone()
            proposal[:, 2:] = state[:, 2:] + step
            proposal[:, 2:4] = proposal[:, 2:4].abs()
            logq = self._log_target(proposal, x_o)
            accept = torch.rand(c, generator=generator, dtype=torch.float64).log() < logq - logp
            state = torch.where(accept[:, None], proposal, state)
            logp = torch.where(accept, logq, logp)
            if t < self.burn_in:
                history.append(state[:, 2:].clone())
            elif (t - self.burn_in) % self.thin == 0:
                kept.append(state.clone())
        chains = torch.stack(kept, 1)  # (C, T, 5), folded
        self.last_rhat = split_rhat(chains)
        out = chains.reshape(-1, 5)
        out = out[torch.randperm(len(out), generator=generator)[:n]]
        flips = torch.where(torch.rand(n, 2, generator=generator) < 0.5, -1.0, 1.0).double()
        out[:, 2:4] = out[:, 2:4] * flips
        return out


#: The tasks by name.
TASKS: dict[str, type[Task]] = {
    "gaussian_linear": GaussianLinear,
    "two_moons": TwoMoons,
    "slcp": SLCP,
}


def get_task(name: str) -> Task:
    """A task by name (one of :data:`TASKS`).

    Example:
        >>> get_task("two_moons").dim_theta
        2
    """
    if name not in TASKS:
        raise ValueError(f"expected a task among {', '.join(TASKS)}, got {name!r}")
    return TASKS[name]()
