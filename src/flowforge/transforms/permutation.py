"""Fixed permutations of the feature dimension (volume preserving)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of


class Permutation(Bijection):
    """Permute the last dimension: ``z = x[..., perm]``.

    Args:
        perm: a permutation of ``0..D-1``.
    """

    perm: Tensor
    inv_perm: Tensor

    def __init__(self, perm: Tensor) -> None:
        perm = torch.as_tensor(perm, dtype=torch.long)
        if sorted(perm.tolist()) != list(range(perm.numel())):
            raise ValueError(
                f"expected a permutation of 0..{perm.numel() - 1}, got {perm.tolist()}"
            )
        super().__init__(perm.numel())
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        return x[..., self.perm], x.new_zeros(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        return z[..., self.inv_perm], z.new_zeros(batch)


class ReversePermutation(Permutation):
    """Reverse the order of the features.

    Args:
        features: number of features ``D``.
    """

    def __init__(self, features: int) -> None:
        super().__init__(torch.arange(features - 1, -1, -1))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        return x.flip(-1), x.new_zeros(batch)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.forward(z, context)


class RandomPermutation(Permutation):
    """A random permutation drawn once at construction and saved with the model.

    Args:
        features: number of features ``D``.
        generator: optional random generator for reproducible draws.
    """

    def __init__(self, features: int, generator: torch.Generator | None = None) -> None:
        super().__init__(torch.randperm(features, generator=generator))


__all__ = ["Permutation", "RandomPermutation", "ReversePermutation"]
