"""Issue 22: every plot a run writes is readable: the VI density of a long thin target shows
its bulk (not the box holding all its mass), every VI panel has a title and axis labels, and a
loss curve of one evaluation shows the point mid-axis with a marker. The figures are caught
as they are written (``write_png`` patched) and their axes read."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("matplotlib")


def _catch(monkeypatch: pytest.MonkeyPatch, module: Any) -> list[Any]:
    """The figures ``module`` writes, in order (the files are still written)."""
    figures: list[Any] = []
    original = module.write_png

    def write_png(fig: Any, path: str | Path) -> Path:
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(module, "write_png", write_png)
    return figures


def _banana_samples(n: int = 4000) -> torch.Tensor:
    """Exact draws of the default banana: ``x1 ~ N(1, 10)``, ``x2 | x1 ~ N(x1^2, 0.1)``."""
    g = torch.Generator().manual_seed(0)
    x1 = 1 + math.sqrt(10.0) * torch.randn(n, generator=g, dtype=torch.float64)
    x2 = x1.square() + math.sqrt(0.1) * torch.randn(n, generator=g, dtype=torch.float64)
    return torch.stack([x1, x2], -1)


@pytest.mark.parametrize("where", ["exact", "collapsed"])
def test_the_banana_density_shows_its_bulk(tmp_path: Path, monkeypatch, where: str) -> None:
    from flowforge.vi import plots
    from flowforge.vi.targets import Banana

    figures = _catch(monkeypatch, plots)
    samples = _banana_samples() if where == "exact" else 0.3 * torch.randn(2000, 2)
    plots.plot_samples_over_density(samples, Banana(), tmp_path / "d.png", "banana", "nsf")
    (ax,) = figures[0].axes
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    # the target's 1%..99% region is about x1 in [-6.4, 8.4], x2 in [0, 75]; its bounds reach
    # x2 = 282, where the banana would be a sliver at the bottom of a black panel
    assert -12 < x0 < -5 and 7 < x1 < 14, (x0, x1)
    assert -3 < y0 < 0.5 and 50 < y1 < 120, (y0, y1)
    inside = (samples[:, 1] > y0) & (samples[:, 1] < y1) & (samples[:, 0] > x0)
    assert inside.double().mean() > 0.97  # the window holds q's samples as well
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


def test_the_window_ignores_non_finite_samples_and_stays_in_bounds() -> None:
    from flowforge.vi.plots import plot_window
    from flowforge.vi.targets import Banana

    target = Banana()
    bad = torch.tensor([[math.nan, 0.0], [math.inf, 1.0], [1e30, -1e30]] * 10, dtype=torch.float64)
    for samples in (bad, torch.empty(0, 2)):
        window = plot_window(samples, target)
        for (lo, hi), (a, b) in zip(window, target.bounds or [], strict=True):
            assert math.isfinite(lo) and math.isfinite(hi) and a <= lo < hi <= b


def test_every_vi_panel_has_a_title_and_axis_labels(tmp_path: Path, monkeypatch) -> None:
    from flowforge.vi import plots
    from flowforge.vi.targets import Funnel, Gaussian

    figures = _catch(monkeypatch, plots)
    history = [
        {"step": i, "loss": 1.0 / (i + 1), "elbo": -1.0 / (i + 1), "beta": 1.0} for i in range(20)
    ]
    plots.plot_elbo(history, 0.0, tmp_path / "elbo.png")
    plots.plot_samples_over_density(torch.randn(50, 3), Funnel(3), tmp_path / "s.png", "f", "q")
    one = Gaussian(torch.zeros(1), torch.eye(1))
    plots.plot_samples_over_density(torch.randn(50, 1), one, tmp_path / "h.png", "g", "q")
    assert len(figures) == 3
    for fig in figures:
        for ax in fig.axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()


@pytest.mark.parametrize("step", [0, 1, 500])
@pytest.mark.parametrize("likelihood", [True, False])
def test_a_one_evaluation_loss_curve_shows_its_point(
    tmp_path: Path, monkeypatch, step: int, likelihood: bool
) -> None:
    from flowforge.train import plots

    figures = _catch(monkeypatch, plots)
    one = [{"step": step, "train_loss": 3.1, "val_nll": 2.9}]
    path = plots.plot_losses(one, tmp_path / "loss.png", likelihood)
    assert path.read_bytes()[:4] == b"\x89PNG"
    ax = figures[0].axes[0]
    lo, hi = ax.get_xlim()
    assert math.isfinite(lo) and math.isfinite(hi) and hi > lo
    assert lo + 0.25 * (hi - lo) < step < hi - 0.25 * (hi - lo)  # not on an edge
    for axis in figures[0].axes:
        for line in axis.get_lines():
            assert line.get_marker() not in ("", "None", None) and line.get_markersize() >= 5
            y0, y1 = axis.get_ylim()
            assert math.isfinite(y0) and math.isfinite(y1) and y0 < min(line.get_ydata()) <= y1
