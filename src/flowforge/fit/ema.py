"""An exponential moving average of a model's weights, for evaluation in place of the raw ones
(the engine's, :mod:`flowforge.fit.loop`).

After each optimizer step, every floating-point parameter's average is the bias-corrected
exponential average of its values so far, ``avg_n = sum_i decay^(n-i) w_i / sum_i decay^(n-i)``
over the updates ``i = 0 .. n``: recursively ``avg <- d avg + (1 - d) w`` with
``d = decay (1 - decay^n) / (1 - decay^(n+1))`` at update ``n`` (0-based), so the first
update copies the weights and the random initialisation (and ActNorm's data-dependent start)
is never part of it, while ``decay`` sets the window (about ``1 / (1 - decay)`` steps) from
the start. Buffers (ActNorm's initialised flag, running statistics) are copied as they are.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(1, 1)
    >>> ema = WeightAverage(net, decay=0.5)
    >>> for value in (1.0, 3.0):
    ...     with torch.no_grad():
    ...         _ = net.weight.fill_(value)
    ...     ema.update(net)
    >>> round(ema.state["weight"].item(), 4)  # (0.5 * 1 + 3) / 1.5
    2.3333
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving average of ``model``'s state (see the module docs).

    Args:
        model: the model whose parameters are averaged (only their names are read here).
        decay: the decay ``d`` in ``(0, 1)`` (0.999: about the last thousand steps).

    Attributes:
        state: the averaged state dict (``None`` before the first :meth:`update`).
        updates: the number of updates so far.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.params = {name for name, p in model.named_parameters() if p.requires_grad}
        self.state: dict[str, Tensor] | None = None
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        current = model.state_dict()
        if self.state is None:
            self.state = {k: v.detach().clone() for k, v in current.items()}
        else:
            n, b = self.updates, self.decay
            d = b * (1 - b**n) / (1 - b ** (n + 1))
            for k, v in current.items():
                avg = self.state[k]
                if k in self.params and avg.is_floating_point():
                    avg.mul_(d).add_(v.detach(), alpha=1 - d)
                else:
                    avg.copy_(v)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        """The average and the update count (for checkpoints)."""
        return {"state": self.state, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module | None = None) -> None:
        """Restore :meth:`state_dict` output (on the devices of ``model``'s state, if given)."""
        avg = state["state"]
        own = model.state_dict() if model is not None else {}
        self.state = (
            None
            if avg is None
            else {k: v.to(own[k].device) if k in own else v.clone() for k, v in avg.items()}
        )
        if self.state is not None and model is not None:
            self.state = {k: v.clone() for k, v in self.state.items()}
        self.updates = int(state["updates"])
