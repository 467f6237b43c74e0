"""PNG plots of a run: loss curves, the learned 2-D density, image samples.

matplotlib (the ``cli`` extra) is imported lazily, and only its object-oriented API with the
Agg canvas is used: no pyplot, no global backend switch, no windows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowforge.runs.atomic import atomic_write_bytes
from flowforge.train.batches import model_input

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from flowforge.data import Dataset
    from flowforge.runs.recipe import ModelSpec

__all__ = [
    "image_grid",
    "plot_density_2d",
    "plot_losses",
    "scatter",
    "write_png",
    "write_run_plots",
]


def _figure(width: float, height: float) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'flowforge[cli]'") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def write_png(fig: Figure, path: str | Path) -> Path:
    """Render ``fig`` and write it to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_losses(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Training loss and validation NLL against the step."""
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["train_loss"] for r in records], label="train loss", marker=".")
    ax.plot(steps, [r["val_nll"] for r in records], label="validation NLL", marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.legend()
    ax.grid(alpha=0.3)
    return write_png(fig, path)


@torch.no_grad()
def plot_density_2d(
    flow: torch.nn.Module, data: Tensor, path: str | Path, n_samples: int = 2000, grid: int = 200
) -> Path:
    """Three panels: data, learned density ``exp(log p)`` on a grid, and flow samples.

    Args:
        flow: a flow over 2-D points.
        data: ``(N, 2)`` reference points (the test split).
        path: the PNG file.
        n_samples: samples to draw from the flow.
        grid: grid points per axis for the density.
    """
    device = next(iter(flow.parameters()), data).device
    data = data[:n_samples].cpu()
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs = torch.linspace(float(lo[0]), float(hi[0]), grid)
    ys = torch.linspace(float(lo[1]), float(hi[1]), grid)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (grid*grid, 2)
    flow.eval()
    logp = torch.cat([flow.log_prob(p.to(device)).cpu() for p in points.split(8192)])  # type: ignore[operator]
    density = torch.nan_to_num(logp.exp(), nan=0.0, posinf=0.0).reshape(grid, grid)
    samples = flow.sample(n_samples).cpu()  # type: ignore[operator]
    fig = _figure(12, 4)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5)
    axes[0].set_title("data")
    axes[1].imshow(density.numpy(), origin="lower", extent=extent, aspect="auto", cmap="magma")
    axes[1].set_title("learned density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="C1")
    axes[2].set_title("flow samples")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    return write_png(fig, path)


def image_grid(images: Tensor, path: str | Path, title: str | None = None) -> Path:
    """Save ``(N, C, H, W)`` images with values in ``[0, 1]`` as one grid PNG."""
    n = images.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    c, h, w = images.shape[1:]
    canvas = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[:, r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = images[i]
    fig = _figure(0.6 * cols + 0.4, 0.6 * rows + (0.7 if title else 0.4))
    ax = fig.add_subplot()
    pixels = canvas.clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    ax.imshow(pixels[..., 0] if c == 1 else pixels, cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return write_png(fig, path)


def scatter(points: Tensor, path: str | Path, title: str | None = None) -> Path:
    """Save a scatter plot of ``(N, 2)`` points."""
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    if title:
        ax.set_title(title)
    return write_png(fig, path)


def write_run_plots(
    out: Path,
    flow: torch.nn.Module,
    spec: ModelSpec,
    ds: Dataset,
    records: Sequence[dict[str, Any]],
) -> list[Path]:
    """The plots of a finished run: ``loss.png``, plus ``density.png`` (2-D data) or
    ``samples.png`` (images)."""
    written = []
    if records:
        written.append(plot_losses(records, out / "loss.png"))
    if spec.features == 2 and spec.kind != "image":
        test = model_input(ds, ds.test, None)  # (N, 2) in the data's own units
        written.append(plot_density_2d(flow, test, out / "density.png"))
    elif spec.kind == "image":
        with torch.no_grad():
            u = flow.sample(64).cpu()  # type: ignore[operator]  # (64, D)
        images = u.reshape(64, *spec.data_shape).clamp(0, 1)
        written.append(image_grid(images, out / "samples.png", "flow samples"))
    return written
