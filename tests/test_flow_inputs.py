"""What a flow does with inputs users actually pass: other dtypes, numpy arrays, infinite rows,
empty and negative sample counts. Every preset gives the same answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import flowforge as ff

VECTOR = ["nice", "realnvp", "maf", "iaf", "nsf", "ffjord", "planar", "radial", "sylvester"]
CONDITIONAL = ["nice", "realnvp", "maf", "iaf", "nsf"]


def _vector(name: str, context: int = 0) -> ff.Flow:
    torch.manual_seed(0)
    kw: dict[str, object] = {"features": 3}
    if context:
        kw["context"] = context
    if name in ("planar", "radial", "sylvester"):
        kw["transforms"] = 2
    return ff.flows.PRESETS[name](**kw)


def _glow(context: int = 0) -> ff.Flow:
    torch.manual_seed(0)
    return ff.flows.Glow(shape=(1, 4, 4), levels=1, depth=1, hidden=(8, 8), context=context)


@pytest.mark.parametrize("name", VECTOR)
def test_a_row_with_an_infinite_value_has_log_density_minus_inf(name: str) -> None:
    flow = _vector(name)
    x = torch.randn(4, 3)
    x[1, 0] = math.inf
    x[2] = -math.inf
    lp = flow.log_prob(x)
    assert lp[1] == -math.inf and lp[2] == -math.inf
    assert torch.isfinite(lp[[0, 3]]).all()
    # the finite rows match a call without the infinite ones (no leak between rows)
    torch.testing.assert_close(lp[[0, 3]], flow.log_prob(x[[0, 3]]), rtol=1e-5, atol=1e-5)


def test_infinite_rows_leave_the_gradient_of_the_others_finite() -> None:
    flow = _vector("realnvp")
    x = torch.randn(3, 3)
    x[1] = math.inf
    flow.log_prob(x)[[0, 2]].sum().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_an_image_with_an_infinite_pixel_has_log_density_minus_inf() -> None:
    flow = _glow()
    flow.log_prob(torch.randn(8, 1, 4, 4))  # ActNorm's data-dependent initialisation
    x = torch.randn(2, 1, 4, 4)
    x[0, 0, 2, 3] = math.inf
    lp = flow.log_prob(x)
    assert lp[0] == -math.inf and torch.isfinite(lp[1])


@pytest.mark.parametrize("name", ["maf", "nsf"])
def test_numpy_and_lists_are_converted_to_the_flow_dtype(name: str) -> None:
    flow = _vector(name)
    x = np.random.default_rng(0).normal(size=(5, 3))  # float64, as numpy makes it
    expected = flow.log_prob(torch.as_tensor(x, dtype=torch.float32))
    torch.testing.assert_close(flow.log_prob(x), expected)
    torch.testing.assert_close(flow.log_prob(x.tolist()), expected)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.int64])
def test_a_tensor_of_another_dtype_is_refused_naming_both(dtype: torch.dtype) -> None:
    flow = _vector("maf")
    with pytest.raises(ValueError, match=rf"dtype torch.float32.*got {dtype}.*x\.to"):
        flow.log_prob(torch.zeros(2, 3, dtype=dtype))


def test_a_float64_flow_takes_float64_tensors() -> None:
    flow = _vector("maf").double()
    assert flow.log_prob(torch.randn(2, 3, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match=r"torch\.float64"):
        flow.log_prob(torch.randn(2, 3))


def test_a_context_of_another_dtype_is_refused() -> None:
    flow = _vector("maf", context=2)
    with pytest.raises(ValueError, match="context of dtype"):
        flow.log_prob(torch.randn(2, 3), torch.randn(2, 2, dtype=torch.float64))


def test_things_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="tensor or an array of numbers"):
        _vector("maf").log_prob("not a tensor")


@pytest.mark.parametrize("name", CONDITIONAL)
def test_zero_samples_with_a_context_is_an_empty_tensor(name: str) -> None:
    flow = _vector(name, context=2)
    ctx = torch.randn(4, 2)
    assert flow.sample(0, ctx).shape == (0, 4, 3)
    x, lp = flow.sample_and_log_prob(0, ctx)
    assert x.shape == (0, 4, 3) and lp.shape == (0, 4)


def test_zero_samples_of_an_image_flow() -> None:
    flow = _glow(context=2)
    assert flow.sample(0, torch.randn(3, 2)).shape == (0, 3, 1, 4, 4)
    assert _glow().sample(0).shape == (0, 1, 4, 4)
    assert _vector("maf").sample((2, 0)).shape == (2, 0, 3)


@pytest.mark.parametrize("n", [-1, (2, -3), 2.5])
def test_a_negative_or_fractional_number_of_samples_is_refused(n: object) -> None:
    for flow in (_vector("maf"), _vector("maf", context=2)):
        with pytest.raises(ValueError, match="non-negative integers"):
            flow.sample(n)  # type: ignore[arg-type]
