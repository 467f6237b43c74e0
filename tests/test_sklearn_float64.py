"""The scikit-learn estimators standardise in float64, then cast (issue 11): a column near 1.7e9
that varies by +-100 keeps its distinct values; the initial weights are a validation candidate;
the whitened start is the Gaussian fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from flowforge.sklearn import FlowDensity
from flowforge.transforms.whiten import Whiten

TINY = {"transforms": 1, "hidden": (8,), "max_epochs": 4, "noise": 0.0, "random_state": 0}


def _rows(n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n)
    return np.c_[a * 50.0, 0.6 * a + 0.8 * rng.standard_normal(n)]


@pytest.mark.parametrize("whiten", [False, True])
def test_a_large_offset_changes_nothing(whiten: bool) -> None:
    """The density of ``x + 1.7e9`` is the density of ``x`` shifted: the same fit and scores
    (float32 rows of 1.7e9 are 128 apart: a fit that saw them would differ)."""
    x = _rows()
    shifted = x + np.array([1.7e9, 0.0])
    assert np.unique(shifted[:, 0].astype(np.float32)).size < 20  # what float32 would see
    a = FlowDensity("maf", whiten=whiten, **TINY).fit(x)
    b = FlowDensity("maf", whiten=whiten, **TINY).fit(shifted)
    sa, sb = a.score_samples(x), b.score_samples(shifted)
    assert np.unique(np.round(sb, 9)).size == x.shape[0]
    np.testing.assert_allclose(sb, sa, rtol=0, atol=1e-4)
    draws = b.sample(5, random_state=1) - np.array([1.7e9, 0.0])
    np.testing.assert_allclose(draws, a.sample(5, random_state=1), rtol=0, atol=1e-3)


def test_a_ruinous_fit_keeps_the_whitened_gaussian_start() -> None:
    x = _rows()
    est = FlowDensity("realnvp", whiten=True, lr=5.0, **{**TINY, "max_epochs": 3}).fit(x)
    assert est.best_epoch_ == 0
    s = est.spec_.whiten["shrinkage"]
    # the fit's own split (the estimator's seeded permutation) is not needed: the flow is the
    # Gaussian of its standardised training rows, which scipy scores here from the recipe
    mean, std = (
        np.asarray(est.spec_.standardizer["mean"]),
        np.asarray(est.spec_.standardizer["std"]),
    )
    rows = est.spec_.whiten["tril"]
    tril = np.zeros((2, 2))
    for i, r in enumerate(rows):
        tril[i, : i + 1] = r
    cov = (tril @ tril.T) * np.outer(std, std)
    ref = multivariate_normal(mean, cov).logpdf(x)
    np.testing.assert_allclose(est.score_samples(x), ref, rtol=0, atol=1e-4)
    assert 0.0 <= s <= 1.0


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_the_gaussian_start_is_the_training_rows_covariance(noise: float) -> None:
    """The recipe's whitening is the Cholesky factor of the training rows' shrunk covariance,
    plus the training noise's variance (numpy reference on the rows the estimator trained on)."""
    x = _rows()
    est = FlowDensity("maf", whiten=True, **{**TINY, "noise": noise}).fit(x)
    val = est.X_val_
    keep = ~np.isin(np.arange(len(x)), [np.flatnonzero((x == v).all(1))[0] for v in val])
    train = x[keep]
    mean, std = (
        np.asarray(est.spec_.standardizer["mean"]),
        np.asarray(est.spec_.standardizer["std"]),
    )
    z = (train - mean) / std
    s = est.spec_.whiten["shrinkage"]
    emp = np.cov(z.T, bias=True)
    want = (1 - s) * emp + s * np.trace(emp) / 2 * np.eye(2) + (1e-6 + noise**2) * np.eye(2)
    tril = np.zeros((2, 2))
    for i, r in enumerate(est.spec_.whiten["tril"]):
        tril[i, : i + 1] = r
    np.testing.assert_allclose(tril @ tril.T, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.as_tensor(next(m for m in est.flow_.modules() if isinstance(m, Whiten)).tril.numpy()),
        torch.as_tensor(tril),
    )
