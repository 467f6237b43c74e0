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


# ---------------------------------------------------------------- the spline's autograd node
def _plain(x: torch.Tensor, p: torch.Tensor, inverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The same spline through plain autograd (the composition of torch ops)."""
    from flowforge.functional import splines

    k = (p.shape[-1] + 1) // 3
    pm = torch.movedim(p, -1, 0)
    return splines._spline(x, pm, k, BOUND, inverse, 1e-3, 1e-3, 1e-3)


@pytest.mark.parametrize("bins", [1, 2, 3, 8])
@pytest.mark.parametrize("inverse", [False, True])
def test_spline_node_gradcheck_and_gradgradcheck(bins: int, inverse: bool) -> None:
    torch.manual_seed(bins)
    x = (torch.randn(6, 3, dtype=torch.float64) * 3).requires_grad_(True)  # some outside
    p = torch.randn(6, 3, 3 * bins - 1, dtype=torch.float64, requires_grad=True)

    def fn(x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rqs(x, p, BOUND, inverse=inverse)

    assert torch.autograd.gradcheck(fn, (x, p))
    assert torch.autograd.gradgradcheck(fn, (x, p), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("n", [1000, 70_000])  # one node; several chunks
def test_spline_node_gradients_equal_plain_autograd(
    dtype: torch.dtype, inverse: bool, n: int
) -> None:
    torch.manual_seed(0)
    # Not exactly on the bounds: there theta's clamp to [0, 1] passes or stops the gradient
    # depending on the last bit of the knots (a measure-zero tie; never NaN, tested above).
    x = _inputs(n, dtype)
    x = torch.where(x.abs() == BOUND, x * 0.5, x)
    p = torch.randn(x.shape[0], 3 * K - 1, dtype=dtype) * 2
    gy, gl = torch.randn_like(x), torch.randn_like(x)
    grads = []
    for f in (lambda x, p: rqs(x, p, BOUND, inverse=inverse), lambda x, p: _plain(x, p, inverse)):
        xr, pr = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
        y, ladj = f(xr, pr)
        torch.autograd.backward((y, ladj), (gy, gl))
        grads.append((y.detach(), ladj.detach(), xr.grad, pr.grad))
    # float32: the two sum in different orders (softmax backward cancels), so the tolerance
    # scales with each tensor's largest entry.
    eps = 1e-3 if dtype == torch.float32 else 1e-9
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=eps, atol=eps * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("needs", ["x", "p"])
def test_spline_node_one_input_needs_grad(needs: str) -> None:
    x = _inputs(500, torch.float64)
    p = torch.randn(x.shape[0], 3 * K - 1, dtype=torch.float64)
    (x if needs == "x" else p).requires_grad_(True)
    y, ladj = rqs(x, p, BOUND)
    (y.sum() + ladj.sum()).backward()
    assert (x.grad is not None) == (needs == "x")
    assert (p.grad is not None) == (needs == "p")
    ref_x, ref_p = x.detach().requires_grad_(needs == "x"), p.detach().requires_grad_(needs == "p")
    y, ladj = _plain(ref_x, ref_p, False)
    (y.sum() + ladj.sum()).backward()
    got, want = (x.grad, ref_x.grad) if needs == "x" else (p.grad, ref_p.grad)
    torch.testing.assert_close(got, want)


def _saved_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    """Bytes of distinct storage that autograd keeps alive for the backward of ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_spline_node_saves_far_less_than_plain_autograd() -> None:
    # Training memory: the node keeps x, the parameters, the bin index and the bin's six
    # values (~33 floats per element at K = 8); plain autograd keeps several times more.
    n = 4096
    x = _inputs(n, torch.float32).requires_grad_(True)
    p = torch.randn(x.shape[0], 3 * K - 1).requires_grad_(True)
    node = _saved_bytes(lambda: rqs(x, p, BOUND))
    plain = _saved_bytes(lambda: _plain(x, p, False))
    per_element = node / x.numel() / 4
    assert per_element <= 3 * K + 12, per_element
    assert plain > 3 * node, (plain, node)


@pytest.mark.parametrize("inverse", [False, True])
def test_torch_func_transforms_take_the_plain_ops(inverse: bool) -> None:
    # torch.func (jacrev, grad, vmap) cannot trace the spline's autograd node; under its
    # transforms the spline runs as plain ops, with the same derivatives.
    torch.manual_seed(0)
    x = torch.randn(6, dtype=torch.float64) * 3
    p = torch.randn(6, 3 * K - 1, dtype=torch.float64)

    def values(x: torch.Tensor) -> torch.Tensor:
        return rqs(x, p, BOUND, inverse=inverse)[0]

    def ladj_sum(p: torch.Tensor) -> torch.Tensor:
        return rqs(x, p, BOUND, inverse=inverse)[1].sum()

    jac = torch.func.jacrev(values)(x)
    torch.testing.assert_close(jac, torch.autograd.functional.jacobian(values, x))
    gp = torch.func.grad(ladj_sum)(p)
    pr = p.clone().requires_grad_(True)
    ladj_sum(pr).backward()
    torch.testing.assert_close(gp, pr.grad)


@pytest.mark.parametrize("inverse", [False, True])
def test_plain_modules_switch_takes_the_plain_ops(inverse: bool) -> None:
    # Inside ff.functional.plain_modules() no fused node runs: the spline's neither.
    from flowforge.functional import plain_modules

    torch.manual_seed(1)
    x = (torch.randn(7, dtype=torch.float64) * 3).requires_grad_(True)
    p = torch.randn(7, 3 * K - 1, dtype=torch.float64, requires_grad=True)
    y, ladj = rqs(x, p, BOUND, inverse=inverse)
    assert type(y.grad_fn).__name__ == "_SplineFunctionBackward"
    with plain_modules():
        y_plain, ladj_plain = rqs(x, p, BOUND, inverse=inverse)
    assert "SplineFunction" not in type(y_plain.grad_fn).__name__
    torch.testing.assert_close((y_plain, ladj_plain), (y, ladj))
