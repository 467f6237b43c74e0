"""Variational inference: fit a flow ``q`` to a density known up to a constant.

- objectives (:mod:`.objectives`): :class:`ELBO` (reverse KL with reparameterised samples),
  :class:`PathDerivativeELBO` ("sticking the landing"), :class:`IWAE` (``K`` importance
  samples);
- :func:`fit_vi`, the optimisation loop, returning its history;
- diagnostics (:mod:`.diagnostics`): the ELBO with a standard error, the importance-sampling
  ``log Z``, the effective sample size, Pareto-k, and ``log Z`` on a grid for 2-D targets;
- targets (:mod:`.targets`): Rezende and Mohamed's energies, Neal's funnel, a banana, a
  logistic-regression posterior, or any callable.

:mod:`flowforge.vi.run` (``flowforge vi``: a fit written as a run directory that ``eval``,
``sample`` and :func:`flowforge.load` read) and :mod:`flowforge.vi.plots` are not imported
here. Importing it loads neither tqdm (only when ``fit_vi(progress=True)``) nor scikit-learn (only
for the logistic-regression data).

Example:
    >>> import torch, flowforge as ff
    >>> from flowforge import vi
    >>> target = vi.targets.Gaussian(torch.tensor([1.0, -1.0]), torch.eye(2))
    >>> flow = ff.flows.Planar(features=2, transforms=2)
    >>> history = vi.fit_vi(flow, target, steps=200, samples=64, lr=1e-2)
    >>> d = vi.diagnose(flow, target, samples=2000)
    >>> abs(d.log_z.value - target.log_normalizer) < 0.1
    True
"""

from flowforge.vi import targets
from flowforge.vi.diagnostics import (
    Diagnostics,
    Estimate,
    diagnose,
    effective_sample_size,
    elbo,
    generalized_pareto_fit,
    grid_log_normalizer,
    log_evidence,
    log_weights,
    pareto_k,
)
from flowforge.vi.fit import fit_vi
from flowforge.vi.objectives import (
    ELBO,
    IWAE,
    PathDerivativeELBO,
    VariationalObjective,
    VILoss,
    frozen_log_prob,
)

__all__ = [
    "ELBO",
    "IWAE",
    "Diagnostics",
    "Estimate",
    "PathDerivativeELBO",
    "VILoss",
    "VariationalObjective",
    "diagnose",
    "effective_sample_size",
    "elbo",
    "fit_vi",
    "frozen_log_prob",
    "generalized_pareto_fit",
    "grid_log_normalizer",
    "log_evidence",
    "log_weights",
    "pareto_k",
    "targets",
]
