"""A fixed whitening of standardised rows: the Gaussian start of a table's flow.

:class:`Whiten` maps rows ``x`` to ``z = L^{-1} x`` with ``L`` the Cholesky factor of the
(shrunk) covariance of the standardised training rows. A table's flow puts it after the
preset's layers, just before the standard normal base (``ModelSpec.whiten``, position
``"last"``): the layers start as the identity (the presets' zero-initialised last conditioner
layers), so before any step the flow is exactly the full-covariance Gaussian fitted to the
training rows, and the layers still see the standardised columns, as without it. (Position
``"first"``, right after ``Standardize``, gives the same start; but the layers then see
whitened rows, where an unusual combination of ordinary values is an extreme coordinate, and an
affine coupling extrapolated one penguins test row to -11,965 nats.)

The covariance is shrunk towards a multiple of the identity (:func:`shrunk_covariance`), the
shrinkage Ledoit-Wolf's (:func:`ledoit_wolf`) or one chosen by validation (:func:`fit_whiten`):
well conditioned even for collinear columns, where the maximum-likelihood covariance is nearly
singular. A training run's start (:func:`start_whiten`) validates the shrinkage on at least
:data:`MIN_VALIDATION_ROWS` validation rows, cross-validates it on the training rows with fewer
(:func:`cross_validated_shrinkage`), and takes Ledoit-Wolf's when the training rows are
numerically rank deficient.

References:
    Ledoit and Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
    Journal of Multivariate Analysis 88 (2004).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.core.defensive import MIN_VALIDATION_ROWS  # one rule: fewer rows vouch for nothing

__all__ = [
    "FULL_RANK",
    "MIN_VALIDATION_ROWS",
    "RIDGE",
    "SHRINKAGES",
    "Whiten",
    "centred_covariance",
    "cross_validated_shrinkage",
    "fit_whiten",
    "gaussian_log_density",
    "ledoit_wolf",
    "shrunk_covariance",
    "start_whiten",
]

#: Added to the diagonal of the shrunk covariance (standardised units): a constant column (all
#: zeros once standardised) keeps a positive variance when the shrinkage comes out as 0.
RIDGE = 1e-6


def centred_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``x`` centred and their maximum-likelihood covariance (``ddof = 0``), in float64.

    Args:
        x: ``(N, D)`` rows.

    Returns:
        ``(N, D)`` centred rows and the ``(D, D)`` covariance.
    """
    a = x.double()
    a = a - a.mean(0)
    return a, a.T @ a / a.shape[0]


def gaussian_log_density(mean: Tensor, chol: Tensor, rows: Tensor) -> Tensor:
    """``log N(rows; mean, L L^T)`` of each row (float64), ``L = chol`` lower-triangular.

    Args:
        mean: ``(D,)`` mean.
        chol: ``(D, D)`` Cholesky factor of the covariance.
        rows: ``(M, D)`` rows.

    Returns:
        ``(M,)`` log-densities.
    """
    sol = torch.linalg.solve_triangular(chol, (rows.double() - mean).T, upper=False)
    half_logdet = torch.log(torch.diagonal(chol)).sum()
    return -0.5 * (sol**2).sum(0) - half_logdet - 0.5 * chol.shape[0] * math.log(2 * math.pi)


def ledoit_wolf(x: Tensor) -> tuple[Tensor, float]:
    """The Ledoit-Wolf shrunk covariance of rows ``x`` (float64).

    ``(1 - s) S + s mu I`` with ``S`` the maximum-likelihood covariance (``ddof = 0``), ``mu``
    its mean eigenvalue and ``s`` in ``[0, 1]`` the estimated optimal shrinkage.

    Args:
        x: ``(N, D)`` rows, ``N >= 1``.

    Returns:
        ``(D, D)`` float64 covariance and the shrinkage ``s``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> cov, s = ledoit_wolf(torch.randn(5000, 3, generator=g))
        >>> bool((cov - torch.eye(3)).abs().max() < 0.05), 0.0 <= s <= 1.0
        (True, True)
    """
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(
            f"ledoit_wolf expects rows of shape (N, D) with N >= 1, got {tuple(x.shape)}"
        )
    a, emp = centred_covariance(x)
    n, d = a.shape
    mu = torch.trace(emp) / d
    sq = a * a
    beta_sum = (sq.T @ sq).sum() / n  # sum_ij mean_k x_ki^2 x_kj^2
    delta_sum = (emp * emp).sum()  # ||S||_F^2
    beta = (beta_sum - delta_sum) / (n * d)
    delta = (delta_sum - 2 * mu * torch.trace(emp) + d * mu * mu) / d  # ||S - mu I||_F^2 / d
    beta = torch.minimum(beta, delta)
    s = float(beta / delta) if float(delta) > 0 else 0.0
    s = min(1.0, max(0.0, s))
    cov = (1 - s) * emp + s * mu * torch.eye(d, dtype=a.dtype)
    return cov, s


class Whiten(Bijection):
    """``z = L^{-1} x`` for a constant (non-trainable) lower-triangular ``L``.

    ``log|det dz/dx| = -sum(log diag L)``. With ``L`` the Cholesky factor of the covariance of
    the rows, ``z`` has identity covariance.

    Args:
        tril: ``(D, D)`` lower-triangular matrix with a positive diagonal (the upper triangle
            is ignored).

    Example:
        >>> b = Whiten(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
        >>> z, ladj = b(torch.tensor([[2.0, 2.0]]))
        >>> z.tolist(), round(ladj.item(), 4)
        ([[1.0, 1.0]], -0.6931)
        >>> b.inverse(z)[0].tolist()
        [[2.0, 2.0]]
    """

    tril: Tensor

    def __init__(self, tril: Tensor) -> None:
        t = torch.as_tensor(tril)
        if t.ndim != 2 or t.shape[0] != t.shape[1] or t.shape[0] < 1:
            raise ValueError(f"expected a square (D, D) matrix, got shape {tuple(t.shape)}")
        diag = torch.diagonal(t)
        if not bool(torch.isfinite(t).all()) or not bool((diag > 0).all()):
            raise ValueError("expected a finite lower-triangular matrix with a positive diagonal")
        super().__init__((int(t.shape[0]),))
        self.register_buffer("tril", torch.tril(t.detach().clone()).float())

    def _ladj(self, x: Tensor) -> Tensor:
        batch = batch_shape_of(x, self.event_shape)
        return (-torch.log(torch.diagonal(self.tril.to(x))).sum()).expand(batch)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = self._ladj(x)  # checks the shape first
        rows = x.reshape(-1, x.shape[-1])
        z = torch.linalg.solve_triangular(self.tril.to(x), rows.T, upper=False).T
        return z.reshape(x.shape), ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        ladj = -self._ladj(z)
        return z @ self.tril.to(z).T, ladj


#: The shrinkages :func:`fit_whiten` chooses from by validation (besides Ledoit-Wolf's own).
SHRINKAGES = (1e-4, 1e-3, 1e-2, 0.1)


def shrunk_covariance(x: Tensor, shrinkage: float) -> Tensor:
    """``(1 - s) S + s mu I + RIDGE I`` of rows ``x`` (float64; see :func:`ledoit_wolf`)."""
    return _shrink(centred_covariance(x)[1], shrinkage)


def _shrink(emp: Tensor, shrinkage: float) -> Tensor:
    eye = torch.eye(emp.shape[0], dtype=emp.dtype)
    mu = torch.trace(emp) / emp.shape[0]
    return (1 - shrinkage) * emp + shrinkage * mu * eye + RIDGE * eye


def fit_whiten(
    rows: Tensor, val: Tensor | None = None, diagonal: Tensor | None = None
) -> tuple[Whiten, float]:
    """The :class:`Whiten` of rows (standardised training rows): ``L`` the Cholesky factor of
    their :func:`shrunk_covariance`.

    The shrinkage is Ledoit-Wolf's, or with validation rows ``val`` the one of
    :data:`SHRINKAGES` and Ledoit-Wolf's whose Gaussian gives ``val`` the lowest NLL (training
    runs choose through :func:`start_whiten`).

    Args:
        rows: ``(N, D)`` rows.
        val: ``(M, D)`` validation rows in the same units, or ``None``.
        diagonal: ``(D,)`` variances added to the covariance's diagonal (the noise of training
            with noise, whose smoothed rows have that covariance), or ``None``.

    Returns:
        The bijection and the shrinkage used.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(400, 2, generator=g) @ torch.tensor([[1.0, 0.9], [0.0, 0.4]])
        >>> w, s = fit_whiten(x, val=x[:50])
        >>> z = w(x)[0]
        >>> bool(((z.T @ z) / 400 - torch.eye(2)).abs().max() < 0.1), s in SHRINKAGES
        (True, True)
    """
    s = ledoit_wolf(rows)[1]
    if val is not None and val.shape[0] == 0:
        val = None
    candidates = [s] if val is None else [s, *SHRINKAGES]
    mean = rows.double().mean(0)
    emp = centred_covariance(rows)[1]
    best: tuple[float, float, Tensor] | None = None
    extra = 0.0 if diagonal is None else torch.diag(diagonal.double())
    for c in candidates:
        chol = torch.linalg.cholesky(_shrink(emp, c) + extra)
        score = 0.0 if val is None else -float(gaussian_log_density(mean, chol, val).mean())
        if best is None or score < best[0]:
            best = (score, c, chol)
    assert best is not None
    return Whiten(best[2]), best[1]


#: The smallest eigenvalue of the standardised training rows' covariance (``ddof = 0``, in units
#: of the columns' variance) at and above which :func:`start_whiten` chooses the shrinkage by
#: validation: ten times :data:`RIDGE`, so that the rows themselves, not the ridge, decide every
#: direction's variance.
FULL_RANK = 10 * RIDGE


def cross_validated_shrinkage(rows: Tensor, folds: int = 10) -> float:
    """The shrinkage of :data:`SHRINKAGES` and Ledoit-Wolf's whose Gaussian scores best in
    ``folds``-fold cross-validation on ``rows``.

    The folds are contiguous blocks of rows (the sizes of ``numpy.array_split``; the rows of a
    split are already shuffled), at most one per row. In each fold the Gaussian (mean and
    :func:`shrunk_covariance`) is fitted to the other rows, the Ledoit-Wolf candidate with the
    shrinkage estimated on them, and scored by the summed log-density of the held-out rows.

    Args:
        rows: ``(N, D)`` rows, ``N >= 2``.
        folds: the number of folds (``min(folds, N)`` are used), at least 2.

    Returns:
        The chosen shrinkage (for the Ledoit-Wolf candidate: Ledoit-Wolf's on all of ``rows``).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(300, 2, generator=g) @ torch.tensor([[1.0, 0.99], [0.0, 0.1]])
        >>> cross_validated_shrinkage(x) in SHRINKAGES  # strongly correlated: little shrinkage
        True
    """
    n = rows.shape[0]
    if rows.ndim != 2 or n < 2 or folds < 2:
        raise ValueError(
            f"cross_validated_shrinkage expects (N, D) rows with N >= 2 and folds >= 2, got "
            f"{tuple(rows.shape)} and {folds}"
        )
    x = rows.double()
    blocks = torch.tensor_split(torch.arange(n), min(folds, n))
    scores: dict[float | None, float] = {}
    for candidate in (None, *SHRINKAGES):  # None: Ledoit-Wolf's, estimated in each fold
        total = 0.0
        for held in blocks:
            keep = torch.ones(n, dtype=torch.bool)
            keep[held] = False
            fit = x[keep]
            s = ledoit_wolf(fit)[1] if candidate is None else candidate
            chol, info = torch.linalg.cholesky_ex(shrunk_covariance(fit, s))
            if int(info) != 0:
                total = math.inf
                break
            total -= float(gaussian_log_density(fit.mean(0), chol, x[held]).sum())
        scores[candidate] = total
    best = min(scores, key=lambda c: scores[c])
    return ledoit_wolf(x)[1] if best is None else best


def start_whiten(rows: Tensor, val: Tensor | None) -> tuple[Whiten, float, str]:
    """The whitening a table's flow starts from (the training runs' ``--whiten``).

    When the training covariance's smallest eigenvalue is at least :data:`FULL_RANK`, the
    shrinkage is chosen by the validation rows (:func:`fit_whiten` with ``val``) if there are at
    least :data:`MIN_VALIDATION_ROWS` of them, else by cross-validation on the training rows
    (:func:`cross_validated_shrinkage`); on numerically rank-deficient rows it is Ledoit-Wolf's.
    Ledoit-Wolf over-shrinks strongly correlated tables (4-6 nats on breast_cancer, 1-2 on
    star98), which NICE, whose only change of volume is a diagonal scaling, cannot undo; on
    rank-deficient rows (macrodata seed 0, smallest eigenvalue 8e-7) a shrinkage chosen by 16
    validation rows came out near 0 and a test row off the training rows' subspace cost the
    flows 130-484,000 nats; two validation rows (linnerud) chose a start 9.5 nats worse than
    Ledoit-Wolf's on the test rows (``benchmarks/results/small_tables.md``).

    Args:
        rows: ``(N, D)`` standardised training rows, ``N >= 2``.
        val: ``(M, D)`` validation rows in the same units, or ``None``.

    Returns:
        The bijection, the shrinkage, and how it was chosen: ``"validated"``,
        ``"cross-validated"`` or ``"ledoit-wolf"``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> a = torch.randn(200, 1, generator=g)
        >>> full = torch.cat([a, a + 0.5 * torch.randn(200, 1, generator=g)], 1)
        >>> start_whiten(full, full[:20])[2]
        'validated'
        >>> start_whiten(full, full[:2])[2]  # too few validation rows
        'cross-validated'
        >>> start_whiten(torch.cat([a, 2 * a], 1), full[:20])[2]  # collinear
        'ledoit-wolf'
    """
    smallest = float(torch.linalg.eigvalsh(centred_covariance(rows)[1])[0])
    if not smallest >= FULL_RANK:
        whiten, s = fit_whiten(rows)
        return whiten, s, "ledoit-wolf"
    if val is None or val.shape[0] < MIN_VALIDATION_ROWS:
        s = cross_validated_shrinkage(rows)
        chol = torch.linalg.cholesky(shrunk_covariance(rows, s))
        return Whiten(chol), s, "cross-validated"
    whiten, s = fit_whiten(rows, val)
    return whiten, s, "validated"
