"""C2ST (sbibm's protocol): 0.5 for one distribution, the Bayes accuracy for shifted Gaussians,
deterministic under a seed, and z-scoring is what makes badly scaled sets comparable."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn", reason="C2ST needs scikit-learn (the cli extra)")

from flowforge.eval.c2st import c2st


def _gaussians(n: int, shift: float, seed: int, scale: float = 1.0, offset: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 2, generator=g, dtype=torch.float64)
    b = torch.randn(n, 2, generator=g, dtype=torch.float64)
    b[:, 0] += shift
    return offset + scale * a, offset + scale * b


def _bayes(delta: float) -> float:
    """Best accuracy between N(0, I) and N(delta e1, I) with equal priors: Phi(delta / 2)."""
    return 0.5 * (1 + math.erf(delta / 2 / math.sqrt(2)))


def test_same_distribution_is_near_one_half() -> None:
    a, b = _gaussians(1000, 0.0, seed=0)
    # 2000 held-out predictions in all: a chance accuracy's std is 0.5 / sqrt(2000) = 0.011
    assert abs(c2st(a, b, seed=0, max_iter=200) - 0.5) < 0.04


@pytest.mark.parametrize("shift", [1.0, 2.0])
def test_shifted_gaussians_reach_the_bayes_accuracy(shift: float) -> None:
    a, b = _gaussians(1000, shift, seed=1)
    assert c2st(a, b, seed=0, max_iter=200) == pytest.approx(_bayes(shift), abs=0.03)


def test_z_scoring_rescues_badly_scaled_samples() -> None:
    """Samples at scale 1e4 around 1e5: without z-scoring the MLP's inputs are huge and it
    learns nothing useful; with the reference's statistics it finds the Bayes accuracy."""
    a, b = _gaussians(1000, 2.0, seed=2, scale=1e4, offset=1e5)
    assert c2st(a, b, seed=0, max_iter=200) == pytest.approx(_bayes(2.0), abs=0.03)
    assert c2st(a, b, seed=0, max_iter=200, z_score=False) < _bayes(2.0) - 0.1


def test_deterministic_given_seed_and_accepts_numpy() -> None:
    a, b = _gaussians(300, 1.0, seed=3)
    first = c2st(a, b, seed=5, max_iter=100)
    assert c2st(a.numpy(), np.asarray(b), seed=5, max_iter=100) == first


def test_disjoint_sets_are_told_apart() -> None:
    a, b = _gaussians(300, 12.0, seed=4)
    assert c2st(a, b, max_iter=100) > 0.99


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.zeros(20, 2), torch.zeros(20, 3), r"expected samples of shape \(M, 2\)"),
        (torch.zeros(5, 2), torch.zeros(20, 2), "at least 10 rows"),
        (torch.full((20, 2), math.nan), torch.zeros(20, 2), "NaN or inf"),
    ],
)
def test_bad_input_is_one_clear_error(a: torch.Tensor, b: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        c2st(a, b)
