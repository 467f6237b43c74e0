"""The rational-quadratic spline kernel: identity, monotonicity, inverse, and no NaN ever."""

from __future__ import annotations

import pytest
import torch

from flowforge.functional.splines import rational_quadratic_spline as rqs

K = 8
BOUND = 5.0


def _inputs(n: int, dtype: torch.dtype) -> torch.Tensor:
    special = torch.tensor([BOUND, -BOUND, BOUND - 1e-6, -BOUND + 1e-6, 0.0, 1e4, -1e4, 7.5, -7.5])
    return torch.cat([torch.randn(n) * 6, special]).to(dtype)


def test_zero_params_is_identity() -> None:
    x = torch.linspace(-8, 8, 101, dtype=torch.float64)
    y, ladj = rqs(x, torch.zeros(101, 3 * K - 1, dtype=torch.float64), BOUND)
    assert torch.allclose(y, x, atol=1e-12) and torch.allclose(
        ladj, torch.zeros_like(x), atol=1e-12
    )


def test_monotone_continuous_and_maps_the_interval_onto_itself() -> None:
    p = torch.randn(1, 3 * K - 1, dtype=torch.float64).expand(20001, -1)
    x = torch.linspace(-BOUND - 1, BOUND + 1, 20001, dtype=torch.float64)
    y, ladj = rqs(x, p, BOUND)
    assert (y.diff() > 0).all()
    assert y.diff().abs().max() < 0.05  # no jumps at the knots or the bounds
    edge = torch.tensor([-BOUND, BOUND], dtype=torch.float64)
    ye, _ = rqs(edge, p[:2], BOUND)
    assert torch.allclose(ye, edge, atol=1e-12)
    # Slope 1 at the bounds: the linear tails join smoothly.
    assert torch.allclose(ladj[x.abs() >= BOUND], torch.zeros(1, dtype=torch.float64), atol=1e-6)


def test_inverse_and_ladj_in_float64() -> None:
    x = _inputs(5000, torch.float64)
    p = torch.randn(x.shape[0], 3 * K - 1, dtype=torch.float64) * 2
    y, ladj = rqs(x, p, BOUND)
    x2, ladj_inv = rqs(y, p, BOUND, inverse=True)
    assert torch.allclose(x2, x, atol=1e-8, rtol=0)
    assert torch.allclose(ladj_inv, -ladj, atol=1e-8)
    xg = x.clone().requires_grad_(True)
    (dy,) = torch.autograd.grad(rqs(xg, p, BOUND)[0].sum(), xg)
    assert torch.allclose(dy.log(), ladj, atol=1e-8)


def test_inputs_on_the_knots() -> None:
    """Inputs exactly on a knot use a valid bin (no out-of-range index) in both directions."""
    p = torch.randn(1, 3 * K - 1, dtype=torch.float64)
    y_edges, _ = rqs(
        torch.linspace(-BOUND, BOUND, 2 * K + 1, dtype=torch.float64),
        p.expand(2 * K + 1, -1),
        BOUND,
    )
    x_back, _ = rqs(y_edges, p.expand(2 * K + 1, -1), BOUND, inverse=True)
    assert torch.isfinite(x_back).all()
    assert torch.allclose(
        x_back, torch.linspace(-BOUND, BOUND, 2 * K + 1, dtype=torch.float64), atol=1e-9
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 10.0, 100.0, 1000.0])
@pytest.mark.parametrize("inverse", [False, True])
def test_never_nan_values_or_gradients(dtype: torch.dtype, scale: float, inverse: bool) -> None:
    x = _inputs(40_000, dtype).requires_grad_(True)
    p = (torch.randn(x.shape[0], 3 * K - 1) * scale).to(dtype).requires_grad_(True)
    if inverse:
        with torch.no_grad():
            y0, _ = rqs(x, p, BOUND)
        x = torch.cat([y0, x.detach()[-9:]]).requires_grad_(True)
        p = torch.cat([p.detach(), p.detach()[-9:]]).requires_grad_(True)
    y, ladj = rqs(x, p, BOUND, inverse=inverse)
    (y.sum() + ladj.sum()).backward()
    for name, t in [("y", y), ("ladj", ladj), ("x.grad", x.grad), ("params.grad", p.grad)]:
        assert t is not None and torch.isfinite(t).all(), f"non-finite {name}"
