"""The 2-D toy densities of the flow literature, sampled in torch with a ``torch.Generator``.

The set and the scales follow FFJORD (everything lives in about ``[-4, 4]^2``); the samplers are
written from the definitions below, not copied. Samples are created on the generator's device.

- ``8gaussians``: equal mixture of 8 isotropic Gaussians with centres on the circle of radius
  ``2*sqrt(2)`` at angles ``k*pi/4`` and std ``sigma = 1/(2*sqrt(2)) ~ 0.354`` (FFJORD's
  ``0.5 / 1.414``). Neighbouring centres are ~6.1 sigma apart, so the entropy is
  ``ln 8 + ln(2*pi*e*sigma^2) ~ 2.837`` nats to within 1e-3; the exact density is available.
- ``checkerboard``: uniform on the 8 squares of side 2 of a 4x4 board on ``[-4, 4)^2`` whose
  cell indices ``(i, j)`` (from the lower left) have ``i + j`` even; area 32, so the optimum
  NLL is ``ln 32 ~ 3.466`` nats; the exact density is available.
- ``2spirals``: two interleaved Archimedean spiral arms, 1.5 turns, with noise.
- ``rings``: 4 concentric noisy rings of radii 0.75, 1.5, 2.25, 3 (points per ring proportional
  to the radius, Gaussian noise 0.08).
- ``pinwheel``: 5 arms, radial std 0.3, tangential std 0.1, twist rate 0.25, scale 2.
- ``moons``: two interleaving half circles (noise 0.1), scaled by 2 and shifted by (-1, -0.2).
- ``circles``: two concentric circles of radii 3 and 1.5 (noise 0.08 before scaling by 3).
- ``swissroll``: the 2-D swiss roll (noise 1.0) divided by 5.
- ``gaussian_mixture_2d``: a 3-component mixture with full covariances defined here
  (:data:`GMM_WEIGHTS`, :data:`GMM_MEANS`, :data:`GMM_COVS`); its exact log-density makes it
  the reference target for tests of fits.

References:
    Grathwohl et al., "FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative
    Models", ICLR 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import DataError

__all__ = [
    "EXACT_TOY_DATASETS",
    "GMM_COVS",
    "GMM_MEANS",
    "GMM_WEIGHTS",
    "TOY_DATASETS",
    "sample_toy",
    "toy_log_prob",
]

#: Radius of the centres and component std of ``8gaussians``.
EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 1.0 / (2.0 * math.sqrt(2.0))

#: Parameters of ``gaussian_mixture_2d``.
GMM_WEIGHTS = (0.5, 0.3, 0.2)
GMM_MEANS = ((-1.5, -1.0), (1.5, -1.0), (0.0, 2.0))
GMM_COVS = (
    ((0.6, 0.35), (0.35, 0.6)),
    ((0.6, -0.35), (-0.35, 0.6)),
    ((1.0, 0.0), (0.0, 0.15)),
)

#: The 8 cells ``(i, j)`` of the 4x4 board that carry the checkerboard's mass.
_CHECKER_CELLS = tuple((i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0)

_Sampler = Callable[[int, torch.Generator, torch.dtype], Tensor]


def _randn(n: int, g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=g, device=g.device, dtype=dtype)


def _rand(n: int, g: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=g, device=g.device, dtype=dtype)


def _choice(n: int, g: torch.Generator, k: int) -> Tensor:
    return torch.randint(k, (n,), generator=g, device=g.device)


def _polar(r: Tensor, angle: Tensor) -> Tensor:
    return torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=-1)


def _eight_gaussians(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    angle = _choice(n, g, 8).to(dtype) * (math.pi / 4)
    centres = _polar(torch.full_like(angle, EIGHT_GAUSSIANS_RADIUS), angle)
    return centres + EIGHT_GAUSSIANS_STD * _randn(n, g, dtype, 2)


def _checkerboard(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    cells = torch.tensor(_CHECKER_CELLS, device=g.device, dtype=dtype)[_choice(n, g, 8)]
    return -4.0 + 2.0 * (cells + _rand(n, g, dtype, 2))


def _two_spirals(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    t = torch.sqrt(_rand(n, g, dtype)) * (3 * math.pi)  # 1.5 turns, denser near the ends
    arm = torch.stack([-t * torch.cos(t), t * torch.sin(t)], dim=-1) + 0.5 * _rand(n, g, dtype, 2)
    sign = 1.0 - 2.0 * _choice(n, g, 2).to(dtype)  # which of the two arms
    return sign[:, None] * arm / 3.0 + 0.1 * _randn(n, g, dtype, 2)


def _rings(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    radii = torch.tensor([0.75, 1.5, 2.25, 3.0], device=g.device, dtype=dtype)
    ring = torch.multinomial(radii / radii.sum(), n, replacement=True, generator=g)
    angle = 2 * math.pi * _rand(n, g, dtype)
    return _polar(radii[ring], angle) + 0.08 * _randn(n, g, dtype, 2)


def _pinwheel(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    f = _randn(n, g, dtype, 2) * torch.tensor(
        [radial_std, tangential_std], device=g.device, dtype=dtype
    )
    f[:, 0] += 1.0
    angle = _choice(n, g, arms).to(dtype) * (2 * math.pi / arms) + rate * torch.exp(f[:, 0])
    c, s = torch.cos(angle), torch.sin(angle)
    rotated = torch.stack([c * f[:, 0] - s * f[:, 1], s * f[:, 0] + c * f[:, 1]], dim=-1)
    return 2.0 * rotated


def _moons(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    t = math.pi * _rand(n, g, dtype)
    upper = torch.stack([torch.cos(t), torch.sin(t)], dim=-1)
    lower = torch.stack([1.0 - torch.cos(t), 0.5 - torch.sin(t)], dim=-1)
    which = _choice(n, g, 2).bool()[:, None]
    x = torch.where(which, lower, upper) + 0.1 * _randn(n, g, dtype, 2)
    return 2.0 * x + torch.tensor([-1.0, -0.2], device=g.device, dtype=dtype)


def _circles(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    r = torch.where(_choice(n, g, 2).bool(), 0.5, 1.0).to(dtype)
    x = _polar(r, 2 * math.pi * _rand(n, g, dtype)) + 0.08 * _randn(n, g, dtype, 2)
    return 3.0 * x


def _swissroll(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    t = 1.5 * math.pi * (1.0 + 2.0 * _rand(n, g, dtype))
    x = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1) + _randn(n, g, dtype, 2)
    return x / 5.0


def _gmm_params(device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    weights = torch.tensor(GMM_WEIGHTS, device=device, dtype=dtype)
    means = torch.tensor(GMM_MEANS, device=device, dtype=dtype)
    chol = torch.linalg.cholesky(torch.tensor(GMM_COVS, device=device, dtype=dtype))
    return weights, means, chol


def _gaussian_mixture(n: int, g: torch.Generator, dtype: torch.dtype) -> Tensor:
    weights, means, chol = _gmm_params(g.device, dtype)
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    eps = _randn(n, g, dtype, 2)
    return means[k] + (chol[k] @ eps[:, :, None]).squeeze(-1)


_SAMPLERS: dict[str, _Sampler] = {
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "rings": _rings,
    "pinwheel": _pinwheel,
    "moons": _moons,
    "circles": _circles,
    "swissroll": _swissroll,
    "gaussian_mixture_2d": _gaussian_mixture,
}

#: Names of the toy datasets, in display order.
TOY_DATASETS: tuple[str, ...] = tuple(_SAMPLERS)
#: Toy datasets whose exact log-density :func:`toy_log_prob` computes.
EXACT_TOY_DATASETS: tuple[str, ...] = ("8gaussians", "checkerboard", "gaussian_mixture_2d")

TOY_DESCRIPTIONS: dict[str, str] = {
    "8gaussians": "8 Gaussians (std 0.354) on a circle of radius 2.83; exact log-density",
    "checkerboard": "uniform on 8 squares of side 2 in [-4, 4]^2; optimum NLL ln 32 = 3.466",
    "2spirals": "two interleaved spiral arms",
    "rings": "4 concentric noisy rings",
    "pinwheel": "5-arm pinwheel",
    "moons": "two interleaving half circles",
    "circles": "two concentric noisy circles",
    "swissroll": "2-D swiss roll",
    "gaussian_mixture_2d": "3-component full-covariance Gaussian mixture; exact log-density",
}


def _toy_name(name: str) -> str:
    key = name.lower()
    if key not in _SAMPLERS:
        raise DataError(f"unknown toy dataset {name!r}; valid names: {', '.join(TOY_DATASETS)}")
    return key


def sample_toy(
    name: str, n: int, generator: torch.Generator, *, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Draw ``n`` fresh samples of a 2-D toy density.

    Args:
        name: one of :data:`TOY_DATASETS` (case-insensitive).
        n: number of samples.
        generator: random generator; the samples are created on its device.
        dtype: floating dtype of the result.

    Returns:
        ``(n, 2)`` samples.

    Example:
        >>> x = sample_toy("checkerboard", 5, torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype
        (torch.Size([5, 2]), torch.float32)
        >>> bool(torch.allclose(toy_log_prob("checkerboard", x), torch.tensor(-math.log(32.0))))
        True

    References:
        Grathwohl et al., "FFJORD", ICLR 2019.
    """
    if n < 0:
        raise DataError(f"number of samples must be >= 0, got {n}")
    return _SAMPLERS[_toy_name(name)](n, generator, dtype)


def _gaussian_mixture_log_prob(x: Tensor, weights: Tensor, means: Tensor, chol: Tensor) -> Tensor:
    """``log sum_k w_k N(x; m_k, L_k L_k^T)`` for ``x`` of shape ``(*, 2)``."""
    diff = x[..., None, :] - means  # (*, K, 2)
    sol = torch.linalg.solve_triangular(
        chol.expand(*diff.shape[:-1], 2, 2), diff[..., None], upper=False
    ).squeeze(-1)
    half_logdet = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    comp = -0.5 * (sol**2).sum(-1) - half_logdet - math.log(2 * math.pi)
    return torch.logsumexp(comp + torch.log(weights), dim=-1)


def toy_log_prob(name: str, x: Tensor) -> Tensor:
    """Exact log-density of a toy set, for ``8gaussians``, ``checkerboard`` and
    ``gaussian_mixture_2d`` (:data:`EXACT_TOY_DATASETS`).

    Args:
        name: the toy dataset (case-insensitive).
        x: ``(*, 2)`` points, any floating dtype and device.

    Returns:
        ``(*)`` log-densities in nats (``-inf`` off the checkerboard's support), in ``x``'s dtype.
    """
    key = _toy_name(name)
    if x.shape[-1:] != (2,):
        raise DataError(f"toy_log_prob expects points of shape (*, 2), got {tuple(x.shape)}")
    if key == "checkerboard":
        inside = ((x >= -4.0) & (x < 4.0)).all(-1)
        cell = torch.floor((x + 4.0) / 2.0)
        black = torch.remainder(cell.sum(-1), 2) == 0
        return torch.where(inside & black, x.new_tensor(-math.log(32.0)), x.new_tensor(-math.inf))
    if key == "8gaussians":
        angle = torch.arange(8, device=x.device, dtype=x.dtype) * (math.pi / 4)
        means = _polar(torch.full_like(angle, EIGHT_GAUSSIANS_RADIUS), angle)
        chol = EIGHT_GAUSSIANS_STD * torch.eye(2, device=x.device, dtype=x.dtype).expand(8, 2, 2)
        weights = torch.full((8,), 1 / 8, device=x.device, dtype=x.dtype)
        return _gaussian_mixture_log_prob(x, weights, means, chol)
    if key == "gaussian_mixture_2d":
        return _gaussian_mixture_log_prob(x, *_gmm_params(x.device, x.dtype))
    raise DataError(
        f"toy dataset {name!r} has no closed-form density; exact ones: "
        f"{', '.join(EXACT_TOY_DATASETS)}"
    )
