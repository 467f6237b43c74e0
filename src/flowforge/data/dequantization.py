"""Dequantization of integer levels: uniform noise, or a learned noise flow (variational).

Discrete data ``v`` in ``{0, ..., K-1}^D`` (``K`` levels per value, ``D`` values per example)
are modelled through a density ``p`` of ``u = (v + e) / K`` on ``[0, 1)^D``, with noise ``e`` in
``(0, 1)^D`` drawn from a dequantizer ``q(e | v)``. For every ``q``,

    ``log P(v) >= E_q[ log p(u) - D log K - log q(e | v) ]``  (nats per example),

the ``-D log K`` being the Jacobian of ``e -> u``. Uniform noise (``log q = 0``) gives the usual
bits/dim of dequantized data; a learned ``q`` trained jointly with ``p`` (Flow++'s variational
dequantization) tightens the bound. Both dequantizers have the same interface
(``sample(v) -> (u, log_q)``, ``log_prob(v, e)``), so objectives and evaluation take either.

:func:`dequantized_log_likelihood` reports the bound and its importance-sampled estimate
``log (1/S) sum_s exp(w_s)``, ``w_s = log p(u_s) - D log K - log q(e_s | v)``, which is also a
lower bound of ``log P(v)`` in expectation, never looser than the plain bound, and tends to
``log P(v)`` as the number of samples ``S`` grows.

References:
    Theis, van den Oord, Bethge (2016). A note on the evaluation of generative models.
    arXiv:1511.01844 (uniform dequantization).
    Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative Models
    with Variational Dequantization and Architecture Design. arXiv:1902.00275.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.core.flow import Flow
from flowforge.distributions.base import ConditionalDiagNormal
from flowforge.flows.coupling import RealNVP

from .base import DataError, dequantize

__all__ = [
    "DequantizedLikelihood",
    "Dequantizer",
    "UniformDequantizer",
    "VariationalDequantizer",
    "conv_encoder",
    "dequantized_log_likelihood",
]


def _event(shape: int | Sequence[int]) -> tuple[int, ...]:
    dims = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not dims or min(dims) < 1:
        raise DataError(f"dequantizer: expected a non-empty event shape of sizes >= 1, got {dims}")
    return dims


def _in_bin(v: Tensor, e: Tensor, levels: int) -> Tensor:
    """``u = (v + e) / K`` kept inside its bin ``[v / K, (v + 1) / K)`` as floats.

    A saturated sigmoid gives ``e = 1`` (and rounding of ``v + e`` can too), which would put
    ``u`` on the next bin's edge, or on ``1`` for the top level.
    """
    u = (v + e) / levels
    upper = torch.nextafter((v + 1) / levels, torch.zeros((), dtype=u.dtype, device=u.device))
    return torch.minimum(u, upper)


class Dequantizer(nn.Module):
    """The interface of a dequantizer ``q(e | v)`` of integer levels ``v`` over ``(N, *event)``.

    Args:
        shape: the event shape of one example (``(C, H, W)`` for images, ``(D,)`` vectors).
        levels: the number of levels ``K`` per value (``v`` in ``0 .. K-1``).

    Attributes:
        event_shape: that shape.
        levels: ``K``.
        dim: ``D``, the number of values of one example.
    """

    def __init__(self, shape: int | Sequence[int], levels: int) -> None:
        super().__init__()
        if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
            raise DataError(f"dequantizer: levels must be an integer >= 2, got {levels!r}")
        self.event_shape = _event(shape)
        self.levels = levels
        self.dim = math.prod(self.event_shape)

    def _check(self, v: Tensor) -> int:
        """The batch size ``N`` of ``v`` ``(N, *event)``."""
        k = len(self.event_shape)
        if v.dim() != k + 1 or tuple(v.shape[1:]) != self.event_shape:
            expected = ", ".join(["N", *(str(s) for s in self.event_shape)])
            raise DataError(f"dequantizer: expected v of shape ({expected}), got {tuple(v.shape)}")
        return v.shape[0]

    def sample(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Dequantized ``u = (v + e) / K`` with ``e ~ q(. | v)``, reparameterised.

        Args:
            v: ``(N, *event)`` integer levels ``0 .. K-1`` (a floating dtype).

        Returns:
            ``(u, log_q)``: ``u`` ``(N, *event)`` in ``[0, 1)`` and ``log q(e | v)`` ``(N,)`` in
            nats (the density of the noise ``e``, not of ``u``).
        """
        raise NotImplementedError

    def log_prob(self, v: Tensor, e: Tensor) -> Tensor:
        """``log q(e | v)`` ``(N,)`` of noise ``e`` ``(N, *event)`` in ``(0, 1)``."""
        raise NotImplementedError


class UniformDequantizer(Dequantizer):
    """Uniform noise ``e ~ U(0, 1)^D``: ``log q = 0``; no parameters.

    Args:
        shape: the event shape of one example.
        levels: the number of levels ``K``.

    References:
        Theis, van den Oord, Bethge (2016). A note on the evaluation of generative models.
        arXiv:1511.01844.

    Example:
        >>> import torch
        >>> deq = UniformDequantizer((1, 2, 2), levels=17)
        >>> u, log_q = deq.sample(torch.tensor([0.0, 5.0, 16.0, 3.0]).reshape(1, 1, 2, 2))
        >>> u.shape, log_q
        (torch.Size([1, 1, 2, 2]), tensor([0.]))
    """

    def sample(self, v: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``u = (v + U(0, 1)) / K`` (:func:`~flowforge.data.dequantize`) and ``log_q = 0``.

        Args:
            v: ``(N, *event)`` integer levels.
            generator: random generator of the noise.

        Returns:
            ``(u, log_q)`` of shapes ``(N, *event)`` and ``(N,)``.
        """
        n = self._check(v)
        u = dequantize(v, self.levels, generator)
        return u, u.new_zeros(n)

    def log_prob(self, v: Tensor, e: Tensor) -> Tensor:
        """``0`` for every example (``e`` is not checked to lie in ``(0, 1)``)."""
        n = self._check(v)
        return e.new_zeros(n)

    def extra_repr(self) -> str:
        return f"shape={self.event_shape}, levels={self.levels}"


def conv_encoder(shape: Sequence[int], context: int, hidden: int = 32) -> nn.Module:
    """A small conv net from integer-level images to a context vector for the noise flow.

    ``conv 3x3 (hidden) -> ReLU -> conv 3x3 stride 2 (hidden) -> ReLU -> flatten -> linear``:
    ``(N, C, H, W) -> (N, context)``, for images where the flattened levels (``D`` context
    values) would make the noise flow's conditioner too wide.

    Args:
        shape: the image event shape ``(C, H, W)``.
        context: the output size.
        hidden: channels of both convolutions.

    Example:
        >>> import torch
        >>> conv_encoder((3, 8, 8), 16)(torch.zeros(2, 3, 8, 8)).shape
        torch.Size([2, 16])
    """
    dims = _event(shape)
    if len(dims) != 3:
        raise DataError(f"conv_encoder: expected an image shape (C, H, W), got {dims}")
    c, h, w = dims
    cells = hidden * ((h + 1) // 2) * ((w + 1) // 2)
    return nn.Sequential(
        nn.Conv2d(c, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(cells, context),
    )


class VariationalDequantizer(Dequantizer):
    """Learned noise ``e = sigmoid(y)``, ``y ~ r(y | c(v))`` a conditional flow on ``R^D``.

    ``log q(e | v) = log r(y | c) - sum_i log sigmoid'(y_i)`` with
    ``log sigmoid'(y) = -softplus(y) - softplus(-y)``, computed from ``y`` (finite for any
    network output). The context ``c(v)`` is the levels scaled to ``[-1, 1]``,
    ``2 v / (K - 1) - 1``, flattened (``D`` values), or an ``encoder``'s output.

    The default noise flow is a conditional :class:`~flowforge.flows.RealNVP` (one pass in
    both directions) over ``D`` values with a :class:`~flowforge.distributions.ConditionalDiagNormal`
    base (a per-value mean and scale given ``c``, starting at the standard normal). Its
    coupling networks see ``D / 2 + |c|`` inputs, so one layer costs
    ``O((D / 2 + |c|) H + H^2 + D H)`` weights and operations per example for hidden width
    ``H``: with the flattened levels as context (``|c| = D``) that is ``~2.5 D H``, fine for
    8x8 digits (``D = 64``) or MNIST (``D = 784``, ``H = 256``: ~0.5M weights per layer) but
    ~4M weights per layer on CIFAR-10 (``D = 3072``, ``H = 512``) without any spatial weight
    sharing; there pass ``encoder=conv_encoder(shape, context)`` with a small ``context``, or
    a conditional noise ``flow`` of your own.

    Args:
        shape: the event shape of one example.
        levels: the number of levels ``K``.
        flow: the conditional noise flow ``r(y | c)`` over ``(D,)`` (or over ``shape``) with
            context size ``|c|``; default: see above.
        encoder: a module ``(N, *shape) -> (N, context)`` applied to the scaled levels;
            ``None``: the flattened scaled levels.
        context: the encoder's output size (needed with ``encoder``).
        transforms: coupling layers of the default flow.
        hidden: hidden sizes of the default flow's coupling networks.

    References:
        Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative
        Models with Variational Dequantization and Architecture Design. arXiv:1902.00275.

    Example:
        >>> import torch
        >>> deq = VariationalDequantizer((1, 4, 4), levels=17, transforms=2, hidden=(16,))
        >>> v = torch.randint(0, 17, (3, 1, 4, 4)).float()
        >>> u, log_q = deq.sample(v)
        >>> u.shape, log_q.shape, bool(((u >= v / 17) & (u < (v + 1) / 17)).all())
        (torch.Size([3, 1, 4, 4]), torch.Size([3]), True)
        >>> e = u * 17 - v  # the noise, back from u
        >>> torch.allclose(deq.log_prob(v, e), log_q, atol=1e-3)
        True
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        levels: int,
        flow: Flow | None = None,
        encoder: nn.Module | None = None,
        context: int | None = None,
        transforms: int = 4,
        hidden: Sequence[int] = (128, 128),
    ) -> None:
        super().__init__(shape, levels)
        if encoder is not None and context is None:
            raise DataError("VariationalDequantizer: an encoder needs its output size context=")
        width = self.dim if encoder is None else int(context or 0)
        if flow is None:
            if self.dim < 2:
                raise DataError("VariationalDequantizer: the default noise flow needs D >= 2")
            base = ConditionalDiagNormal(self.dim, width)
            flow = RealNVP(
                features=self.dim, context=width, transforms=transforms, hidden=hidden, base=base
            )
        noise_shape = tuple(flow.event_shape)
        if math.prod(noise_shape) != self.dim:
            raise DataError(
                f"VariationalDequantizer: the noise flow's event shape {noise_shape} does not "
                f"hold D = {self.dim} values"
            )
        if flow.context != width:
            raise DataError(
                f"VariationalDequantizer: the noise flow takes a context of size {flow.context}, "
                f"but the context has {width} values"
            )
        self.flow = flow
        self.encoder = encoder
        self.noise_shape = noise_shape

    def _dtype(self, v: Tensor) -> torch.dtype:
        ref = next(iter(self.parameters()), None)
        return ref.dtype if ref is not None else v.dtype

    def features(self, v: Tensor) -> Tensor:
        """The context ``c(v)`` ``(N, |c|)`` of the noise flow for levels ``v`` ``(N, *event)``."""
        n = self._check(v)
        scaled = 2.0 * v.to(self._dtype(v)) / (self.levels - 1) - 1.0
        if self.encoder is None:
            return scaled.reshape(n, self.dim)
        return self.encoder(scaled)

    def sample(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised ``u = (v + e) / K``, ``e ~ q(. | v)``, and ``log q(e | v)``.

        Args:
            v: ``(N, *event)`` integer levels ``0 .. K-1``.

        Returns:
            ``(u, log_q)`` of shapes ``(N, *event)`` and ``(N,)``; each ``u`` lies in its bin
            ``[v / K, (v + 1) / K)`` (a saturated sigmoid's ``e = 0`` or ``1`` is moved just
            inside; ``log_q`` is the density at the unsaturated ``y``).
        """
        n = self._check(v)
        y, log_r = self.flow.sample_and_log_prob(1, self.features(v))  # (1, N, *noise), (1, N)
        y = y.reshape(n, self.dim)
        log_q = log_r.reshape(n) + (F.softplus(y) + F.softplus(-y)).sum(-1)
        # a saturated sigmoid gives e = 0: keep u > 0 so that a Logit(0) stays finite
        e = torch.sigmoid(y).clamp_min(torch.finfo(y.dtype).tiny).reshape(n, *self.event_shape)
        return _in_bin(v.to(e.dtype), e, self.levels), log_q

    def log_prob(self, v: Tensor, e: Tensor) -> Tensor:
        """``log q(e | v)`` ``(N,)`` of noise ``e`` ``(N, *event)``.

        ``e`` is clamped into ``[tiny, 1 - eps / 2]`` of its dtype first (so the noise that
        :meth:`sample` returns when the sigmoid saturates still has a finite density).
        """
        n = self._check(v)
        if tuple(e.shape) != tuple(v.shape):
            raise DataError(f"dequantizer: e has shape {tuple(e.shape)}, v {tuple(v.shape)}")
        fi = torch.finfo(e.dtype)
        e = e.reshape(n, self.dim).clamp(fi.tiny, 1.0 - fi.eps / 2)
        log_e, log_1me = torch.log(e), torch.log1p(-e)
        y = (log_e - log_1me).reshape(n, *self.noise_shape)
        return self.flow.log_prob(y, self.features(v)) - (log_e + log_1me).sum(-1)

    def extra_repr(self) -> str:
        return f"shape={self.event_shape}, levels={self.levels}"


@dataclass
class DequantizedLikelihood:
    """Per-example log-likelihood bounds of discrete data and their bits/dim.

    Attributes:
        bound: ``(N,)`` float64, the mean over ``S`` samples of
            ``w = log p(u) - D log K - log q(e | v)`` (nats per example).
        importance: ``(N,)`` float64, ``logsumexp_s w_s - log S``.
        samples: ``S``.
        dim: ``D``.
        levels: ``K``.
    """

    bound: Tensor
    importance: Tensor
    samples: int
    dim: int
    levels: int

    def _bpd(self, ll: Tensor) -> tuple[float, float]:
        per = -ll / (self.dim * math.log(2.0))
        err = 2 * float(per.std(unbiased=True)) / math.sqrt(per.numel()) if per.numel() > 1 else 0
        return float(per.mean()), err

    @property
    def bound_bpd(self) -> float:
        """Mean bits/dim of the bound, ``-mean(bound) / (D log 2)``."""
        return self._bpd(self.bound)[0]

    @property
    def importance_bpd(self) -> float:
        """Mean bits/dim of the importance-sampled estimate."""
        return self._bpd(self.importance)[0]

    @property
    def bound_bpd_err(self) -> float:
        """Two standard errors (over examples) of :attr:`bound_bpd`."""
        return self._bpd(self.bound)[1]

    @property
    def importance_bpd_err(self) -> float:
        """Two standard errors (over examples) of :attr:`importance_bpd`."""
        return self._bpd(self.importance)[1]


@torch.no_grad()
def dequantized_log_likelihood(
    flow: nn.Module,
    dequantizer: Dequantizer,
    v: Tensor,
    samples: int = 16,
    batch_size: int = 1024,
) -> DequantizedLikelihood:
    """The dequantization bound of ``log P(v)`` and its importance-sampled estimate.

    For each example, ``S = samples`` noises ``e_s ~ q(. | v)`` give
    ``w_s = log p(u_s) - D log K - log q(e_s | v)`` with ``u_s = (v + e_s) / K``; the bound is
    ``mean_s w_s``, the importance-sampled estimate ``logsumexp_s w_s - log S``. Both flow and
    dequantizer are evaluated in evaluation mode (their modes are restored afterwards).

    Args:
        flow: the density ``p`` of ``u`` (anything with ``log_prob(u) -> (B,)``), with every
            pre-transform (``Logit``) inside it.
        dequantizer: a :class:`UniformDequantizer` or :class:`VariationalDequantizer`.
        v: ``(N, *event)`` integer levels ``0 .. K-1``.
        samples: ``S >= 1`` noise samples per example.
        batch_size: examples per pass (each pass evaluates ``batch_size * S`` rows).

    Returns:
        A :class:`DequantizedLikelihood` (per-example float64 values on the CPU).

    Raises:
        FloatingPointError: if any ``w_s`` is not finite (a NaN is an error, never skipped).

    Example:
        >>> import torch
        >>> class Uniform(nn.Module):  # the uniform density on [0, 1)^D
        ...     def log_prob(self, u):
        ...         return u.new_zeros(u.shape[0])
        >>> deq = UniformDequantizer((1, 2, 2), 17)
        >>> res = dequantized_log_likelihood(Uniform(), deq, torch.zeros(3, 1, 2, 2), samples=4)
        >>> round(res.importance_bpd, 4), round(res.bound_bpd, 4)  # log2(17)
        (4.0875, 4.0875)
    """
    if samples < 1:
        raise ValueError(f"dequantized_log_likelihood: samples must be >= 1, got {samples}")
    n = dequantizer._check(v)
    shift = dequantizer.dim * math.log(dequantizer.levels)
    modes = (flow.training, dequantizer.training)
    flow.eval()
    dequantizer.eval()
    bounds, estimates = [], []
    try:
        for i in range(0, n, batch_size):
            vb = v[i : i + batch_size]
            b = vb.shape[0]
            rep = vb.repeat(samples, *([1] * (vb.dim() - 1)))  # (S b, *event), sample-major
            u, log_q = dequantizer.sample(rep)
            w = (flow.log_prob(u) - shift - log_q).double().reshape(samples, b)  # type: ignore[operator]
            if not bool(torch.isfinite(w).all()):
                bad = int((~torch.isfinite(w)).any(0).sum())
                raise FloatingPointError(
                    f"dequantized_log_likelihood: {bad} example(s) of rows {i}..{i + b - 1} "
                    "have a non-finite log-likelihood"
                )
            bounds.append(w.mean(0).cpu())
            estimates.append((torch.logsumexp(w, 0) - math.log(samples)).cpu())
    finally:
        flow.train(modes[0])
        dequantizer.train(modes[1])
    empty = torch.zeros(0, dtype=torch.float64)
    return DequantizedLikelihood(
        bound=torch.cat(bounds) if bounds else empty,
        importance=torch.cat(estimates) if estimates else empty,
        samples=samples,
        dim=dequantizer.dim,
        levels=dequantizer.levels,
    )
