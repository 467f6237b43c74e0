"""A full-covariance Gaussian fitted to the training rows: the baseline of every tabular NLL.

A flow that scores worse than this on the test rows has learned less than the mean and the
covariance of the data (typically: overfitted on a small table); ``flowforge eval`` reports the
baseline next to the test NLL and warns when the flow is worse.

This is the maximum-likelihood Gaussian (plus :data:`RIDGE` on the diagonal), on the dataset's
own training rows (standardised in float64, then cast). On nearly collinear columns it is nearly
singular, and a test row off the training rows' subspace can score thousands of nats: there the
number says little. A whitened table flow (:mod:`flowforge.transforms.whiten`) starts from a
shrunk Gaussian instead, which avoids that.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowforge.data.base import Dataset
from flowforge.eval.likelihood import NLLSummary, summarize

__all__ = ["RIDGE", "dataset_baseline", "gaussian_baseline"]

#: Added to the diagonal of the covariance (in standardised units), so that a constant or
#: collinear column gives a finite baseline instead of a singular matrix.
RIDGE = 1e-6


def gaussian_baseline(train: Tensor, test: Tensor, log_abs_det: float | Tensor = 0.0) -> NLLSummary:
    """Test NLL of the maximum-likelihood Gaussian (mean, full covariance) of ``train``.

    Args:
        train: ``(N, D)`` training rows (standardised or not; float64 arithmetic).
        test: ``(M, D)`` rows to score, in the same units.
        log_abs_det: the log-Jacobian of the map from the data's units to these rows (the
            standardisation's ``-sum(log std)``), so that the NLL is in the data's own units.

    Returns:
        The NLL summary (nats, 2 standard errors) over all ``M`` rows.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20000, 2, generator=g, dtype=torch.float64)
        >>> abs(gaussian_baseline(x, x).nll - math.log(2 * math.pi * math.e)) < 0.02  # D = 2
        True
    """
    a = train.double().reshape(train.shape[0], -1)
    b = test.double().reshape(test.shape[0], -1)
    if a.shape[0] < 2:
        raise ValueError(f"a Gaussian baseline needs at least 2 training rows, got {a.shape[0]}")
    d = a.shape[1]
    mean = a.mean(0)
    centred = a - mean
    cov = centred.T @ centred / a.shape[0] + RIDGE * torch.eye(d, dtype=a.dtype)
    chol = torch.linalg.cholesky(cov)
    sol = torch.linalg.solve_triangular(chol, (b - mean).T, upper=False)
    half_logdet = torch.log(torch.diagonal(chol)).sum()
    ll = -0.5 * (sol**2).sum(0) - half_logdet - 0.5 * d * math.log(2 * math.pi)
    return summarize(ll + float(log_abs_det))


def dataset_baseline(ds: Dataset, split: str = "test") -> NLLSummary | None:
    """The Gaussian baseline of a tabular dataset's split, in the data's own units.

    Returns:
        The NLL of a full-covariance Gaussian fitted to ``ds.train`` on ``split``; ``None``
        for datasets that are not tables with at least 2 training rows (toy sets, images).
    """
    rows = getattr(ds, split) if split in ("train", "val", "test") else None
    if ds.kind != "tabular" or ds.train is None or ds.train.shape[0] < 2 or rows is None:
        return None
    log_det = 0.0 if ds.standardizer is None else ds.standardizer.log_abs_det()
    return gaussian_baseline(ds.train, rows, log_det)
