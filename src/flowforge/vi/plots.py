"""The pictures of a VI run: q's samples over the true density, and the ELBO curve.

matplotlib (the ``cli`` extra) is imported when a plot is drawn, and only its object-oriented
API with the Agg canvas is used (no pyplot, no global backend); files are written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowforge.runs.figures import new_figure, write_png
from flowforge.vi.targets import Target

if TYPE_CHECKING:
    pass

__all__ = ["plot_elbo", "plot_samples_over_density", "plot_window"]

_GRID = 600  # points per axis of the grid that finds the target's bulk
_TAIL = 0.01  # mass left out on each side, per coordinate, of the target and of the samples


def plot_elbo(history: Sequence[dict[str, Any]], log_z: float | None, path: str | Path) -> Path:
    """The per-step ELBO estimate, its running mean over 50 steps, and ``log Z`` if known."""
    steps = [int(r["step"]) for r in history]
    values = [float(r.get("elbo", -r["loss"])) for r in history]
    window = 50
    smooth, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        smooth.append(total / min(i + 1, window))
    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    ax.plot(steps, values, lw=0.5, alpha=0.4, label="ELBO (per step)")
    ax.plot(steps, smooth, lw=1.5, label=f"running mean ({window} steps)")
    annealed = [s for s, r in zip(steps, history) if float(r.get("beta", 1.0)) < 1.0]
    if annealed:  # the ELBO of the tempered target beta log p~ there
        ax.axvspan(0, max(annealed), color="0.85", label="annealing (tempered target)")
    if log_z is not None and math.isfinite(log_z):
        ax.axhline(log_z, color="k", ls="--", lw=1, label="log Z")
    tail = sorted(values[len(annealed) + (len(values) - len(annealed)) // 10 :]) or values
    lo = tail[max(0, len(tail) // 100)]
    hi = max(max(tail), log_z if log_z is not None else -math.inf)
    if math.isfinite(lo) and math.isfinite(hi) and hi > lo:  # hide the first steps' plunge
        ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title("ELBO during training")
    ax.legend()
    return write_png(fig, path)


def _quantiles(values: Tensor, weights: Tensor | None = None) -> tuple[float, float]:
    """The ``_TAIL`` and ``1 - _TAIL`` quantiles of ``values`` (``(n,)``), weighted or not."""
    if weights is None:
        q = torch.quantile(values, torch.tensor([_TAIL, 1 - _TAIL], dtype=values.dtype))
        return float(q[0]), float(q[1])
    cdf = torch.cumsum(weights, 0) / weights.sum()
    lo = int(torch.searchsorted(cdf, torch.tensor(_TAIL, dtype=cdf.dtype)))
    hi = int(torch.searchsorted(cdf, torch.tensor(1 - _TAIL, dtype=cdf.dtype)))
    return float(values[min(lo, len(values) - 1)]), float(values[min(hi, len(values) - 1)])


@torch.no_grad()
def plot_window(samples: Tensor, target: Target) -> tuple[tuple[float, float], ...]:
    """The ``(x0, x1), (y0, y1)`` box a 2-D plot shows: the target's bulk and the samples' bulk.

    Each coordinate spans, from the 1st to the 99th percentile, both the target's marginal
    (from ``exp(target)`` on a grid over ``target.bounds``) and the finite samples' (``(n, 2)``),
    padded by 10% and kept inside ``target.bounds``: a thin, long-tailed density (the banana,
    whose bounds reach ``x2 = 280``) fills the picture instead of a corner of it.

    Example:
        >>> import torch
        >>> from flowforge.vi.targets import Banana
        >>> (x0, x1), (y0, y1) = plot_window(torch.zeros(10, 2), Banana())
        >>> y1 < 150 < Banana().bounds[1][1]
        True
    """
    if target.bounds is None:
        raise ValueError("plot_window: the target has no bounds")
    x = samples.detach().cpu().to(torch.float64)
    x = x[torch.isfinite(x).all(-1)]
    axes = [torch.linspace(a, b, _GRID, dtype=torch.float64) for a, b in target.bounds]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (G, G, 2)
    logp = target(grid)
    top = logp[torch.isfinite(logp)].max() if bool(torch.isfinite(logp).any()) else None
    mass = torch.nan_to_num(torch.exp(logp - top), nan=0.0) if top is not None else None
    finite = mass is not None and float(mass.sum()) > 0
    window = []
    for d, (a, b) in enumerate(target.bounds):
        lo, hi = math.inf, -math.inf
        if finite and mass is not None:
            lo, hi = _quantiles(axes[d], mass.sum(1 - d))
        if len(x):
            s_lo, s_hi = _quantiles(x[:, d])
            lo, hi = min(lo, s_lo), max(hi, s_hi)
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            lo, hi = a, b
        pad = 0.1 * (hi - lo)
        window.append((max(a, lo - pad), min(b, hi + pad)))
    return tuple(window)


@torch.no_grad()
def plot_samples_over_density(
    samples: Tensor, target: Target, path: str | Path, target_name: str, flow_name: str
) -> Path:
    """``samples`` of ``q`` (``(n, D)``) as points over ``exp(target)`` for a 2-D target with
    bounds; otherwise the samples' first two coordinates alone."""
    x = samples.detach().cpu().to(torch.float64)
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    if target.features == 2 and target.bounds is not None:
        (x0, x1), (y0, y1) = plot_window(x, target)
        gx = torch.linspace(x0, x1, 300, dtype=torch.float64)
        gy = torch.linspace(y0, y1, 300, dtype=torch.float64)
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)
        logp = target(grid)
        ax.imshow(
            torch.exp(logp - logp.max()).numpy(),
            origin="lower",
            extent=(x0, x1, y0, y1),
            cmap="magma",
            aspect="auto",
        )
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(f"{flow_name}: samples of q over the {target_name} density")
    else:
        ax.set_title(f"{flow_name}: samples of q on {target_name} (first two coordinates)")
    if x.shape[-1] >= 2:
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=4, alpha=0.6, color="#7fdbff", lw=0)
        ax.set_xlabel("x1")
        ax.set_ylabel("x2")
    else:
        ax.set_title(f"{flow_name}: samples of q on {target_name}")
        ax.hist(x[:, 0].numpy(), bins=60, density=True)
        ax.set_xlabel("x1")
        ax.set_ylabel("density of samples")
    return write_png(fig, path)
