"""The figures of a run: a matplotlib figure on an Agg canvas, written as a PNG atomically.

matplotlib is imported on first use (``pip install 'flowforge[cli]'``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from flowforge.runs.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["new_figure", "write_png"]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib figure of ``width`` x ``height`` inches on an Agg canvas (no display)."""
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
