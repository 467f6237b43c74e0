"""The speed benchmark's shared pieces: the flows, sizes, the libraries' common model
interface and small helpers (see ``benchmarks/speed.py``, the entry point)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import speed_cnf
from torch import Tensor, nn

LIBS = ("flowforge", "zuko", "nflows", "normflows")
FLOWS = ("MAF", "NSF", "RealNVP", "NICE")  # vector flows, one run per --dims entry
IMAGE_FLOWS = ("Glow",)  # image flows, one run on --image
CNF_FLOWS: tuple[str, ...] = speed_cnf.CNF_FLOWS  # continuous flows, one run on D = 2
TRANSFORMS = 5
HIDDEN = (128, 128)
BINS = 8
BOUND = 5.0
# Glow's size (set from --glow-levels/--glow-steps/--glow-hidden; passed to memory children).
GLOW = {"levels": 2, "steps": 8, "hidden": 64}
IMAGE = (1, 8, 8)

# A vector flow's dimension D, or an image flow's event shape (C, H, W).
Dim = int | tuple[int, ...]

# Why a peer has no entry for a flow (shown under the table).
NOT_AVAILABLE: dict[tuple[str, str], str] = {}
# Flows a peer lacks whatever is installed.
MISSING: dict[tuple[str, str], str] = {
    ("zuko", "Glow"): "zuko has no image flows (no squeeze, 1x1 convolution, conv coupling "
    "or multiscale factor-out); it models vectors only",
    ("nflows", "FFJORD"): "nflows has no continuous flows",
    ("normflows", "FFJORD"): "normflows has no continuous flows",
}

QUICK_NOTE = (
    "--quick: a smoke run at small sizes that checks the machinery, not a comparison; "
    "run without --quick for numbers"
)


@dataclass
class Model:
    """A flow of one library behind a common interface."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    # Continuous flows: the function evaluations since the last call (see speed_cnf).
    nfe: Callable[[], int] | None = None


def available(lib: str) -> bool:
    """Whether ``lib`` can be imported."""
    return importlib.util.find_spec(lib) is not None


def _half_masks(features: int) -> tuple[int, int]:
    n_a = (features + 1) // 2
    return n_a, features - n_a


class _IgnoreContext(nn.Module):
    """nflows calls coupling networks as ``net(x, context)``; its MLP takes ``x`` only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def n_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def event_of(d: Dim) -> tuple[int, ...]:
    """The event shape of dimension ``D`` or image shape ``(C, H, W)``."""
    return (d,) if isinstance(d, int) else tuple(d)


def dim_label(d: Dim) -> str:
    """``D`` as a table cell, an image shape as ``CxHxW``."""
    return str(d) if isinstance(d, int) else "x".join(map(str, d))
