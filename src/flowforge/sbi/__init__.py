"""Simulation-based inference: amortised posteriors ``q(theta | x)`` from a simulator.

- priors (:mod:`.prior`): any ``torch.distributions.Distribution`` over ``(D,)``, and
  :class:`BoxUniform`; a box prior is learned in its logit space, any other bounded support
  (:func:`support_bounds`: ``Gamma``, ``Beta``, ...) through a logit or log per coordinate (no
  sample ever leaves it);
- :func:`simulate`: run a batched simulator ``(n, D) -> (n, *X)`` on prior draws
  (:func:`two_moons` is the built-in demo);
- :class:`NPE` (neural posterior estimation, any conditional preset, NSF by default) and
  :class:`FMPE` (flow-matching posterior estimation, a continuous flow), trained on the one
  engine of :mod:`flowforge.fit` with validation early stopping; z-scoring of ``theta`` and
  ``x`` (:mod:`.zscore`); embedding networks (:mod:`flowforge.nn.embedding`) trained jointly;
- :class:`Posterior`: ``sample(n, x_o)``, ``log_prob(theta, x_o)``, ``map(x_o)``, batched
  over observations; ``save(run_dir)`` and :func:`load` (also :func:`flowforge.load`);
- :func:`sequential`: truncated sequential NPE for one observation;
- :func:`read_simulations`: pre-simulated ``(theta, x)`` tables (CSV / NPY / NPZ);
- checks of a posterior (:mod:`.diagnostics`): simulation-based calibration (:func:`sbc`),
  expected coverage (:func:`hpd_coverage`, :func:`tarp_coverage`), posterior predictive
  checks; benchmark tasks with reference posteriors (:mod:`.tasks`, :func:`get_task`).

Example:
    >>> import torch, flowforge as ff
    >>> prior = ff.sbi.BoxUniform([-2.0, -2.0], [2.0, 2.0])
    >>> theta, x = ff.sbi.simulate(lambda t: t + 0.3 * torch.randn_like(t), prior, 1000)
    >>> npe = ff.sbi.NPE(prior, flow_options={"transforms": 2, "hidden": (32, 32)})
    >>> posterior = npe.fit(theta, x, max_steps=300, lr=5e-3)
    >>> samples = posterior.sample(1000, torch.tensor([0.5, -0.5]))
    >>> samples.shape, bool((samples.mean(0) - torch.tensor([0.5, -0.5])).abs().max() < 0.15)
    (torch.Size([1000, 2]), True)
"""

from flowforge.sbi.diagnostics import hpd_coverage, posterior_predictive_check, sbc, tarp_coverage
from flowforge.sbi.estimators import FMPE, NPE, check_pairs
from flowforge.sbi.posterior import Posterior, build_posterior
from flowforge.sbi.prior import BoxUniform, box_bounds, support_bounds
from flowforge.sbi.run import load
from flowforge.sbi.sequential import Truncated, sequential, truncated_prior_sample
from flowforge.sbi.simulators import SIMULATORS, simulate, two_moons
from flowforge.sbi.tables import Simulations, read_simulations
from flowforge.sbi.tasks import get_task
from flowforge.sbi.zscore import ZSCORE_MODES

__all__ = [
    "FMPE",
    "NPE",
    "SIMULATORS",
    "ZSCORE_MODES",
    "BoxUniform",
    "Posterior",
    "Simulations",
    "Truncated",
    "box_bounds",
    "build_posterior",
    "check_pairs",
    "get_task",
    "hpd_coverage",
    "load",
    "posterior_predictive_check",
    "read_simulations",
    "sbc",
    "sequential",
    "simulate",
    "support_bounds",
    "tarp_coverage",
    "truncated_prior_sample",
    "two_moons",
]
