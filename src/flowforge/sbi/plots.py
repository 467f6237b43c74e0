"""The corner plot of posterior samples: 1-D marginal histograms on the diagonal, pairwise 2-D
histograms below it, the true parameters marked when known.

matplotlib is imported on first use (``pip install 'flowforge[cli]'``); the PNG is written
atomically (:func:`flowforge.runs.figures.write_png`). This module is not imported by
``import flowforge``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from flowforge.runs.figures import new_figure, write_png

__all__ = ["corner_plot"]


def corner_plot(
    samples: Tensor | np.ndarray,
    path: str | Path,
    names: Sequence[str] | None = None,
    truth: Sequence[float] | None = None,
    limits: Sequence[tuple[float, float]] | None = None,
    bounds: Sequence[tuple[float, float]] | None = None,
    title: str = "posterior samples",
    bins: int = 50,
) -> Path:
    """Draw the corner plot of ``samples`` ``(n, D)`` and write it to ``path``.

    Args:
        samples: posterior samples.
        path: the PNG file.
        names: the ``D`` parameter names (axis labels).
        truth: the true parameters (a red line / point in every panel).
        limits: ``(low, high)`` per parameter; default: the samples' 0.1 and 99.9
            percentiles, widened by 5% (and the true parameters), within ``bounds``.
        bounds: a box prior's ``(low, high)`` per parameter, which the default limits stay in.
        title: the figure's title.
        bins: histogram bins per axis.

    Returns:
        ``path``.
    """
    s = np.asarray(samples.detach().cpu() if isinstance(samples, Tensor) else samples, dtype=float)
    n, d = s.shape
    names = list(names) if names is not None else [f"theta_{j}" for j in range(d)]
    if limits is None:
        lo, hi = np.percentile(s, 0.1, axis=0), np.percentile(s, 99.9, axis=0)
        if truth is not None:
            lo, hi = np.minimum(lo, truth), np.maximum(hi, truth)
        pad = 0.05 * np.maximum(hi - lo, 1e-9)
        lo, hi = lo - pad, hi + pad
        if bounds is not None:
            lo = np.maximum(lo, [b[0] for b in bounds])
            hi = np.minimum(hi, [b[1] for b in bounds])
        limits = [(float(a), float(b)) for a, b in zip(lo, hi)]
    size = min(2.6 * d, 16.0)
    fig = new_figure(size + 0.6, size + 0.3)
    axes = fig.subplots(d, d, squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i][j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                ax.hist(s[:, i], bins=bins, range=limits[i], color="tab:blue", alpha=0.8)
                ax.set_yticks([])
                if truth is not None:
                    ax.axvline(truth[i], color="tab:red", lw=1.5)
            else:
                ax.hist2d(s[:, j], s[:, i], bins=bins, range=[limits[j], limits[i]], cmap="Blues")
                if truth is not None:
                    ax.plot(truth[j], truth[i], "o", color="tab:red", ms=6, mec="white")
                ax.set_ylim(limits[i])
            ax.set_xlim(limits[j])
            if i == d - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif j > 0 and i != j:
                ax.set_yticklabels([])
    mark = " (red: true parameters)" if truth is not None else ""
    fig.suptitle(f"{title}: {n:,} draws{mark}")
    return write_png(fig, path)
