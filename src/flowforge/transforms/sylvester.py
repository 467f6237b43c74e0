"""Sylvester flows: ``x = z + Q R h(R~ Q^T z + b)``, defined in the sampling direction."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of
from flowforge.functional.scalar_root import Activation, solve_unit_plus_activation
from flowforge.transforms.amortised import AmortisedParameters

KINDS = ("orthogonal", "householder", "triangular")


def _mv(m: Tensor, v: Tensor) -> Tensor:
    """``m @ v`` over leading batch dims: ``(*, P, Q) x (*, Q) -> (*, P)``."""
    return (m @ v.unsqueeze(-1)).squeeze(-1)


def householder_product(v: Tensor) -> Tensor:
    """``Q = H_1 ... H_K``, ``H_k = I - 2 v_k v_k^T / |v_k|^2``: an orthogonal ``(*, D, D)``.

    Args:
        v: the reflection vectors, ``(*, K, D)``.

    Example:
        >>> import torch
        >>> q = householder_product(torch.randn(3, 4, dtype=torch.float64))
        >>> torch.allclose(q @ q.T, torch.eye(4, dtype=torch.float64))
        True
    """
    d = v.shape[-1]
    q = torch.eye(d, dtype=v.dtype, device=v.device).expand(*v.shape[:-2], d, d)
    for k in range(v.shape[-2]):
        vk = v[..., k, :]  # (*, D)
        vk = vk / vk.norm(dim=-1, keepdim=True)
        q = q - 2.0 * _mv(q, vk).unsqueeze(-1) * vk.unsqueeze(-2)  # Q H_k
    return q


def orthonormal_columns(a: Tensor, max_steps: int | None = None) -> Tensor:
    """Orthonormal columns from ``a`` by Bjorck's iteration: the polar factor ``a (a^T a)^-1/2``.

    ``Q_0 = a / |a|_F`` puts every singular value in ``[0, 1]``, where the iteration
    ``Q_{k+1} = Q_k (I + (I - Q_k^T Q_k) / 2)`` converges; it runs until
    ``max |Q^T Q - I| <= sqrt(eps)`` (every matrix of the batch), then one step more: the
    convergence is quadratic, so that step takes the error down to rounding. Every step is a
    polynomial in ``a``, so the gradient through the steps is finite for any ``a``. A small
    singular value ``s`` of ``Q_0`` grows by at most 1.5 a step, so a near-singular ``a`` takes
    about ``log(1/s) / log 1.5`` steps more; its gradient is that of the exact polar factor,
    large but finite (up to about ``1/s`` for ``M < D``; for ``M = D`` about
    ``1/(s_i + s_j)`` over pairs, so one small ``s`` is harmless). A numerically rank-deficient ``a`` (a singular value
    below about ``eps |a|_F``, or ``|a|_F < eps``) has no continuous orthonormalisation: a
    matrix still unconverged after ``max_steps`` gets the polar factor of an SVD instead, so
    its columns are orthonormal all the same, and passes no gradient to ``a``.

    Args:
        a: ``(*, D, M)`` with ``M <= D``.
        max_steps: the step limit (default ``log(1/eps) / log 1.5 + 12``: 52 in float32, 101
            in float64).

    Returns:
        ``(*, D, M)`` with orthonormal columns; equal to ``a`` where ``a`` has them already.

    References:
        Bjorck, Bowie (1971). An iterative algorithm for computing the best estimate of an
        orthogonal matrix. SIAM J. Numer. Anal. 8(2); its use for Sylvester flows: van den
        Berg et al. (2018), arXiv:1803.05649.

    Example:
        >>> import torch
        >>> a = torch.randn(5, 3, dtype=torch.float64)
        >>> q = orthonormal_columns(a)
        >>> torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64), atol=1e-14)
        True
        >>> bool((torch.diagonal(a.T @ q) > 0).all())  # the nearest: no column flips sign
        True
    """
    eps = torch.finfo(a.dtype).eps
    tol = math.sqrt(eps)
    limit = math.ceil(math.log(1 / eps) / math.log(1.5)) + 12 if max_steps is None else max_steps
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    q = a / torch.linalg.vector_norm(a, dim=(-2, -1), keepdim=True).clamp_min(eps)
    for _ in range(limit):
        gram = q.mT @ q
        if bool(((gram - eye).abs().amax((-2, -1)) <= tol).all()):
            break
        q = q @ (1.5 * eye - 0.5 * gram)
    q = q @ (1.5 * eye - 0.5 * (q.mT @ q))
    unconverged = (q.mT @ q - eye).abs().amax((-2, -1)) > tol  # (*,)
    if bool(unconverged.any()):
        with torch.no_grad():
            u, _, vh = torch.linalg.svd(a, full_matrices=False)
        q = torch.where(unconverged[..., None, None], u @ vh, q)
    return q


class Sylvester(Bijection):
    """A Sylvester layer ``x = z + Q R h(R~ Q^T z + b)``: sampling direction ``z -> x``.

    ``Q`` is ``D x M`` with orthonormal columns and ``R``, ``R~`` are ``M x M`` upper
    triangular, so by Sylvester's determinant identity the log-determinant is analytic,
    ``sum_i log(1 + h'(pre_i) R_ii R~_ii)`` with ``pre = R~ Q^T z + b``. The diagonals are
    ``tanh`` of free parameters, so ``R_ii R~_ii > -1`` and, with ``h' in (0, 1]``, every factor
    is positive: the layer is invertible. Three ways to get ``Q`` (``kind``):

    - ``"orthogonal"``: a free ``D x M`` matrix, ``M = rank``, orthonormalised by Bjorck's
      iteration (:func:`orthonormal_columns`, as in the paper; finite gradients everywhere);
    - ``"householder"``: a product of ``reflections`` Householder reflections, ``M = D``;
    - ``"triangular"``: the identity, or the reversal permutation with ``flip=True`` (the
      paper alternates them between layers), ``M = D``.

    The density direction is exact to rounding: with ``y = Q^T z``,
    ``Q^T x = y + R h(R~ y + b)`` is upper triangular in ``y``, so back substitution solves it
    one component at a time, from ``y_M`` to ``y_1``, each a strictly increasing scalar equation
    ``y_i + R_ii h(R~_ii y_i + e_i) = t_i`` (bracketed Newton, ``M`` sequential solves); then
    ``z = x - Q R h(R~ y + b)``. Gradients follow the implicit function theorem.

    Args:
        features: dimension ``D``; events have shape ``(*, D)``.
        kind: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        rank: ``M`` for ``"orthogonal"`` (``1 <= M <= D``, default ``D``).
        reflections: number of Householder reflections for ``"householder"`` (default ``D``).
        flip: for ``"triangular"``, ``Q`` the reversal permutation instead of the identity.
        context: size ``C`` of a context ``(*, C)`` that shifts every parameter through a
            network (amortised inference, as in the paper's VAEs); 0: unconditional.
        hidden: hidden sizes of that network.
        activation: ``"tanh"`` or ``"leaky_relu"``.

    References:
        van den Berg, Hasenclever, Tomczak, Welling (2018). Sylvester Normalizing Flows for
        Variational Inference. arXiv:1803.05649.

    Example:
        >>> import torch
        >>> layer = Sylvester(4, kind="householder", reflections=2).double()
        >>> z = torch.randn(3, 4, dtype=torch.float64)
        >>> x, ladj = layer.inverse(z)
        >>> z2, ladj2 = layer(x)
        >>> torch.allclose(z2, z), torch.allclose(ladj2, -ladj)
        (True, True)
    """

    def __init__(
        self,
        features: int,
        kind: str = "orthogonal",
        rank: int | None = None,
        reflections: int | None = None,
        flip: bool = False,
        *,
        context: int = 0,
        hidden: Sequence[int] = (64,),
        activation: str = "tanh",
    ) -> None:
        super().__init__((features,))
        d = int(features)
        if kind not in KINDS:
            raise ValueError(f"expected kind in {KINDS}, got {kind!r}")
        m = d if rank is None or kind != "orthogonal" else int(rank)
        if not 1 <= m <= d:
            raise ValueError(f"expected 1 <= rank <= features = {d}, got {rank}")
        k = d if reflections is None else int(reflections)
        if kind == "householder" and k < 1:
            raise ValueError(f"expected reflections >= 1, got {reflections}")
        self.kind, self.rank, self.flip = kind, m, bool(flip)
        self.activation = Activation(activation)
        self.context = int(context)
        shapes: dict[str, tuple[int, ...]] = {"r": (m, m), "r_tilde": (m, m), "b": (m,)}
        init = {
            "r": 0.01 * torch.randn(m, m) + torch.diag(0.1 * torch.randn(m)),
            "r_tilde": 0.01 * torch.randn(m, m) + torch.diag(torch.randn(m)),
            "b": 0.1 * torch.randn(m),
        }
        if kind == "orthogonal":
            shapes["q"] = (d, m)
            init["q"] = torch.randn(d, m)
        elif kind == "householder":
            shapes["v"] = (k, d)
            init["v"] = torch.randn(k, d)
        self.params = AmortisedParameters(shapes, init, context=context, hidden=hidden)
        self._upper: Tensor
        self.register_buffer("_upper", torch.ones(m, m).triu(1), persistent=False)

    def matrices(
        self, context: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """``Q`` (``None`` for the triangular kind), ``R``, ``R~`` and ``b``.

        Returns:
            ``(*, D, M)`` (or ``None``), ``(*, M, M)``, ``(*, M, M)``, ``(*, M)``.
        """
        p = self.params(context if self.context else None)
        upper = self._upper.to(p["r"].dtype)

        def triangular(raw: Tensor) -> Tensor:
            return raw * upper + torch.diag_embed(torch.tanh(torch.diagonal(raw, 0, -2, -1)))

        q: Tensor | None = None
        if self.kind == "orthogonal":
            q = orthonormal_columns(p["q"])
        elif self.kind == "householder":
            q = householder_product(p["v"])
        return q, triangular(p["r"]), triangular(p["r_tilde"]), p["b"]

    def _q_t(self, q: Tensor | None, v: Tensor) -> Tensor:
        """``Q^T v``: ``(*, D) -> (*, M)``."""
        if q is None:
            return v.flip(-1) if self.flip else v
        return (v.unsqueeze(-2) @ q).squeeze(-2)

    def _q(self, q: Tensor | None, y: Tensor) -> Tensor:
        """``Q y``: ``(*, M) -> (*, D)``."""
        if q is None:
            return y.flip(-1) if self.flip else y
        return _mv(q, y)

    def _ladj(self, pre: Tensor, r: Tensor, r_tilde: Tensor) -> Tensor:
        diag = torch.diagonal(r, 0, -2, -1) * torch.diagonal(r_tilde, 0, -2, -1)  # (*, M)
        return torch.log1p(self.activation.derivative(pre) * diag).sum(-1)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``x = z + Q R h(R~ Q^T z + b)``; returns ``(x, log|det dx/dz|)``."""
        batch_shape_of(z, self.event_shape)
        q, r, r_tilde, b = self.matrices(context)
        pre = _mv(r_tilde, self._q_t(q, z)) + b  # (*, M)
        x = z + self._q(q, _mv(r, self.activation(pre)))
        return x, self._ladj(pre, r, r_tilde).expand(x.shape[:-1])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``z`` from ``x`` by back substitution, ``M`` scalar root finds.

        Returns:
            ``(z, log|det dz/dx|)``, shapes ``(*, D)`` and ``(*)``.
        """
        batch_shape_of(x, self.event_shape)
        q, r, r_tilde, b = self.matrices(context)
        t = self._q_t(q, x)  # Q^T x = y + R h(R~ y + b), (*, M)
        m = self.rank
        batch = torch.broadcast_shapes(t.shape[:-1], r.shape[:-2])
        t, b = t.expand(*batch, m), b.expand(*batch, m)
        r, r_tilde = r.expand(*batch, m, m), r_tilde.expand(*batch, m, m)
        ys: list[Tensor] = []  # y_M, y_{M-1}, ..., each (*,)
        hs: list[Tensor] = []  # h(pre_j) for the same components
        for i in range(m - 1, -1, -1):
            later = torch.stack(ys[::-1], -1) if ys else t.new_zeros(*batch, 0)  # y_{i+1..M}
            h_later = torch.stack(hs[::-1], -1) if hs else t.new_zeros(*batch, 0)
            e = b[..., i] + (r_tilde[..., i, i + 1 :] * later).sum(-1)
            rhs = t[..., i] - (r[..., i, i + 1 :] * h_later).sum(-1)
            y = solve_unit_plus_activation(
                rhs, r[..., i, i], r_tilde[..., i, i], e, self.activation
            )
            ys.append(y)
            hs.append(self.activation(r_tilde[..., i, i] * y + e))
        y_all = torch.stack(ys[::-1], -1)  # (*, M)
        pre = _mv(r_tilde, y_all) + b
        z = x - self._q(q, _mv(r, self.activation(pre)))
        return z, -self._ladj(pre, r, r_tilde).expand(z.shape[:-1])

    def extra_repr(self) -> str:
        return (
            f"features={self.event_shape[0]}, kind={self.kind}, rank={self.rank}, "
            f"context={self.context}"
        )


__all__ = ["KINDS", "Sylvester", "householder_product", "orthonormal_columns"]
