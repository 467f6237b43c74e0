"""A defensive mixture: a flow that never falls far below a fallback density.

``p(x) = (1 - w) p_flow(x) + w p_fallback(x)`` with a fixed weight ``w`` in ``(0, 1]``. A
table's flow takes its Gaussian start as the fallback (:mod:`flowforge.runs.defensive`), so away
from the training rows, where a flow's density can be astronomically small (one held-out row at
-65,000 nats decides a mean), every row keeps

    ``log p(x) >= log w + log p_fallback(x)``

by construction, while where the flow is good the mixture costs at most ``-log(1 - w)`` nats.
:func:`defensive_weight` chooses ``w`` on held-out rows: the weight whose mean gain over the
fallback, less :data:`GAIN_MARGIN` standard errors, is largest, and ``w = 1`` (the fallback
alone) unless at least :data:`MIN_VALIDATION_ROWS` rows show a gain beyond that error bar: a
flow that does not measurably help collapses to its start.
The log-density is exact (log-sum-exp of the two components), sampling is exact (each sample
comes from the flow with probability ``1 - w``, else from the fallback) and
:meth:`DefensiveMixture.sample_and_log_prob` returns the mixture's own log-density at its
samples.

A mixture is not a bijection: it is a density with the interface of a
:class:`~flowforge.core.flow.Flow` (``log_prob``, ``sample``, ``rsample``,
``sample_and_log_prob``, ``distribution``) around one, which it keeps as ``.flow`` (the trained
bijection and base are ``.flow.bijection`` and ``.flow.base``). Unconditional flows only.

References:
    Hesterberg, "Weighted average importance sampling and defensive mixture distributions",
    Technometrics 37 (1995).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Shape
from flowforge.core.flow import Flow, FlowDistribution

__all__ = [
    "GAIN_MARGIN",
    "LOWER_BOUND_GRID",
    "MIN_GAIN",
    "MIN_VALIDATION_ROWS",
    "MIN_WEIGHT",
    "DefensiveMixture",
    "WeightChoice",
    "choose_weight",
    "defensive_weight",
    "minimum_weight",
]

#: The smallest fallback weight :func:`choose_weight` returns (by default; a choice on few
#: validation rows takes a larger one, :func:`minimum_weight`): every row then scores at least
#: ``log(0.01) = -4.61`` nats plus its fallback log-density, and the mixture costs at most
#: ``-log(0.99) = 0.01`` nats per row where the flow is far better than the fallback.
MIN_WEIGHT = 0.01

#: The fewest validation rows that can show a flow better than its fallback
#: (:func:`defensive_weight`); with fewer the model is the fallback alone (``w = 1``). The same
#: number decides how a table's Gaussian start chooses its shrinkage
#: (:func:`flowforge.transforms.whiten.start_whiten`).
MIN_VALIDATION_ROWS = 10

#: How many standard errors of its mean the validation rows' gain of the mixture over the
#: fallback must exceed for the flow to be kept (:func:`defensive_weight`): the error bar of every
#: likelihood flowforge reports (two standard errors over rows).
GAIN_MARGIN = 2.0

#: The smallest mean gain per row, nats, that keeps a flow (:func:`defensive_weight`): below it
#: the difference is float32 rounding (a flow that kept its starting weights scores the rows as
#: its start to about 1e-6 nats, and that noise can look significant), not a better density.
MIN_GAIN = 1e-3

#: How many log-spaced weights in ``[w*, 1)`` (``w*`` the maximum-likelihood weight, the first)
#: :func:`defensive_weight` tries when it maximises the gain's lower bound: neighbours differ by
#: a factor of at most ``100 ** (1 / 200) = 1.023``.
LOWER_BOUND_GRID = 200


class DefensiveMixture(nn.Module):
    """``(1 - w) p_flow + w p_fallback``: exact log-density, exact sampling.

    Args:
        flow: the trained (unconditional) flow.
        fallback: a density with ``log_prob`` and ``sample_and_log_prob`` over the same events
            (a table's Gaussian start, itself a :class:`Flow`).
        weight: ``w`` in ``(0, 1]``.

    Attributes:
        flow: the flow.
        fallback: the fallback density.

    Example:
        >>> import torch, flowforge as ff
        >>> from flowforge.distributions import StandardNormal
        >>> from flowforge.transforms import Whiten
        >>> flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))
        >>> gauss = ff.Flow(Whiten(2.0 * torch.eye(2)), StandardNormal(2))
        >>> mix = DefensiveMixture(flow, gauss, 0.25)
        >>> x, lp = mix.sample_and_log_prob(5)
        >>> bool(torch.allclose(lp, mix.log_prob(x)))
        True
        >>> far = torch.tensor([[30.0, -30.0]])  # never below log w + the fallback's density
        >>> bool(mix.log_prob(far) >= gauss.log_prob(far) + torch.log(torch.tensor(0.25)))
        True
    """

    log_weight: Tensor

    def __init__(self, flow: Flow, fallback: Flow, weight: float) -> None:
        super().__init__()
        w = float(weight)
        if not 0.0 < w <= 1.0:
            raise ValueError(f"expected a fallback weight in (0, 1], got {weight!r}")
        if flow.context:
            raise ValueError("a defensive mixture takes an unconditional flow (context=0)")
        if tuple(fallback.event_shape) != tuple(flow.event_shape):
            raise ValueError(
                f"the fallback has event shape {tuple(fallback.event_shape)}, the flow "
                f"{tuple(flow.event_shape)}"
            )
        self.flow = flow
        self.fallback = fallback
        self.register_buffer("log_weight", torch.tensor(math.log(w), dtype=torch.float64))

    @property
    def weight(self) -> float:
        """The fallback's weight ``w``."""
        return math.exp(float(self.log_weight))

    @property
    def event_shape(self) -> Shape:
        """Shape of one data event."""
        return self.flow.event_shape

    @property
    def context(self) -> int:
        """Size of the conditioning vector: always 0."""
        return 0

    def map_components(self, view: Callable[[Any], Any]) -> DefensiveMixture | None:
        """The same weight over ``view`` of each component (such as
        :func:`~flowforge.transforms.standardize.standardized_view`: the mixture commutes with
        a bijection both components start with); ``None`` unless both views are flows."""
        flow, fallback = view(self.flow), view(self.fallback)
        if not isinstance(flow, Flow) or not isinstance(fallback, Flow):
            return None
        return DefensiveMixture(flow, fallback, self.weight)

    def _check_context(self, context: Tensor | None) -> None:
        if context is not None:
            raise ValueError(
                f"this density is unconditional (context=0) but got a context of shape "
                f"{tuple(context.shape)}"
            )

    def _mix(self, lp_flow: Tensor, lp_fallback: Tensor) -> Tensor:
        log_w = self.log_weight.to(lp_flow)
        log_rest = torch.log1p(-torch.exp(log_w))  # -inf at w = 1: the fallback alone
        return torch.logaddexp(lp_flow + log_rest, lp_fallback + log_w)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Exact log-density of ``x`` ``(*, *event_shape)``; returns shape ``(*)``.

        ``log((1 - w) p_flow(x) + w p_fallback(x))`` by log-sum-exp, so at least
        ``log w + log p_fallback(x)`` for every row.
        """
        self._check_context(context)
        return self._mix(self.flow.log_prob(x), self.fallback.log_prob(x))

    def _draws(
        self, n: int | Sequence[int], temperature: float, grad: bool
    ) -> tuple[Tensor, Tensor]:
        """Samples ``(N, *event)`` and their log-density ``(N,)`` for ``N = prod(n)``."""
        shape = Flow._check_n(n)
        total = math.prod(shape)
        ref = self.log_weight
        pick = torch.rand(total, dtype=torch.float64, device=ref.device) < self.weight
        k = int(pick.sum())
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            xf, lf = self.flow.sample_and_log_prob(total - k, temperature=temperature)
            xb, lb = self.fallback.sample_and_log_prob(k, temperature=temperature)
            # the other component's density at each sample: the mixture's own log-density
            lf_at_b = self.flow.log_prob(xb) if k else lb
            lb_at_f = self.fallback.log_prob(xf) if total - k else lf
        event = tuple(self.event_shape)
        x = xf.new_empty((total, *event))
        lp = lf.new_empty((total,))
        x[~pick.to(x.device)] = xf
        x[pick.to(x.device)] = xb.to(xf)
        lp[~pick.to(x.device)] = self._mix(lf, lb_at_f.to(lf))
        lp[pick.to(x.device)] = self._mix(lf_at_b.to(lb), lb).to(lp)
        return x.reshape(*shape, *event), lp.reshape(shape)

    def rsample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples ``(n, *event_shape)``: each from the flow with probability ``1 - w``, else
        from the fallback (each reparameterised given its component; ``temperature`` goes to
        both components)."""
        self._check_context(context)
        return self._draws(n, temperature, True)[0]

    @torch.no_grad()
    def sample(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples without gradient, shape ``(n, *event_shape)`` (see :meth:`rsample`)."""
        return self.rsample(n, context, temperature)

    def sample_and_log_prob(
        self, n: int | Sequence[int] = 1, context: Tensor | None = None, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Samples and the mixture's exact log-density at them.

        Returns:
            ``(x, log_prob)`` with shapes ``(n, *event_shape)`` and ``(n,)``.
        """
        self._check_context(context)
        return self._draws(n, temperature, True)

    def distribution(self, context: Tensor | None = None) -> FlowDistribution:
        """This density as a :class:`torch.distributions.Distribution`."""
        self._check_context(context)
        return FlowDistribution(self, None)  # type: ignore[arg-type]

    def forward(self, context: Tensor | None = None) -> FlowDistribution:
        """``mixture()`` is ``mixture.distribution()``."""
        return self.distribution(context)


def minimum_weight(rows: int) -> float:
    """The smallest fallback weight for a choice made on ``rows`` validation rows:
    ``max(MIN_WEIGHT, min(1, 3 / rows))``.

    Having seen none of ``rows`` rows fall where the flow fails, the share of rows that do can
    still be up to ``3 / rows`` (the 95% upper confidence bound of a proportion with no events:
    ``(1 - p) ** rows = 0.05``, the "rule of three"), so a few validation rows cannot vouch
    for the flow everywhere: on 30 of them every row keeps at least ``log p_start - log 10``;
    from 300 rows on, the floor is ``log p_start - 4.61``. (Until issue 23's stop 31 the floor
    was the point estimate ``1 / (rows + 2)``, Laplace's rule of succession: on iris, 15
    validation rows, one test row at -458 nats took a realnvp 0.009 nats above its start.)

    References:
        Hanley and Lippman-Hand, "If nothing goes wrong, is everything all right?
        Interpreting zero numerators", JAMA 249 (1983).

    Example:
        >>> minimum_weight(2), minimum_weight(30), minimum_weight(10_000)
        (1.0, 0.1, 0.01)
    """
    rows = max(int(rows), 0)
    return 1.0 if rows <= 3 else max(MIN_WEIGHT, 3.0 / rows)


def choose_weight(
    lp_flow: Tensor, lp_fallback: Tensor, minimum: float = MIN_WEIGHT, iters: int = 60
) -> float:
    """The fallback weight in ``[minimum, 1]`` that maximises the mean log-likelihood of rows.

    ``f(w) = mean log((1 - w) p_flow + w p_fallback)`` is concave in ``w``, so its maximiser is
    found by bisection on the sign of ``f'(w) = mean((p_fallback - p_flow) / p_mix)`` (in log
    space, float64). Rows where the flow's density is NaN count as density 0.

    Args:
        lp_flow: ``(M,)`` the flow's log-density of held-out (validation) rows.
        lp_fallback: ``(M,)`` the fallback's log-density of the same rows.
        minimum: the smallest weight, ``> 0`` (the floor ``log minimum`` per row).
        iters: bisection steps (on ``log w``).

    Returns:
        ``w``; ``minimum`` without rows.

    Example:
        >>> a = torch.tensor([0.0, 0.0, -1e4])  # the flow misses one row by far: w = 1 / (3 (1 - e^-2))
        >>> b = torch.tensor([-2.0, -2.0, -3.0])
        >>> round(choose_weight(a, b), 3), choose_weight(torch.zeros(3), b)
        (0.386, 0.01)
    """
    if not 0.0 < minimum <= 1.0:
        raise ValueError(f"expected a minimum weight in (0, 1], got {minimum!r}")
    a = torch.nan_to_num(lp_flow.detach().double().reshape(-1), nan=-math.inf)
    b = lp_fallback.detach().double().reshape(-1)
    keep = torch.isfinite(b)
    a, b = a[keep], b[keep]
    if a.numel() == 0:
        return minimum

    def slope(w: float) -> float:
        mix = b if w >= 1.0 else torch.logaddexp(a + math.log1p(-w), b + math.log(w))
        return float((torch.exp(b - mix) - torch.exp(a - mix)).mean())

    if slope(minimum) <= 0:
        return minimum
    if slope(1.0) >= 0:
        return 1.0
    lo, hi = math.log(minimum), 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if slope(math.exp(mid)) > 0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


@dataclass(frozen=True)
class WeightChoice:
    """A fallback weight and why it was chosen (:func:`defensive_weight`).

    Attributes:
        weight: ``w`` in ``(0, 1]``; ``1`` is the fallback alone.
        reason: ``"validation"`` (the rows show the mixture better than the fallback),
            ``"no-gain"`` (they do not, beyond :data:`GAIN_MARGIN` standard errors and
            :data:`MIN_GAIN`) or ``"few-rows"`` (fewer than :data:`MIN_VALIDATION_ROWS` rows).
        gain: the mean per-row gain ``log p_mix(x) - log p_fallback(x)`` of the rows at
            ``weight`` (at the maximum-likelihood weight where ``weight`` is 1), nats (``nan``
            with fewer than 2 rows).
        error: :data:`GAIN_MARGIN` standard errors of that mean (``nan`` likewise).
        rows: how many rows chose.
    """

    weight: float
    reason: str
    gain: float
    error: float
    rows: int

    def describe(self) -> str:
        """One line for a user: what the model is and why."""
        if self.reason == "few-rows":
            return (
                f"the model is the Gaussian start (defensive weight 1): {self.rows} validation "
                f"rows cannot show the flow better than it ({MIN_VALIDATION_ROWS} needed)"
            )
        shown = f"{self.gain:.4f} ± {self.error:.4f} nats per row on {self.rows} validation rows"
        if self.reason == "no-gain":
            return (
                f"the model is the Gaussian start (defensive weight 1): the flow's gain over "
                f"it, {shown}, is not above its error bar"
            )
        return (
            f"the model is the flow mixed with its Gaussian start, weight {self.weight:.4g} "
            f"(gain over the start {shown})"
        )


def defensive_weight(
    lp_flow: Tensor, lp_fallback: Tensor, minimum: float | None = None
) -> WeightChoice:
    """The fallback weight of a defensive mixture, chosen on held-out (validation) rows.

    The flow is kept only where the rows show it helps, and by as much as they can vouch for:
    with at least :data:`MIN_VALIDATION_ROWS` rows, ``w`` maximises the *lower bound* of the
    mixture's mean gain over the fallback alone, ``log p_mix(x) - log p_fallback(x)`` per row,
    less :data:`GAIN_MARGIN` standard errors of that mean, over ``w`` from the
    maximum-likelihood weight ``w*`` of :func:`choose_weight` (in ``[minimum, 1]``) up to 1
    (:data:`LOWER_BOUND_GRID` log-spaced weights); the flow is kept when that bound is positive
    and the gain exceeds :data:`MIN_GAIN`, otherwise ``w = 1``, the fallback alone. A larger
    ``w`` gives up a little of the mean where the flow is good but bounds every row's loss by
    ``log w``, so it narrows the error bar: where a few rows carry the gain, the bound picks a
    safer mixture than ``w*`` would, and keeps a flow whose ``w*`` mixture the error bar would
    reject. Since ``w`` lies between ``w*`` and 1 and the mean log-likelihood of any rows is
    concave in ``w``, on any rows the model scores at least the worse of the ``w*`` mixture and
    the fallback. So the model differs from the fallback only where the rows measured it
    better (held-out rows can still disagree: a choice on rows is not a guarantee on others),
    and every row keeps ``log p >= log w + log p_fallback``.

    Args:
        lp_flow: ``(M,)`` the flow's log-density of the rows (NaN counts as density 0).
        lp_fallback: ``(M,)`` the fallback's log-density of the same rows.
        minimum: the smallest weight; by default :func:`minimum_weight` ``(M)``.

    Returns:
        The weight, why, and the rows' gain at that weight with its error bar (at the
        maximum-likelihood weight where the fallback is kept).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> b = -torch.rand(40, generator=g) - 1.0
        >>> defensive_weight(b + 1.0, b).reason  # the flow 1 nat better on every row
        'validation'
        >>> defensive_weight(b + 0.2 * torch.randn(40, generator=g), b).weight  # noise only
        1.0
        >>> defensive_weight((b + 1.0)[:5], b[:5]).reason
        'few-rows'
        >>> a = b + 1.0
        >>> a[:3] = -50.0  # 3 of 40 rows far outside the flow: a safer weight than the mean's
        >>> defensive_weight(a, b).weight > choose_weight(a, b, minimum_weight(40))
        True
    """
    a = torch.nan_to_num(lp_flow.detach().double().reshape(-1), nan=-math.inf)
    b = lp_fallback.detach().double().reshape(-1)
    keep = torch.isfinite(b)
    a, b = a[keep], b[keep]
    m = int(a.numel())
    low = minimum_weight(m) if minimum is None else minimum
    w_ml = choose_weight(a, b, low)
    if m < 2:
        return WeightChoice(1.0, "few-rows", math.nan, math.nan, m)
    best, ws = -1, torch.ones(0, dtype=a.dtype)
    if w_ml < 1.0:  # from the maximum-likelihood weight up: below it the mean falls
        ws = torch.exp(torch.linspace(math.log(w_ml), 0.0, LOWER_BOUND_GRID + 1, dtype=a.dtype))
        ws = ws[:-1]
        gains, errors = torch.empty_like(ws), torch.empty_like(ws)
        for i, w in enumerate(ws.tolist()):  # one weight at a time: memory O(M)
            d = torch.logaddexp(a + math.log1p(-w), b + math.log(w)) - b
            gains[i], errors[i] = d.mean(), GAIN_MARGIN * d.std() / math.sqrt(m)
        bound = torch.where(gains > MIN_GAIN, gains - errors, -math.inf)
        best = int(torch.argmax(bound)) if float(bound.max()) > 0 else -1
    if m < MIN_VALIDATION_ROWS or best < 0:
        # the fallback alone: report the gain at the maximum-likelihood weight
        at = b if w_ml >= 1.0 else torch.logaddexp(a + math.log1p(-w_ml), b + math.log(w_ml))
        gain, error = float((at - b).mean()), GAIN_MARGIN * float((at - b).std()) / math.sqrt(m)
        reason = "few-rows" if m < MIN_VALIDATION_ROWS else "no-gain"
        return WeightChoice(1.0, reason, gain, error, m)
    return WeightChoice(float(ws[best]), "validation", float(gains[best]), float(errors[best]), m)
