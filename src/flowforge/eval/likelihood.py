"""Test log-likelihoods the way the literature reports them: nats with 2 standard errors, bits/dim.

References:
    Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density Estimation.
    arXiv:1705.07057 (mean test log-likelihood, error bar of two standard errors).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["NLLSummary", "bits_per_dim", "log_likelihoods", "summarize"]


@torch.no_grad()
def log_likelihoods(
    flow: nn.Module, x: Tensor, batch_size: int = 4096, device: torch.device | str | None = None
) -> Tensor:
    """Per-row ``log p(x)`` in evaluation mode, batched.

    Args:
        flow: a flow with ``log_prob``; its train/eval mode is restored afterwards.
        x: ``(N, *event_shape)`` rows.
        batch_size: rows per forward pass.
        device: where to compute (default: the flow's device).

    Returns:
        ``(N,)`` float64 on the CPU.
    """
    if device is None:
        device = next(iter(flow.parameters()), x).device
    was_training = flow.training
    flow.eval()
    try:
        parts = [
            flow.log_prob(x[i : i + batch_size].to(device)).double().cpu()  # type: ignore[operator]
            for i in range(0, x.shape[0], batch_size)
        ]
    finally:
        flow.train(was_training)
    return torch.cat(parts) if parts else x.new_zeros(0, dtype=torch.float64)


@dataclass
class NLLSummary:
    """Mean negative log-likelihood over rows with its error bar.

    Attributes:
        nll: mean ``-log p`` in nats.
        nll_err: two standard errors of the mean, ``2 * std / sqrt(N)``.
        n: number of rows.
        bpd: bits/dim (images), else ``None``.
        bpd_err: two standard errors of the bits/dim, else ``None``.
        non_finite: rows whose log-likelihood was not finite (left out of the mean).
    """

    nll: float
    nll_err: float
    n: int
    bpd: float | None = None
    bpd_err: float | None = None
    non_finite: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary."""
        return asdict(self)

    def __str__(self) -> str:
        text = f"NLL {self.nll:.4f} ± {self.nll_err:.4f} nats ({self.n} rows)"
        if self.bpd is not None:
            text += f", {self.bpd:.4f} ± {self.bpd_err:.4f} bits/dim"
        if self.non_finite:
            text += f", {self.non_finite} non-finite rows left out"
        return text


def summarize(ll: Tensor, dim: int | None = None, levels: int | None = None) -> NLLSummary:
    """Mean NLL and its 2-standard-error bar, plus bits/dim when ``levels`` is given.

    Args:
        ll: ``(N,)`` per-row log-likelihoods in nats (of the dequantized ``[0, 1)`` data for
            images).
        dim: ``D``, values per row (needed with ``levels``).
        levels: ``K``, quantisation levels per value (images).

    Example:
        >>> s = summarize(torch.tensor([-1.0, -3.0]))  # std 1.414, 2 * std / sqrt(2) = 2
        >>> s.nll, round(s.nll_err, 4)
        (2.0, 2.0)
    """
    finite = torch.isfinite(ll)
    good = ll[finite].double()
    n = int(good.numel())
    nll = float(-good.mean()) if n else math.nan
    err = float(2 * good.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    out = NLLSummary(nll=nll, nll_err=err, n=n, non_finite=int((~finite).sum()))
    if levels is not None:
        if dim is None:
            raise ValueError("bits/dim needs dim together with levels")
        out.bpd = bits_per_dim(nll, dim, levels)
        out.bpd_err = err / (dim * math.log(2))
    return out


def bits_per_dim(nll: float, dim: int, levels: int) -> float:
    """``(nll + D log K) / (D log 2)``: bits/dim of discrete data from the dequantized density.

    ``nll`` is ``-log p(u)`` of the dequantized data scaled to ``[0, 1)``, every pre-transform's
    log-Jacobian included.

    Example:
        >>> round(bits_per_dim(0.0, 64, 17), 4)  # a uniform density on [0, 1)^64
        4.0875
    """
    return (nll + dim * math.log(levels)) / (dim * math.log(2))
