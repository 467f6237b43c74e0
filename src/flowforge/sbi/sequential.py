"""Sequential rounds for one observation: truncated sequential neural posterior estimation
(TSNPE).

Round 1 simulates from the prior and fits the posterior. Each later round draws parameters from
the prior *truncated* to the highest-posterior-density region of the current posterior at
``x_o`` (the region holding ``1 - epsilon`` of its mass, by rejection from the prior: a prior draw
is kept when ``log q`` is above the ``epsilon``-quantile of ``log q`` at the posterior's own
samples; for a box prior ``q`` is the density of the unconstrained parameters, whose level sets
have no spikes at the box's faces), simulates them and refits on every round's pairs with the plain NPE
loss. Inside the region all proposals are the prior up to a constant, so the posterior there is
the true one (no importance weights, no atomic loss); more simulations land where the
posterior at ``x_o`` lives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from flowforge.sbi.estimators import NPE
from flowforge.sbi.posterior import Posterior

__all__ = ["Truncated", "sequential", "truncated_prior_sample"]


class Truncated(NamedTuple):
    """Draws from a truncated prior: ``theta`` ``(n, D)``, the share of prior draws accepted
    (the prior mass of the region) and the log-density threshold that defines the region."""

    theta: Tensor
    acceptance: float
    threshold: float


def truncated_prior_sample(
    posterior: Posterior,
    x_o: Tensor,
    n: int,
    epsilon: float = 1e-4,
    hpd_samples: int = 10_000,
    max_draws: int = 10_000_000,
) -> Truncated:
    """``n`` prior draws inside the ``1 - epsilon`` HPD region of ``posterior`` at ``x_o``:
    where :meth:`~flowforge.sbi.Posterior.log_prob_unconstrained` is at least its
    ``epsilon``-quantile over ``hpd_samples`` posterior samples.

    Raises:
        RuntimeError: the posterior has no prior, or ``max_draws`` prior draws gave fewer
            than ``n`` inside the region.
    """
    prior = posterior.prior
    if prior is None:
        raise RuntimeError("the posterior has no prior to truncate; load it with prior=")
    with torch.no_grad():
        lp = posterior.log_prob_unconstrained(posterior.sample(hpd_samples, x_o), x_o)
        threshold = float(torch.quantile(lp[torch.isfinite(lp)].double(), epsilon))
        kept: list[Tensor] = []
        total, found, batch = 0, 0, max(4 * n, 1000)
        while found < n:
            if total >= max_draws:
                raise RuntimeError(
                    f"truncated prior: {found} of {n} draws inside the HPD region after "
                    f"{total} prior draws; the posterior may be too narrow for rejection"
                )
            theta = prior.sample((batch,))
            inside = theta[posterior.log_prob_unconstrained(theta, x_o) >= threshold]
            kept.append(inside)
            total, found = total + batch, found + len(inside)
    return Truncated(torch.cat(kept)[:n], found / total, threshold)


def sequential(
    estimator: NPE,
    simulator: Callable[[Tensor], Tensor],
    x_o: Tensor | Any,
    rounds: int = 3,
    per_round: int = 1000,
    *,
    seed: int = 0,
    epsilon: float = 1e-4,
    warm_start: bool = False,
    **fit_options: Any,
) -> Posterior:
    """Truncated sequential NPE: ``rounds`` rounds of ``per_round`` simulations for one
    observation ``x_o``, each later round from the prior truncated to the current posterior's
    HPD region; every round refits ``estimator`` on all pairs so far.

    Args:
        estimator: an :class:`~flowforge.sbi.NPE` (or :class:`~flowforge.sbi.FMPE`).
        simulator: ``(n, D) -> (n, *X)``.
        x_o: the observation ``(*X)``.
        rounds: the number of rounds (1: plain NPE).
        per_round: simulations per round.
        seed: seeds the draws, the simulator's noise and the fits.
        epsilon: the posterior mass left outside the truncation region.
        warm_start: each round continues training the previous round's posterior (its
            z-scoring from round 1 kept) instead of fitting a fresh one. Off by default: on a
            2-D Gaussian (box [-10, 10]^2, noise 0.1, 3 x 300 simulations) fresh fits reached
            KL 0.21 and 0.05 nats where warm starts stayed at 0.69 and 0.70.
        **fit_options: passed to ``estimator.fit`` (``max_steps``, ``lr``, ...).

    Returns:
        The last round's posterior; ``info["rounds"]`` lists each round's simulations and
        acceptance (the prior mass of the region it drew from).

    References:
        Deistler, Goncalves, Macke (2022). Truncated proposals for scalable and hassle-free
        simulation-based inference. arXiv:2210.04815.

    Example:
        >>> import torch, flowforge as ff
        >>> prior = ff.sbi.BoxUniform([-5.0], [5.0])
        >>> sim = lambda t: t + 0.1 * torch.randn_like(t)
        >>> est = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (16,)})
        >>> post = ff.sbi.sequential(est, sim, torch.tensor([1.0]), rounds=2, per_round=100,
        ...                          max_steps=20)
        >>> [r["simulations"] for r in post.info["rounds"]]
        [100, 100]
    """
    if rounds < 1 or per_round < 2:
        raise ValueError(f"expected rounds >= 1 and per_round >= 2, got {rounds}, {per_round}")
    x_o = torch.as_tensor(x_o, dtype=torch.get_default_dtype())
    thetas: list[Tensor] = []
    xs: list[Tensor] = []
    log: list[dict[str, float]] = []
    posterior: Posterior | None = None
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for r in range(rounds):
            if posterior is None:
                theta, acceptance = estimator.prior.sample((per_round,)), 1.0
            else:
                theta, acceptance, _ = truncated_prior_sample(posterior, x_o, per_round, epsilon)
            thetas.append(theta)
            xs.append(torch.as_tensor(simulator(theta)))
            posterior = estimator.fit(
                torch.cat(thetas),
                torch.cat(xs),
                seed=seed + r,
                posterior=posterior if warm_start else None,
                **fit_options,
            )
            log.append({"round": r + 1, "simulations": per_round, "acceptance": acceptance})
    assert posterior is not None
    posterior.info["rounds"] = log
    return posterior
