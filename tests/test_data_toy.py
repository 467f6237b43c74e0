"""The 2-D toy densities: shapes, scales, exact densities and the checkerboard's support."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import (
    Categorical,
    Independent,
    MixtureSameFamily,
    MultivariateNormal,
    Normal,
)

from flowforge.data import (
    EXACT_TOY_DATASETS,
    TOY_DATASETS,
    DataError,
    load_dataset,
    sample_toy,
    toy_log_prob,
)
from flowforge.data.toy import (
    EIGHT_GAUSSIANS_RADIUS,
    EIGHT_GAUSSIANS_STD,
    GMM_COVS,
    GMM_MEANS,
    GMM_WEIGHTS,
)

FFJORD_SET = (
    "8gaussians",
    "checkerboard",
    "2spirals",
    "rings",
    "pinwheel",
    "moons",
    "circles",
    "swissroll",
)


def test_the_ffjord_set_is_there() -> None:
    assert set(FFJORD_SET) <= set(TOY_DATASETS)
    assert "gaussian_mixture_2d" in TOY_DATASETS


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_dtype_scale_and_determinism(name: str) -> None:
    x = sample_toy(name, 4000, torch.Generator().manual_seed(1))
    assert x.shape == (4000, 2) and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    # the usual scale: essentially everything inside [-5, 5]^2, and spread out
    assert (x.abs() < 5).float().mean() > 0.999
    assert x.std(0).min() > 0.5
    y = sample_toy(name.upper(), 4000, torch.Generator().manual_seed(1))
    assert torch.equal(x, y)
    z = sample_toy(name, 10, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert z.dtype == torch.float64


def test_checkerboard_is_uniform_on_eight_squares_of_area_32() -> None:
    n = 80_000
    x = sample_toy("checkerboard", n, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert (x >= -4).all() and (x < 4).all()
    cells = torch.floor((x + 4) / 2).long()  # 4x4 board of side-2 cells
    counts = torch.zeros(4, 4)
    counts.index_put_((cells[:, 0], cells[:, 1]), torch.ones(n), accumulate=True)
    occupied = counts > 0
    assert int(occupied.sum()) == 8  # 8 squares of side 2: total area 32
    assert occupied.sum(0).tolist() == [2, 2, 2, 2] and occupied.sum(1).tolist() == [2, 2, 2, 2]
    freq = counts[occupied] / n
    assert (freq - 1 / 8).abs().max() < 0.01
    # uniform within a square: a 4x4 sub-grid of each occupied cell is evenly filled
    frac = (x + 4) / 2 - cells
    sub = (frac * 4).long()
    sub_counts = torch.bincount(sub[:, 0] * 4 + sub[:, 1], minlength=16).double() / n
    assert (sub_counts - 1 / 16).abs().max() < 0.005
    # the exact density is 1/32 on the support, so the optimal NLL is ln 32
    lp = toy_log_prob("checkerboard", x)
    assert torch.allclose(lp, torch.full_like(lp, -math.log(32)))
    assert -lp.mean().item() == pytest.approx(3.4657, abs=1e-4)


def test_checkerboard_log_prob_off_support() -> None:
    pts = torch.tensor([[-3.0, -1.0], [5.0, 0.0], [-3.0, -3.0], [4.0, 4.0]], dtype=torch.float64)
    lp = toy_log_prob("checkerboard", pts)
    assert lp[0] == -math.inf and lp[1] == -math.inf and lp[3] == -math.inf
    assert lp[2].item() == pytest.approx(-math.log(32))


def _eight_gaussians_reference() -> MixtureSameFamily:
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = EIGHT_GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], -1)
    comp = Independent(Normal(means, torch.full_like(means, EIGHT_GAUSSIANS_STD)), 1)
    return MixtureSameFamily(Categorical(torch.full((8,), 1 / 8, dtype=torch.float64)), comp)


def _gmm_reference() -> MixtureSameFamily:
    comp = MultivariateNormal(
        torch.tensor(GMM_MEANS, dtype=torch.float64),
        covariance_matrix=torch.tensor(GMM_COVS, dtype=torch.float64),
    )
    return MixtureSameFamily(Categorical(torch.tensor(GMM_WEIGHTS, dtype=torch.float64)), comp)


@pytest.mark.parametrize(
    ("name", "reference"),
    [("8gaussians", _eight_gaussians_reference), ("gaussian_mixture_2d", _gmm_reference)],
)
def test_mixture_log_prob_matches_torch_distributions(name: str, reference: object) -> None:
    ref = reference()  # type: ignore[operator]
    x = torch.randn(50, 3, 2, dtype=torch.float64) * 3
    lp = toy_log_prob(name, x)
    assert lp.shape == (50, 3) and lp.dtype == torch.float64
    torch.testing.assert_close(lp, ref.log_prob(x))
    # samples have the reference's moments
    s = sample_toy(name, 100_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(s.mean(0), ref.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(s.var(0), ref.variance, atol=0.05, rtol=0.02)


@pytest.mark.parametrize("name", EXACT_TOY_DATASETS)
def test_exact_densities_integrate_to_one(name: str) -> None:
    h = 0.025
    grid = torch.arange(-6, 6, h, dtype=torch.float64) + h / 2
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    p = toy_log_prob(name, torch.stack([xx, yy], -1)).exp()
    assert (p.sum() * h * h).item() == pytest.approx(1.0, abs=2e-3)


def test_eight_gaussians_entropy_formula() -> None:
    x = sample_toy("8gaussians", 200_000, torch.Generator().manual_seed(0), dtype=torch.float64)
    entropy = -toy_log_prob("8gaussians", x).mean().item()
    formula = math.log(8) + math.log(2 * math.pi * math.e * EIGHT_GAUSSIANS_STD**2)
    assert entropy == pytest.approx(formula, abs=0.02)
    radii = x.norm(dim=-1)
    assert radii.mean().item() == pytest.approx(2 * math.sqrt(2), abs=0.05)


def test_toy_log_prob_errors() -> None:
    with pytest.raises(DataError, match="no closed-form"):
        toy_log_prob("moons", torch.zeros(3, 2))
    with pytest.raises(DataError, match=r"\(\*, 2\)"):
        toy_log_prob("checkerboard", torch.zeros(3, 3))
    with pytest.raises(DataError, match="8gaussians, checkerboard"):
        sample_toy("nope", 3, torch.Generator())


def test_toy_dataset_val_test_streams() -> None:
    ds = load_dataset("Moons", seed=5, n_val=300, n_test=400)
    assert ds.kind == "toy" and ds.train is None and ds.standardizer is None
    assert ds.val.shape == (300, 2) and ds.test.shape == (400, 2)
    assert ds.val.dtype == torch.float32
    assert not torch.equal(ds.val, ds.test[:300])  # different streams
    again = load_dataset("moons", seed=5, n_val=300, n_test=400)
    assert torch.equal(ds.val, again.val) and torch.equal(ds.test, again.test)
    other = load_dataset("moons", seed=6, n_val=300, n_test=400)
    assert not torch.equal(ds.val, other.val)
    g = torch.Generator().manual_seed(0)
    a = ds.sample_train(64, g)
    b = ds.sample_train(64, g)
    assert a.shape == (64, 2) and not torch.equal(a, b)  # fresh draws
    with pytest.raises(DataError):
        load_dataset("moons", n_val=0)
