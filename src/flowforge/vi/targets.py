"""Target densities for variational inference: ``log p~(x)``, known up to a constant.

A target is an ``nn.Module`` (its data move with ``.to(device)``) called as
``target(x) -> (*)`` on ``x`` of shape ``(*, D)``, in ``x``'s dtype. ``log_normalizer``
is ``log Z`` where it is known (``None`` otherwise) and ``bounds`` a box holding almost all
the mass, for grid integration and plots (2-D targets). Any callable ``(*, D) -> (*)`` is a
target too; :func:`as_target` gives one the attributes.

``TARGETS`` maps a lowercase name to a constructor with defaults, for configs and the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TARGETS",
    "Banana",
    "Energy",
    "Funnel",
    "Gaussian",
    "LogisticRegression",
    "Target",
    "as_target",
]


class Target(nn.Module):
    """An unnormalised log-density over ``R^D``.

    Attributes:
        features: ``D``.
        log_normalizer: ``log Z`` of ``exp(log_prob)`` when known, else ``None``.
        bounds: ``[(lo, hi)] * D``, a box with almost all the mass, or ``None``.
    """

    def __init__(
        self,
        features: int,
        log_normalizer: float | None = None,
        bounds: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.log_normalizer = log_normalizer
        self.bounds = None if bounds is None else [(float(a), float(b)) for a, b in bounds]

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p~(x)``: ``(*, D) -> (*)``."""
        raise NotImplementedError

    def _check(self, x: Tensor) -> None:
        if x.dim() == 0 or x.shape[-1] != self.features:
            raise ValueError(
                f"{type(self).__name__}: expected x of shape (*, {self.features}), "
                f"got {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.log_prob(x)


class _Callable(Target):
    def __init__(self, fn: Callable[[Tensor], Tensor], features: int, **kwargs: object) -> None:
        super().__init__(features, **kwargs)  # type: ignore[arg-type]
        self.fn = fn

    def log_prob(self, x: Tensor) -> Tensor:
        return self.fn(x)


def as_target(
    fn: Callable[[Tensor], Tensor],
    features: int,
    log_normalizer: float | None = None,
    bounds: Sequence[tuple[float, float]] | None = None,
) -> Target:
    """A user's log-density ``fn: (*, D) -> (*)`` as a :class:`Target`.

    Example:
        >>> import torch
        >>> t = as_target(lambda x: -x.abs().sum(-1), 3, log_normalizer=3 * 0.6931471805599453)
        >>> t(torch.ones(2, 3)).tolist()
        [-3.0, -3.0]
    """
    return _Callable(fn, features, log_normalizer=log_normalizer, bounds=bounds)


def _wall(z1: Tensor, edge: float = 4.0, width: float = 0.1) -> Tensor:
    return 0.5 * (F.relu(z1.abs() - edge) / width).square()


class Energy(Target):
    """The four 2-D energies ``U1`` .. ``U4`` of Rezende and Mohamed: ``log p~ = -U``.

    ``U1`` is a ring with two lobes; ``U2`` a sine-shaped ridge, ``U3`` and ``U4`` that ridge
    with a second branch. ``U2`` .. ``U4`` repeat along ``z1`` (infinite mass), so, as in the
    paper's pictures, they are restricted to ``|z1| <= 4``: a steep soft wall
    ``0.5 ((|z1| - 4)_+ / 0.1)^2`` is added to the energy (no change inside the box).

    Args:
        name: ``"u1"``, ``"u2"``, ``"u3"`` or ``"u4"``.

    References:
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770 (Table 1).

    Example:
        >>> import torch
        >>> u1 = Energy("u1")
        >>> u1(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).argmax().item()  # on the ring
        0
    """

    NAMES = ("u1", "u2", "u3", "u4")

    def __init__(self, name: str) -> None:
        if name not in self.NAMES:
            raise ValueError(f"expected an energy in {self.NAMES}, got {name!r}")
        bounds = [(-4.0, 4.0), (-4.0, 4.0)] if name == "u1" else [(-4.5, 4.5), (-6.0, 4.0)]
        super().__init__(2, None, bounds)
        self.name = name

    def log_prob(self, x: Tensor) -> Tensor:
        z1, z2 = x[..., 0], x[..., 1]
        if self.name == "u1":
            ring = 0.5 * ((x.norm(dim=-1) - 2.0) / 0.4).square()
            lobes = torch.logaddexp(
                -0.5 * ((z1 - 2.0) / 0.6).square(), -0.5 * ((z1 + 2.0) / 0.6).square()
            )
            return -(ring - lobes)
        w1 = torch.sin(2 * math.pi * z1 / 4)
        if self.name == "u2":
            u = 0.5 * ((z2 - w1) / 0.4).square()
        elif self.name == "u3":
            w2 = 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6).square())
            u = -torch.logaddexp(
                -0.5 * ((z2 - w1) / 0.35).square(), -0.5 * ((z2 - w1 + w2) / 0.35).square()
            )
        else:
            w3 = 3.0 * torch.sigmoid((z1 - 1.0) / 0.3)
            u = -torch.logaddexp(
                -0.5 * ((z2 - w1) / 0.4).square(), -0.5 * ((z2 - w1 + w3) / 0.35).square()
            )
        return -(u + _wall(z1))

    def extra_repr(self) -> str:
        return self.name


class Gaussian(Target):
    """An unnormalised Gaussian ``-0.5 (x - mean)^T cov^-1 (x - mean)``, ``log Z`` known.

    Args:
        mean: ``(D,)``.
        cov: ``(D, D)``, symmetric positive definite.

    Example:
        >>> import math, torch
        >>> g = Gaussian(torch.zeros(2), torch.eye(2))
        >>> round(g.log_normalizer, 6) == round(math.log(2 * math.pi), 6)
        True
    """

    chol: Tensor
    mean: Tensor

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        d = mean.shape[-1]
        chol = torch.linalg.cholesky(cov.to(torch.float64))
        log_z = 0.5 * d * math.log(2 * math.pi) + float(chol.diagonal().log().sum())
        sds = cov.diagonal().sqrt()
        bounds = [(float(m - 8 * s), float(m + 8 * s)) for m, s in zip(mean, sds)]
        super().__init__(d, log_z, bounds)
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("chol", chol)

    def log_prob(self, x: Tensor) -> Tensor:
        diff = (x - self.mean.to(x.dtype)).unsqueeze(-1)  # (*, D, 1)
        chol = self.chol.to(x.dtype).expand(*diff.shape[:-2], *self.chol.shape)
        white = torch.linalg.solve_triangular(chol, diff, upper=False)
        return -0.5 * white.square().sum((-2, -1))


class Funnel(Target):
    """Neal's funnel: ``v ~ N(0, scale^2)``, ``x_i | v ~ N(0, e^v)``, ``i = 2..D``; normalised.

    The first coordinate is ``v``. Its scale varies over orders of magnitude along ``v``, a
    hard case for Gaussian-like ``q`` (``log Z = 0``).

    Args:
        features: ``D >= 2`` (Neal's is 10).
        scale: standard deviation of ``v``.

    References:
        Neal (2003). Slice Sampling. Annals of Statistics 31(3), arXiv:physics/0009028.

    Example:
        >>> import torch
        >>> Funnel(3)(torch.zeros(1, 3)).shape
        torch.Size([1])
    """

    def __init__(self, features: int = 10, scale: float = 3.0) -> None:
        if features < 2:
            raise ValueError(f"Funnel: expected features >= 2, got {features}")
        bounds = [(-4 * scale, 4 * scale)] + [(-10.0, 10.0)] * (features - 1)
        super().__init__(features, 0.0, bounds)
        self.scale = float(scale)

    def log_prob(self, x: Tensor) -> Tensor:
        v, rest = x[..., 0], x[..., 1:]
        half_log_2pi = 0.5 * math.log(2 * math.pi)
        log_pv = -0.5 * (v / self.scale).square() - math.log(self.scale) - half_log_2pi
        k = rest.shape[-1]
        log_px = -0.5 * rest.square().sum(-1) * torch.exp(-v) - 0.5 * k * v - k * half_log_2pi
        return log_pv + log_px


class Banana(Target):
    """A Rosenbrock banana: ``U = ((a - x1)^2 + b (x2 - x1^2)^2) / scale``, ``log p~ = -U``.

    ``x1 ~ N(a, scale / 2)``, ``x2 | x1 ~ N(x1^2, scale / (2 b))``, so
    ``log Z = log(pi scale / sqrt(b))``. The defaults are Goodman and Weare's.

    Args:
        a: location of ``x1``.
        b: curvature weight (larger: thinner banana).
        scale: temperature.

    References:
        Goodman, Weare (2010). Ensemble samplers with affine invariance. Commun. Appl. Math.
        Comput. Sci. 5(1) (the Rosenbrock density).

    Example:
        >>> import math, torch
        >>> round(Banana().log_normalizer, 6) == round(math.log(2 * math.pi), 6)
        True
    """

    def __init__(self, a: float = 1.0, b: float = 100.0, scale: float = 20.0) -> None:
        s1, s2 = math.sqrt(scale / 2), math.sqrt(scale / (2 * b))  # sds of x1, x2 | x1
        hi = (abs(a) + 5 * s1) ** 2 + 5 * s2
        log_z = math.log(math.pi * scale / math.sqrt(b))
        super().__init__(2, log_z, [(a - 5 * s1, a + 5 * s1), (-5 * s2, hi)])
        self.a, self.b, self.scale = float(a), float(b), float(scale)

    def log_prob(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        return -((self.a - x1).square() + self.b * (x2 - x1.square()).square()) / self.scale


class LogisticRegression(Target):
    """The posterior of Bayesian logistic regression, ``p(beta | X, y)`` up to ``p(y | X)``.

    ``log p~(beta) = sum_i [y_i eta_i - log(1 + e^eta_i)] + log N(beta; 0, prior_scale^2 I)``
    with ``eta = [1, X] beta`` (an intercept first): ``D = 1 + features of X``.

    Args:
        inputs: ``(N, F)`` covariates (standardise them first).
        labels: ``(N,)`` in ``{0, 1}``.
        prior_scale: standard deviation of the Gaussian prior on every coefficient.

    Example:
        >>> import torch
        >>> t = LogisticRegression(torch.randn(20, 3), (torch.rand(20) > 0.5).float())
        >>> t.features, t(torch.zeros(4, 4)).shape
        (4, torch.Size([4]))
    """

    design: Tensor
    labels: Tensor

    def __init__(self, inputs: Tensor, labels: Tensor, prior_scale: float = 1.0) -> None:
        n = inputs.shape[0]
        super().__init__(inputs.shape[1] + 1)
        design = torch.cat([torch.ones(n, 1, dtype=inputs.dtype), inputs], 1)
        self.register_buffer("design", design.to(torch.float64))
        self.register_buffer("labels", labels.to(torch.float64))
        self.prior_scale = float(prior_scale)

    @classmethod
    def breast_cancer(cls, prior_scale: float = 1.0) -> LogisticRegression:
        """On scikit-learn's breast cancer data (569 rows, 30 standardised features, D = 31).

        scikit-learn is imported only here.
        """
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        x = torch.as_tensor(data.data, dtype=torch.float64)
        x = (x - x.mean(0)) / x.std(0)
        return cls(x, torch.as_tensor(data.target, dtype=torch.float64), prior_scale)

    def log_prob(self, x: Tensor) -> Tensor:
        eta = x @ self.design.to(x.dtype).T  # (*, N)
        y = self.labels.to(x.dtype)
        log_lik = (y * eta - F.softplus(eta)).sum(-1)
        d = self.features
        s = self.prior_scale
        log_prior = -0.5 * (x / s).square().sum(-1) - d * (
            math.log(s) + 0.5 * math.log(2 * math.pi)
        )
        return log_lik + log_prior


TARGETS: dict[str, Callable[[], Target]] = {
    "u1": lambda: Energy("u1"),
    "u2": lambda: Energy("u2"),
    "u3": lambda: Energy("u3"),
    "u4": lambda: Energy("u4"),
    "funnel": Funnel,
    "banana": Banana,
    "logistic_breast_cancer": LogisticRegression.breast_cancer,
}
