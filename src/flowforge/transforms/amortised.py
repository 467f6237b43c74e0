"""Named raw parameters of a bijection, optionally amortised: shifted by a net of the context."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from flowforge.nn.mlp import MLP


class AmortisedParameters(nn.Module):
    """A bijection's raw (unconstrained) parameters, each with a name and a shape.

    Without context they are one flat learned vector ``raw``. With a context of size
    ``C > 0`` a network adds a per-row offset, ``raw + net(context)``: amortised inference,
    where an encoder gives each data point its own flow. The network's last layer starts at
    zero, so a conditional layer starts as its unconditional self.

    Args:
        shapes: name -> shape of each parameter, in layout order.
        init: name -> initial value (same shape); missing names start at zero.
        context: size ``C`` of the context (0: unconditional).
        hidden: hidden sizes of the context network.

    Example:
        >>> import torch
        >>> p = AmortisedParameters({"w": (3,), "b": (1,)}, {"w": torch.ones(3)}, context=2)
        >>> v = p(torch.randn(5, 2))
        >>> v["w"].shape, v["b"].shape, bool((v["w"] == 1).all())
        (torch.Size([5, 3]), torch.Size([5, 1]), True)
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        init: Mapping[str, Tensor] | None = None,
        *,
        context: int = 0,
        hidden: Sequence[int] = (64,),
    ) -> None:
        super().__init__()
        self.shapes = {k: tuple(int(s) for s in v) for k, v in shapes.items()}
        init = dict(init or {})
        unknown = set(init) - set(self.shapes)
        if unknown:
            raise ValueError(f"initial values for unknown parameters {sorted(unknown)}")
        parts = []
        for name, shape in self.shapes.items():
            value = init.get(name, torch.zeros(shape))
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"expected an initial {name} of shape {shape}, got {tuple(value.shape)}"
                )
            parts.append(value.reshape(-1).to(torch.get_default_dtype()))  # never float32
        self.raw = nn.Parameter(torch.cat(parts))
        self.context = int(context)
        self.net = MLP(self.context, self.raw.numel(), hidden) if self.context > 0 else None

    def slot(self, name: str) -> slice:
        """Where parameter ``name`` lies in ``raw``."""
        start = 0
        for key, shape in self.shapes.items():
            size = math.prod(shape)
            if key == name:
                return slice(start, start + size)
            start += size
        raise KeyError(name)

    def forward(self, context: Tensor | None = None) -> dict[str, Tensor]:
        """The parameters: shape ``shape`` each, or ``(*, *shape)`` for a context ``(*, C)``.

        Raises:
            ValueError: if the parameters are amortised and the context is missing or has the
                wrong size.
        """
        raw = self.raw
        if self.net is not None:
            if context is None or context.dim() == 0 or context.shape[-1] != self.context:
                found = None if context is None else tuple(context.shape)
                raise ValueError(f"expected a context of shape (*, {self.context}), got {found}")
            raw = raw + self.net(context)  # (*, P)
        batch = raw.shape[:-1]
        out: dict[str, Tensor] = {}
        for name, shape in self.shapes.items():
            out[name] = raw[..., self.slot(name)].reshape(*batch, *shape)
        return out


__all__ = ["AmortisedParameters"]
