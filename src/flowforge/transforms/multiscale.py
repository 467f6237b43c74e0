"""Multiscale factor-out: after each level, some channels (half, by default) leave for the latent.

References:
    Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP. arXiv:1605.08803.
    Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.
    Prenger, Valle, Catanzaro (2019). WaveGlow (early outputs). arXiv:1811.00002.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, Shape, batch_shape_of


class Multiscale(Bijection):
    """Levels of an image or sequence flow, each factoring out some of its output channels.

    Level ``l`` maps its input ``(C_l, H_l, W_l)`` to ``(C'_l, H'_l, W'_l)`` (a Squeeze, steps
    of flow, and typically, last, Glow's learned split prior: a
    :class:`~flowforge.transforms.ChannelCoupling` of the factored channels given the kept
    ones, so the base stays a standard normal). After every level but the last, the *last*
    ``C'_l // 2`` channels (or ``split[l]``) are factored out: they are final latent values and
    skip the levels after. The next level takes the first ``C'_l - C'_l // 2`` channels.
    Sequences ``(C, T)`` work the same way (WaveGlow's early outputs: a few channels leave
    every few steps of flow, the length unchanged).

    The latent is one vector of ``C H W`` values, in this documented order: the factored
    channels of level 0 flattened ``(c, h, w)`` row-major, then those of level 1, ..., then
    the output of the last level flattened the same way.

    Args:
        levels: the levels, in the forward (data -> latent) order; each level's
            ``event_shape`` must be the kept part of the previous level's output.
        split: channels factored out after each level but the last (default: half of each
            level's output channels, rounded down).

    Example:
        >>> import torch, flowforge as ff
        >>> T = ff.transforms
        >>> ms = T.Multiscale([T.Squeeze((1, 4, 4)), T.Squeeze((2, 2, 2))])
        >>> z, ladj = ms(torch.randn(3, 1, 4, 4))
        >>> z.shape, ms.forward_shape((1, 4, 4)), ms.parts
        (torch.Size([3, 16]), (16,), [(2, 2, 2), (8, 1, 1)])
    """

    def __init__(self, levels: Sequence[Bijection], split: Sequence[int] | None = None) -> None:
        if len(levels) == 0:
            raise ValueError("Multiscale needs at least one level, got none")
        super().__init__(levels[0].event_shape)
        rank = len(self.event_shape)
        if rank not in (2, 3):
            raise ValueError(
                f"Multiscale: expected levels on images (C, H, W) or sequences (C, T), got "
                f"{self.event_shape}"
            )
        if split is not None and len(split) != len(levels) - 1:
            raise ValueError(
                f"Multiscale: split gives the channels factored out after each level but the "
                f"last, so {len(levels) - 1} numbers; got {len(split)}"
            )
        self.levels = nn.ModuleList(levels)
        self.parts: list[Shape] = []  # the latent's parts, in order
        self.kept: list[int] = []  # channels that go on after each level but the last
        for i, level in enumerate(levels):
            out = tuple(level.forward_shape(level.event_shape))
            if len(out) != rank:
                raise ValueError(
                    f"Multiscale: level {i} outputs {out}, not an event of rank {rank} like "
                    f"its input {self.event_shape}"
                )
            if i == len(levels) - 1:
                self.parts.append(out)
                break
            c, space = out[0], out[1:]
            gone = c // 2 if split is None else int(split[i])
            if not 1 <= gone < c:
                raise ValueError(
                    f"Multiscale: level {i} outputs {c} channels; it can factor out 1 to "
                    f"{c - 1} of them, got {gone}"
                )
            kept = c - gone
            self.kept.append(kept)
            self.parts.append((gone, *space))
            following = tuple(levels[i + 1].event_shape)
            if following != (kept, *space):
                raise ValueError(
                    f"Multiscale: level {i + 1} takes events of shape {following}, but level "
                    f"{i} keeps {(kept, *space)} (the first {kept} of its {c} output channels)"
                )
        self.sizes = [math.prod(p) for p in self.parts]
        self.latent_size = sum(self.sizes)
        if self.latent_size != math.prod(self.event_shape):
            raise ValueError(
                f"Multiscale: the levels turn {math.prod(self.event_shape)} values into "
                f"{self.latent_size}; every level must keep the number of values"
            )

    def _forward(
        self, x: Tensor, context: Tensor | None, value_only: bool
    ) -> tuple[Tensor, Tensor | None]:
        batch = batch_shape_of(x, self.event_shape)
        n = len(batch)
        h = x
        total = None if value_only else x.new_zeros(batch)
        pieces: list[Tensor] = []
        levels: list[Bijection] = list(self.levels)  # type: ignore[arg-type]
        for i, level in enumerate(levels):
            if total is None:
                h = level.forward_value(h, context)
            else:
                h, ladj = level(h, context)
                total = total + ladj
            if i < len(self.kept):
                h, out = h.split([self.kept[i], h.shape[n] - self.kept[i]], dim=n)
                pieces.append(out.flatten(n))  # (*, C_l // 2 * H_l * W_l)
        pieces.append(h.flatten(n))
        return torch.cat(pieces, dim=-1), total  # (*, C H W)

    def _inverse(
        self, z: Tensor, context: Tensor | None, value_only: bool
    ) -> tuple[Tensor, Tensor | None]:
        batch = batch_shape_of(z, (self.latent_size,))
        n = len(batch)
        pieces = z.split(self.sizes, dim=-1)
        total = None if value_only else z.new_zeros(batch)
        h = pieces[-1].unflatten(-1, self.parts[-1])
        for i in reversed(range(len(self.levels))):
            if i < len(self.kept):
                out = pieces[i].unflatten(-1, self.parts[i])
                h = torch.cat([h, out], dim=n)
            level: Bijection = self.levels[i]  # type: ignore[assignment]
            if total is None:
                h = level.inverse_value(h, context)
            else:
                h, ladj = level.inverse(h, context)
                total = total + ladj
        return h, total

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z, ladj = self._forward(x, context, value_only=False)
        assert ladj is not None
        return z, ladj

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, ladj = self._inverse(z, context, value_only=False)
        assert ladj is not None
        return x, ladj

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`forward` without ``ladj``: the levels' value-only forward maps."""
        return self._forward(x, context, value_only=True)[0]

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`inverse` without ``ladj``: the levels' value-only inverse maps."""
        return self._inverse(z, context, value_only=True)[0]

    def forward_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != self.event_shape:
            raise ValueError(f"Multiscale takes events of shape {self.event_shape}, got {shape}")
        return (self.latent_size,)

    def inverse_shape(self, shape: Shape) -> Shape:
        if tuple(shape) != (self.latent_size,):
            raise ValueError(
                f"Multiscale.inverse takes latents of shape ({self.latent_size},), got {shape}"
            )
        return self.event_shape


__all__ = ["Multiscale"]
