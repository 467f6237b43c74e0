"""Multi-layer perceptrons used as conditioner networks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from torch import Tensor, nn


class MLP(nn.Sequential):
    """A fully connected network ``in -> hidden... -> out``.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: activation module factory.
        zero_last: initialise the last layer to zero, so that a flow layer whose parameters
            it outputs starts as the identity.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        activation: Callable[[], nn.Module] = nn.ReLU,
        zero_last: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), activation()]
        last = nn.Linear(sizes[-1], out_features)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        super().__init__(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x)


__all__ = ["MLP"]
