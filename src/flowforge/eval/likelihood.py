"""Test log-likelihoods the way the literature reports them: nats with 2 standard errors, bits/dim.

A non-finite log-likelihood is never averaged away: :func:`summarize` (and so ``flowforge eval``
and the test numbers of ``flowforge train``) raises :class:`NonFiniteLikelihood` naming the rows.

References:
    Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density Estimation.
    arXiv:1705.07057 (mean test log-likelihood, error bar of two standard errors).
    Theis, van den Oord, Bethge (2016). A note on the evaluation of generative models.
    arXiv:1511.01844 (bits/dim of discrete data from a dequantized density).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, overload

import torch
from torch import Tensor, nn

__all__ = [
    "NLLSummary",
    "NonFiniteLikelihood",
    "bits_per_dim",
    "check_finite",
    "log_likelihoods",
    "standardized_log_likelihoods",
    "summarize",
    "without_standardize",
]


class NonFiniteLikelihood(ValueError):
    """Some rows have a NaN or infinite log-likelihood (the message names them; one line)."""


@torch.no_grad()
def log_likelihoods(
    flow: nn.Module,
    x: Tensor,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
    context: Tensor | None = None,
) -> Tensor:
    """Per-row ``log p(x)`` (``log p(x | c)`` given a context) in evaluation mode, batched.

    Args:
        flow: a flow with ``log_prob``; its train/eval mode is restored afterwards.
        x: ``(N, *event_shape)`` rows.
        batch_size: rows per forward pass.
        device: where to compute (default: the flow's device).
        context: ``(N, C)`` the rows' context (a conditional flow), or ``None``.

    Returns:
        ``(N,)`` float64 on the CPU.
    """
    if device is None:
        device = next(iter(flow.parameters()), x).device
    was_training = flow.training
    flow.eval()
    try:
        parts = []
        for i in range(0, x.shape[0], batch_size):
            rows = x[i : i + batch_size].to(device)
            if context is None:
                lp = flow.log_prob(rows)  # type: ignore[operator]
            else:
                lp = flow.log_prob(rows, context[i : i + batch_size].to(device))  # type: ignore[operator]
            parts.append(lp.double().cpu())
    finally:
        flow.train(was_training)
    return torch.cat(parts) if parts else x.new_zeros(0, dtype=torch.float64)


def without_standardize(flow: nn.Module) -> nn.Module | None:
    """The flow after its leading ``Standardize`` pre-transform, or ``None`` if it has none.

    A run's flow takes rows in the data's units and standardises them first, in its own dtype
    (float32): a column near 1.7e9 that varies by ±100 has float32 spacing 128 there. Scoring
    standardises in float64 instead, casts, and evaluates this rest of the flow
    (:func:`standardized_log_likelihoods`). A defensive mixture gives the mixture of its two
    components' rests.
    """
    from flowforge.core import Flow
    from flowforge.core.bijection import Compose
    from flowforge.core.defensive import DefensiveMixture
    from flowforge.transforms.standardize import Standardize

    if isinstance(flow, DefensiveMixture):  # both components start with the same Standardize
        return flow.map_components(without_standardize)
    bij = getattr(flow, "bijection", None)
    if not isinstance(flow, Flow) or not isinstance(bij, Compose):
        return None
    members = list(bij.bijections)
    if len(members) < 2 or not isinstance(members[0], Standardize):
        return None
    rest = members[1] if len(members) == 2 else Compose(members[1:])  # type: ignore[arg-type]
    return Flow(rest, flow.base)  # type: ignore[arg-type]


def standardized_log_likelihoods(
    flow: nn.Module,
    z: Tensor,
    log_abs_det: Tensor | float,
    batch_size: int = 4096,
    device: torch.device | str | None = None,
) -> Tensor:
    """``log p(x)`` of rows given already standardised (``z = (x - mean) / std``, in float64).

    ``flow`` is the run's whole flow; when it starts with a ``Standardize`` pre-transform, ``z``
    (cast to the flow's dtype) goes through the rest and ``log_abs_det = -sum(log std)`` (the
    float64 log-Jacobian of the standardisation) is added; otherwise this raises.

    Returns:
        ``(N,)`` float64 on the CPU.
    """
    rest = without_standardize(flow)
    if rest is None:
        raise ValueError("the flow has no leading Standardize pre-transform")
    ref = next((v for v in flow.parameters() if v.is_floating_point()), z)
    ll = log_likelihoods(rest, z.to(ref.dtype), batch_size, device)
    return ll + float(log_abs_det)


@overload
def bits_per_dim(log_prob: float, dim: int, levels: int) -> float: ...
@overload
def bits_per_dim(log_prob: Tensor, dim: int, levels: int) -> Tensor: ...
def bits_per_dim(log_prob: Tensor | float, dim: int, levels: int) -> Tensor | float:
    """Bits/dim of discrete data from the log-density of its dequantized version, per example.

    ``bpd = (-log p(u) + D log K) / (D log 2)`` for each example: ``u`` holds the ``D`` values of
    one example dequantized and scaled to ``[0, 1)`` (``u = (v + noise) / K``), and ``log p(u)``
    includes every pre-transform's log-Jacobian. The ``D log K`` term is the log-Jacobian of the
    scaling by ``1 / K``, once per example: the density of ``v + noise`` on ``[0, K)^D`` is
    ``p(u) / K^D``, and its negative log in bits per value is a bound on the discrete model's.

    Args:
        log_prob: ``log p(u)`` in nats, a number or a ``(*)`` tensor (one per example).
        dim: ``D``, values per example (``C * H * W``).
        levels: ``K``, levels per value (17 for scikit-learn's digits, ``2^bits`` = 256 for
            8-bit images).

    Returns:
        Bits/dim, of the same type and shape as ``log_prob``.

    Example:
        >>> round(bits_per_dim(0.0, 64, 17), 4)  # the uniform density on [0, 1)^64: log2(17)
        4.0875
    """
    if dim < 1 or levels < 2:
        raise ValueError(f"bits/dim needs dim >= 1 and levels >= 2, got {dim} and {levels}")
    return (-log_prob + dim * math.log(levels)) / (dim * math.log(2))


def check_finite(ll: Tensor, what: str = "log-likelihood") -> None:
    """Raise :class:`NonFiniteLikelihood` naming the rows (0-based) where ``ll`` is not finite.

    Example:
        >>> check_finite(torch.tensor([0.0, float("nan"), -float("inf")]))
        Traceback (most recent call last):
        ...
        flowforge.eval.likelihood.NonFiniteLikelihood: non-finite log-likelihood in 2 of 3 rows (rows 1, 2; 0-based)
    """
    bad = (~torch.isfinite(ll)).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise NonFiniteLikelihood(
            f"non-finite {what} in {len(bad)} of {ll.numel()} rows (rows {shown}; 0-based)"
        )


@dataclass
class NLLSummary:
    """Mean negative log-likelihood over rows with its error bar.

    Attributes:
        nll: mean ``-log p`` in nats.
        nll_err: two standard errors of the mean, ``2 * std / sqrt(N)``.
        n: number of rows.
        bpd: mean bits/dim (images), else ``None``.
        bpd_err: two standard errors of the bits/dim, else ``None``.
    """

    nll: float
    nll_err: float
    n: int
    bpd: float | None = None
    bpd_err: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary."""
        return asdict(self)

    def __str__(self) -> str:
        text = f"NLL {self.nll:.4f} ± {self.nll_err:.4f} nats ({self.n} rows)"
        if self.bpd is not None:
            text += f", {self.bpd:.4f} ± {self.bpd_err:.4f} bits/dim"
        return text


def _mean_and_err(v: Tensor) -> tuple[float, float]:
    n = v.numel()
    mean = float(v.mean()) if n else math.nan
    err = float(2 * v.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return mean, err


def summarize(ll: Tensor, dim: int | None = None, levels: int | None = None) -> NLLSummary:
    """Mean NLL and its 2-standard-error bar, plus bits/dim when ``levels`` is given.

    Args:
        ll: ``(N,)`` per-row log-likelihoods in nats (of the dequantized ``[0, 1)`` data for
            images).
        dim: ``D``, values per row (needed with ``levels``).
        levels: ``K``, quantisation levels per value (images).

    Raises:
        NonFiniteLikelihood: if any row's log-likelihood is NaN or infinite (never skipped).

    Example:
        >>> s = summarize(torch.tensor([-1.0, -3.0]))  # std 1.414, 2 * std / sqrt(2) = 2
        >>> s.nll, round(s.nll_err, 4)
        (2.0, 2.0)
    """
    ll = ll.double().flatten()
    check_finite(ll)
    nll, err = _mean_and_err(-ll)
    out = NLLSummary(nll=nll, nll_err=err, n=int(ll.numel()))
    if levels is not None:
        if dim is None:
            raise ValueError("bits/dim needs dim together with levels")
        out.bpd, out.bpd_err = _mean_and_err(bits_per_dim(ll, dim, levels))
    return out
