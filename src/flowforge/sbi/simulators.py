"""Running a simulator on prior draws (:func:`simulate`) and the built-in demo simulator
(:func:`two_moons`, what ``flowforge sbi`` runs without ``--data``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from flowforge.sbi.prior import BoxUniform, check_prior

__all__ = ["SIMULATORS", "Simulator", "simulate", "two_moons"]

#: A batched simulator: parameters ``(n, D)`` -> observations ``(n, *X)``.
Simulator = Callable[[Tensor], Tensor]


def simulate(
    simulator: Simulator,
    prior: Distribution,
    n: int,
    seed: int | None = 0,
    batch: int = 10_000,
) -> tuple[Tensor, Tensor]:
    """Draw ``theta ~ prior`` and run the simulator on them, ``batch`` rows per call.

    Args:
        simulator: ``(m, D) -> (m, *X)``.
        prior: the prior over ``(D,)``.
        n: the number of simulations.
        seed: seeds torch's generator for the draws and the simulator's noise (restored after);
            ``None``: the current state.
        batch: the most rows per simulator call.

    Returns:
        ``(theta, x)``: ``(n, D)`` and ``(n, *X)``.

    Raises:
        ValueError: a simulator output that is not ``(m, *X)`` for ``m`` rows.

    Example:
        >>> prior = BoxUniform([0.0, 0.0], [1.0, 1.0])
        >>> theta, x = simulate(lambda t: t.sum(-1, keepdim=True), prior, 7)
        >>> theta.shape, x.shape
        (torch.Size([7, 2]), torch.Size([7, 1]))
    """
    d = check_prior(prior)
    if n < 1:
        raise ValueError(f"expected n >= 1 simulations, got {n}")
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        thetas, xs = [], []
        for i in range(0, n, batch):
            t = prior.sample((min(batch, n - i),))
            out = torch.as_tensor(simulator(t))
            if out.dim() < 2 or out.shape[0] != t.shape[0]:
                raise ValueError(
                    f"expected the simulator to return (m, *X) for theta of shape "
                    f"{tuple(t.shape)}, got {tuple(out.shape)}"
                )
            thetas.append(t.reshape(-1, d))
            xs.append(out)
    return torch.cat(thetas), torch.cat(xs)


def two_moons(theta: Tensor) -> Tensor:
    """The two-moons simulator: ``(n, 2) -> (n, 2)``, a crescent whose position depends on
    ``|theta_1 + theta_2|`` and ``theta_2 - theta_1`` (a bimodal, crescent-shaped posterior).

    ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
    ``x = (r cos a + 0.25 - |t1 + t2| / sqrt 2, r sin a + (t2 - t1) / sqrt 2)``; prior
    ``U(-1, 1)^2``.

    References:
        Greenberg, Nonnenmacher, Macke (2019). Automatic Posterior Transformation for
        Likelihood-Free Inference. arXiv:1905.07488.

    Example:
        >>> two_moons(torch.zeros(5, 2)).shape
        torch.Size([5, 2])
    """
    n = theta.shape[0]
    a = (torch.rand(n, dtype=theta.dtype, device=theta.device) - 0.5) * math.pi
    r = 0.1 + 0.01 * torch.randn(n, dtype=theta.dtype, device=theta.device)
    px, py = r * torch.cos(a) + 0.25, r * torch.sin(a)
    s = math.sqrt(2.0)
    return torch.stack(
        [px - (theta[:, 0] + theta[:, 1]).abs() / s, py + (theta[:, 1] - theta[:, 0]) / s], -1
    )


def _two_moons_task() -> dict[str, Any]:
    return {
        "simulator": two_moons,
        "prior": BoxUniform([-1.0, -1.0], [1.0, 1.0]),
        "observation": [0.0, 0.0],
        "names": (["theta_1", "theta_2"], ["x_1", "x_2"]),
    }


#: Built-in demo simulators by name: ``{"simulator", "prior", "observation", "names"}``.
SIMULATORS: dict[str, Callable[[], dict[str, Any]]] = {"two_moons": _two_moons_task}
