"""Check an NPE posterior before trusting it: SBC ranks and expected coverage (docs figures).

Trains ``ff.sbi.NPE`` (defaults) on 2,000 simulations of the Gaussian linear task (10-D, exact
posterior ``N(x / 2, 0.05 I)``), then on 500 fresh prior/simulator pairs draws 99 posterior
samples each and writes

- ``docs/sbi_sbc.png``: rank histograms of the NPE posterior with the 99% band of uniform ranks;
- ``docs/sbi_coverage.png``: HPD expected coverage of the NPE posterior, of the exact posterior
  and of an over-confident one (the exact posterior with half its standard deviation).

Run: ``python examples/sbi_checks.py`` (about a minute on one free core).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributions import MultivariateNormal

import flowforge as ff
from flowforge.sbi.diagnostics import hpd_coverage, plot_coverage, plot_sbc, sbc
from flowforge.sbi.tasks import GaussianLinear

ROOT = Path(__file__).resolve().parents[1]


def exact(task: GaussianLinear, scale: float = 1.0):
    """``sample`` and ``log_prob`` of the exact posterior, its std times ``scale``."""
    g = torch.Generator().manual_seed(5)
    std = (task.variance / 2) ** 0.5 * scale

    def sample(n: int, x: torch.Tensor) -> torch.Tensor:
        return x / 2 + std * torch.randn(n, *x.shape, generator=g, dtype=x.dtype)

    def log_prob(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cov = std**2 * torch.eye(x.shape[-1], dtype=x.dtype)
        return MultivariateNormal(x / 2, cov).log_prob(theta)

    return sample, log_prob


def main() -> None:
    torch.set_num_threads(1)
    task = GaussianLinear()
    theta, x = task.sample_joint(2000, seed=0)
    posterior = ff.sbi.NPE(task.prior).fit(theta.float(), x.float(), seed=0)
    print("NPE:", posterior.info)
    theta_t, x_t = task.sample_joint(500, seed=1)
    theta_t, x_t = theta_t.float(), x_t.float()
    torch.manual_seed(0)  # posterior.sample draws from the global stream
    ranks = sbc(theta_t, x_t, posterior.sample, num_samples=99, bins=10)
    print("SBC chi-square p-values:", [round(float(p), 3) for p in ranks.pvalue])
    plot_sbc(ranks, ROOT / "docs" / "sbi_sbc.png")
    curves = {
        "NPE (2,000 simulations)": hpd_coverage(
            theta_t, x_t, posterior.sample, posterior.log_prob, num_samples=99
        ),
        "exact posterior": hpd_coverage(theta_t.double(), x_t.double(), *exact(task)),
        "over-confident (std x 0.5)": hpd_coverage(
            theta_t.double(), x_t.double(), *exact(task, 0.5)
        ),
    }
    for label, c in curves.items():
        print(f"{label}: KS {c.statistic:.3f}, p = {c.pvalue:.3g}")
    plot_coverage(curves, ROOT / "docs" / "sbi_coverage.png")


if __name__ == "__main__":
    main()
