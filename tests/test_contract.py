"""The bijection contract, checked for every registry entry and its inverse (float64).

An entry may have one direction only (``Case.directions``): each check runs on the directions
that exist (round trips where both do) and the missing one must raise ``NotImplementedError``
naming it.
"""

from __future__ import annotations

import functools

import pytest
import torch

from registry import BOTH, REGISTRY, Case, build

NAMES = sorted(REGISTRY)
PARAMS = [(n, inv) for n in NAMES for inv in (False, True)]
IDS = [f"{n}{'-inv' if inv else ''}" for n, inv in PARAMS]


@functools.cache
def _directions(name: str) -> frozenset[str]:
    return REGISTRY[name]().directions


def _has(name: str, inverted: bool) -> frozenset[str]:
    """The directions of the bijection under test (``.inv`` swaps them)."""
    swap = {"forward": "inverse", "inverse": "forward"}
    dirs = _directions(name)
    return frozenset(swap[d] for d in dirs) if inverted else dirs


def _needs(name: str, inverted: bool, *directions: str) -> None:
    missing = set(directions) - _has(name, inverted)
    if missing:
        pytest.skip(f"{name}{'.inv' if inverted else ''} has no {' or '.join(sorted(missing))}")


def _setup(name: str, inverted: bool, n: int = 6, dtype: torch.dtype = torch.float64):
    case: Case = build(name, dtype)
    x = case.draw(n)
    c = torch.randn(n, case.context, dtype=dtype) if case.context else None
    b = case.bijection
    if inverted:
        # Valid inputs of the inverse are the latents of valid data (drawn directly when
        # there is no forward direction to map them).
        if "forward" in case.directions:
            with torch.no_grad():
                x, _ = b(x, c)
        else:
            x = case.draw_latent(n)
        b = b.inv
    return b, x, c


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_round_trip(name: str, inverted: bool) -> None:
    _needs(name, inverted, "forward", "inverse")
    b, x, c = _setup(name, inverted)
    with torch.no_grad():
        z, _ = b(x, c)
        x2, _ = b.inverse(z, c)
        z2, _ = b(x2, c)
    assert torch.allclose(x2, x, atol=1e-8, rtol=0), (x2 - x).abs().max()
    assert torch.allclose(z2, z, atol=1e-8, rtol=0), (z2 - z).abs().max()


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_ladj_matches_autograd_jacobian(name: str, inverted: bool) -> None:
    _needs(name, inverted, "forward")
    b, x, c = _setup(name, inverted, n=3)
    shape = tuple(x.shape[1:])
    _, ladj = b(x, c)
    n, size = x.shape[0], x[0].numel()

    def f(v):  # the rows' outputs summed: row i's Jacobian is block i (rows are independent)
        return b(v.reshape(n, *shape), c)[0].reshape(n, size).sum(0)

    jac_all = torch.autograd.functional.jacobian(f, x.reshape(-1))  # (size, n * size)
    for i in range(n):
        jac = jac_all[:, i * size : (i + 1) * size]
        sign, logdet = torch.linalg.slogdet(jac)
        assert sign != 0
        assert torch.allclose(ladj[i], logdet, atol=1e-7, rtol=1e-7), (ladj[i], logdet)


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_inverse_ladj_is_negative_forward(name: str, inverted: bool) -> None:
    _needs(name, inverted, "forward", "inverse")
    b, x, c = _setup(name, inverted)
    with torch.no_grad():
        z, ladj = b(x, c)
        _, ladj_inv = b.inverse(z, c)
    assert torch.allclose(ladj_inv, -ladj, atol=1e-8)


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_batched_equals_per_sample(name: str, inverted: bool) -> None:
    _needs(name, inverted, "forward")
    b, x, c = _setup(name, inverted, n=4)
    with torch.no_grad():
        z, ladj = b(x, c)
        assert ladj.shape == (4,)
        for i in range(4):
            zi, li = b(x[i : i + 1], None if c is None else c[i : i + 1])
            assert torch.allclose(zi[0], z[i], atol=1e-10) and torch.allclose(
                li[0], ladj[i], atol=1e-10
            )


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_kept(name: str, inverted: bool, dtype: torch.dtype) -> None:
    _needs(name, inverted, "forward")
    b, x, c = _setup(name, inverted, dtype=dtype)
    with torch.no_grad():
        z, ladj = b(x, c)
        x2, ladj2 = b.inverse(z, c) if "inverse" in _has(name, inverted) else (x, ladj)
    assert z.dtype == ladj.dtype == x2.dtype == ladj2.dtype == dtype
    assert z.device == x.device


@pytest.mark.parametrize(("name", "inverted"), PARAMS, ids=IDS)
def test_shapes_match_the_tensors(name: str, inverted: bool) -> None:
    _needs(name, inverted, "forward")
    b, x, c = _setup(name, inverted, n=4)
    data, latent = b.event_shape, b.forward_shape(b.event_shape)
    assert tuple(x.shape[1:]) == data
    assert b.inverse_shape(latent) == data
    assert b.inv.event_shape == latent
    assert b.inv.forward_shape(latent) == data and b.inv.inverse_shape(data) == latent
    with torch.no_grad():
        z, ladj = b(x, c)
        x2, ladj2 = b.inverse(z, c) if "inverse" in _has(name, inverted) else (x, ladj)
    assert tuple(z.shape) == (4, *latent), (tuple(z.shape), latent)
    assert tuple(x2.shape) == (4, *data) and ladj.shape == ladj2.shape == (4,)
    # Inputs of the wrong event shape are refused, naming the expected shape.
    wrong = torch.zeros(4, *data[:-1], data[-1] + 1, dtype=x.dtype)
    with pytest.raises(ValueError, match="expected"):
        b(wrong, c)


@pytest.mark.parametrize("name", NAMES)
def test_inverse_of_inverse_is_self(name: str) -> None:
    b = REGISTRY[name]().bijection
    assert b.inv.inv is b
    assert b.inv is b.inv


@pytest.mark.parametrize("name", NAMES)
def test_extra_batch_dims(name: str) -> None:
    b, x, c = _setup(name, "forward" not in _directions(name), n=6)
    with torch.no_grad():
        z, ladj = b(x, c)
        z2, ladj2 = b(x.reshape(2, 3, *x.shape[1:]), None if c is None else c.reshape(2, 3, -1))
    assert torch.allclose(z2.reshape(z.shape), z, atol=1e-10)
    assert ladj2.shape == (2, 3) and torch.allclose(ladj2.reshape(-1), ladj, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_directions_are_declared(name: str) -> None:
    dirs = _directions(name)
    assert dirs and dirs <= BOTH, dirs


MISSING = [(n, inv) for n, inv in PARAMS if _has(n, inv) != BOTH]


@pytest.mark.parametrize(
    ("name", "inverted"), MISSING, ids=[f"{n}{'-inv' if i else ''}" for n, i in MISSING]
)
def test_missing_direction_raises_naming_it(name: str, inverted: bool) -> None:
    """A direction that a bijection lacks is refused with an error naming it, never silently
    wrong (for ``.inv`` the message names the wrapped bijection's own direction)."""
    b, x, c = _setup(name, inverted)
    (missing,) = BOTH - _has(name, inverted)  # a bijection has at least one direction
    (named,) = BOTH - _directions(name)
    call = b.forward if missing == "forward" else b.inverse
    with pytest.raises(NotImplementedError, match=rf"no {named} \(.*\) direction"):
        call(x, c)
