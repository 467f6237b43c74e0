"""The orthogonal Sylvester kind: Bjorck's orthonormalisation, its gradient where the raw
matrix is near-singular or rank-deficient, and the flow-VAE that once hit a NaN with it."""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType

import pytest
import torch

import flowforge.transforms as T
from flowforge.transforms.sylvester import orthonormal_columns
from repo_scripts import load_script

f64 = torch.float64

# One image's amortised 8 x 8 matrix in the first layer at step 5,241 of
# `examples/flow_vae.py --seed 0` with the orthogonal kind, when Q came from a QR
# decomposition: smallest singular value 3.4e-8 (condition number 1.4e8, singular in float32),
# and a NaN gradient through the QR in float32.
FAILING = [
    [-0.20525473, -1.0810559, -0.29232222, -0.036000893, -0.4724604, 0.89605874, 1.217296, 0.731388],
    [-0.50998056, -1.4745102, -0.08057763, 2.0343285, -0.6394272, 1.1200929, -1.5956649, -0.1253025],
    [-2.7205362, -0.32560503, 0.3794378, -0.49076903, 0.8267299, 0.856919, 0.08500944, -0.20330773],
    [-1.7811635, -1.8168191, -0.5749808, -0.07644585, 0.8323323, -0.34787816, 0.31199792, 1.1489779],
    [0.029534444, -0.14293653, 0.6355708, 0.9356386, 0.22368145, -0.45047507, -0.7303964, 0.19506489],
    [-0.49073797, -0.821823, 1.0753101, -0.24854839, -0.13289681, -0.43572032, 0.529177, 0.6658949],
    [-2.013407, 1.5630233, -1.1085169, -1.0236193, -0.82501423, -1.4145045, -1.2054528, -0.21909139],
    [0.24061164, 0.76721126, -0.37586242, -0.9614152, 0.03947386, -0.5918838, -2.2535336, -2.118137],
]  # fmt: skip


def _with_singular_values(d: int, s: list[float], seed: int = 0) -> torch.Tensor:
    """A ``d x len(s)`` float64 matrix with singular values ``s`` and random singular vectors."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, len(s), dtype=f64, generator=g))[0]
    v = torch.linalg.qr(torch.randn(len(s), len(s), dtype=f64, generator=g))[0]
    return (u * torch.tensor(s, dtype=f64)) @ v.T


def _orthonormality_error(q: torch.Tensor) -> float:
    eye = torch.eye(q.shape[-1], dtype=q.dtype)
    return float((q.detach().mT @ q.detach() - eye).abs().max())


def _polar(a: torch.Tensor) -> torch.Tensor:
    """The reference: ``U V^T`` from the SVD ``a = U S V^T``."""
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    return u @ vh


DEGENERATE = {
    "near-singular": [3.0, 2.0, 1.0, 1e-7],
    "near-singular twice": [3.0, 1.0, 1e-6, 1e-7],
    "rank-deficient": [3.0, 2.0, 1.0, 0.0],
    "rank 1": [2.0, 0.0, 0.0, 0.0],
    "zero": [0.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("dtype", [torch.float32, f64])
@pytest.mark.parametrize("d", [4, 7])
@pytest.mark.parametrize("name", list(DEGENERATE))
def test_gradient_is_finite_and_columns_orthonormal_for_degenerate_matrices(
    name: str, d: int, dtype: torch.dtype
) -> None:
    a = _with_singular_values(d, DEGENERATE[name]).to(dtype).requires_grad_()
    q = orthonormal_columns(a)
    assert _orthonormality_error(q) < 50 * torch.finfo(dtype).eps
    (q * torch.randn(q.shape, dtype=dtype)).sum().backward()
    assert a.grad is not None and bool(a.grad.isfinite().all())


def test_the_matrix_that_broke_qr_has_a_finite_gradient() -> None:
    a = torch.tensor(FAILING, requires_grad=True)
    q = orthonormal_columns(a)
    assert _orthonormality_error(q) < 50 * torch.finfo(torch.float32).eps
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    (q * w).sum().backward()
    assert a.grad is not None and bool(a.grad.isfinite().all())
    # in float64 it is well within reach: the exact polar factor's gradient
    a64 = a.detach().double().requires_grad_()
    (grad,) = torch.autograd.grad((orthonormal_columns(a64) * w.double()).sum(), a64)
    (ref_grad,) = torch.autograd.grad((_polar(a64) * w.double()).sum(), a64)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", [(6, 6), (7, 3), (3, 5, 2)])
def test_it_is_the_polar_factor_with_its_gradient(shape: tuple[int, ...]) -> None:
    # the nearest matrix with orthonormal columns, ill-conditioned (singular values from 1e-3)
    torch.manual_seed(1)
    a = torch.randn(shape, dtype=f64) * torch.logspace(0, -3, shape[-1], dtype=f64)
    a = (a * 4).requires_grad_()
    w = torch.randn(shape, dtype=f64)
    q = orthonormal_columns(a)
    assert _orthonormality_error(q) < 1e-14
    (grad,) = torch.autograd.grad((q * w).sum(), a)
    ref = _polar(a)
    (ref_grad,) = torch.autograd.grad((ref * w).sum(), a)
    torch.testing.assert_close(q, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-7, atol=1e-9)


def test_a_matrix_with_orthonormal_columns_is_kept() -> None:
    q0 = torch.linalg.qr(torch.randn(5, 3, dtype=f64))[0]
    torch.testing.assert_close(orthonormal_columns(q0), q0, rtol=0, atol=1e-15)


@pytest.mark.parametrize("singular", [[2.0, 1.0, 1e-7], [2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
def test_layer_log_det_is_exact_for_a_degenerate_raw_matrix(singular: list[float]) -> None:
    # Q orthonormal even where the raw matrix is rank-deficient: the log-det stays exact
    torch.manual_seed(2)
    layer = T.Sylvester(5, "orthogonal", rank=3).double()
    with torch.no_grad():
        layer.params.raw.normal_(0, 0.7)
        layer.params.raw[layer.params.slot("q")] = _with_singular_values(5, singular).reshape(-1)
    z = torch.randn(4, 5, dtype=f64)
    x, ladj = layer.inverse(z)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: layer.inverse(v[None])[0][0], z[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jac).logabsdet)
    z2, ladj2 = layer(x)
    torch.testing.assert_close(z2, z)
    torch.testing.assert_close(ladj2, -ladj)
    x.sum().add(ladj.sum()).backward()
    assert all(bool(p.grad.isfinite().all()) for p in layer.parameters() if p.grad is not None)


@pytest.fixture(scope="module")
def fv() -> ModuleType:
    return load_script("examples/flow_vae.py", "flow_vae")


def test_flow_vae_with_the_orthogonal_kind_trains_from_the_failing_matrix(
    fv: ModuleType,
) -> None:
    # every image starts with the matrix that broke QR (the amortising net starts at zero)
    torch.manual_seed(0)
    s = replace(fv.QUICK, steps=12, warmup=3, hidden=16, context=4, sylvester=2, batch=10)
    s = replace(s, sylvester_kind="orthogonal")
    vae = fv.FlowVAE("sylvester", s)
    layers = [m for m in vae.flow.modules() if isinstance(m, T.Sylvester)]
    assert len(layers) == 2 and all(m.kind == "orthogonal" for m in layers)
    with torch.no_grad():
        layers[0].params.raw[layers[0].params.slot("q")] = torch.tensor(FAILING).reshape(-1)
    train_x = torch.rand(40, 64)  # intensities (no scikit-learn import: this is about Q)
    curve = fv.train(vae, train_x)  # raises FloatingPointError on a non-finite gradient
    assert len(curve) == 12 and all(c == c and abs(c) < 1e4 for c in curve)
    torch.manual_seed(1)
    out = fv.evaluate(vae, torch.bernoulli(train_x[:10]), elbo_samples=2, k=4)
    assert torch.isfinite(out["elbo_rows"]).all() and torch.isfinite(out["iw_rows"]).all()
