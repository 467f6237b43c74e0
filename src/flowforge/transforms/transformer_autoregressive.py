"""Transformer autoregressive bijection: a causal transformer over tokens (image patches or
groups of features) gives each token's transformer parameters from the tokens before it.

References:
    Zhai, Zhang, Gu, Lucas, Yan, Dinh, Bautista, Susskind, Gatsby, Sohl-Dickstein (2024).
    Normalizing Flows are Capable Generative Models. arXiv:2412.06329.
    Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density
    Estimation. arXiv:1705.07057.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, as_shape, batch_shape_of
from flowforge.nn.causal_transformer import CausalTransformer, KVCache
from flowforge.transforms.affine import Affine
from flowforge.transforms.transformer import Transformer


@dataclass(frozen=True)
class Guidance:
    """Guidance of sampling: each token's raw parameters ``p = p_c + w (p_c - p_u)``.

    ``p_c`` is the model's own output; ``p_u`` the weaker model's: the null (zero) context
    for a conditional network, and attention logits divided by ``attention_temperature``.

    Attributes:
        weight: ``w`` (0: no guidance).
        attention_temperature: the weak model's attention temperature (1: unchanged).
    """

    weight: float = 0.0
    attention_temperature: float = 1.0


class TransformerAutoregressive(Bijection):
    """``z_t = tau(x_t; net(x_{<t}, c)_t)`` over ``T`` tokens: one pass for the density.

    Tokens: an image ``(C, H, W)`` is cut into ``T = (H / p)(W / p)`` patches of ``p x p``
    pixels, each a token of ``C p^2`` values (row-major over patches); a vector ``(D,)`` into
    ``T = D / p`` tokens of ``p`` consecutive features. ``reverse=True`` runs the
    autoregression over the tokens in reverse order (TarFlow alternates it between blocks).
    The network is a :class:`~flowforge.nn.CausalTransformer` whose output ``t`` sees tokens
    ``< t`` (the first a learned start token and the context): ``forward`` (data -> latent)
    is one pass; ``inverse`` decodes token by token with a key/value cache (``T`` steps of
    one position each); :meth:`inverse_uncached` is the reference that reruns the whole
    sequence per token (``T`` full passes), equal to it.

    Sampling can be guided (:func:`guided`); a guided inverse is no longer this bijection's
    inverse (the density is unguided), so use it to sample only.

    Args:
        shape: the event shape, ``(C, H, W)`` or ``(D,)``.
        net: a :class:`~flowforge.nn.CausalTransformer` with ``features`` the token size,
            ``out_features`` the token size times the transformer's parameters per value and
            ``tokens = T``.
        patch: ``p``, the patch side (images) or the number of features per token (vectors).
        reverse: reverse the token order.
        shift: roll the event by this many pixels down and right (images) or features
            (vectors) before cutting it into tokens, and back after: the patches of a layer
            with ``shift = patch // 2`` straddle those of an unshifted one, so values that
            share a token in one layer condition each other in the next (0: none).
        transformer: the elementwise transformer (default :class:`Affine` with bound 3, the
            project's bounded scale).

    Example:
        >>> import torch, flowforge as ff
        >>> net = ff.nn.CausalTransformer(4, 8, tokens=4, width=16, heads=2, layers=1)
        >>> b = TransformerAutoregressive((1, 4, 4), net, patch=2)
        >>> _ = torch.nn.init.normal_(net.out.weight, std=0.1)
        >>> x = torch.randn(3, 1, 4, 4)
        >>> z, ladj = b(x)
        >>> torch.allclose(b.inverse(z)[0], x, atol=1e-5), ladj.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        net: CausalTransformer,
        patch: int = 1,
        reverse: bool = False,
        transformer: Transformer | None = None,
        shift: int = 0,
    ) -> None:
        shape = as_shape(shape)
        super().__init__(shape)
        self.patch, self.reverse, self.shift = int(patch), bool(reverse), int(shift)
        self.transformer = Affine() if transformer is None else transformer
        self.num_tokens, self.token_size = token_layout(shape, self.patch)
        expected = (self.token_size, self.token_size * self.transformer.params_per_dim)
        found = (net.features, net.out_features)
        if found != expected or net.tokens != self.num_tokens:
            raise ValueError(
                f"expected a CausalTransformer of {self.num_tokens} tokens, features "
                f"{expected[0]} and out_features {expected[1]} for shape {shape} with patch "
                f"{self.patch}; got {net.tokens} tokens, features {found[0]}, out_features "
                f"{found[1]}"
            )
        self.net = net
        self.guidance: Guidance | None = None

    # ------------------------------------------------------------------ tokens
    def _tokens(self, x: Tensor) -> Tensor:
        """``(N, *event) -> (N, T, d)`` in autoregressive order."""
        n, p = x.shape[0], self.patch
        if self.shift:
            x = x.roll(self._shifts(), self._dims())
        if len(self.event_shape) == 3:
            c, h, w = self.event_shape
            x = x.reshape(n, c, h // p, p, w // p, p).permute(
                0, 2, 4, 1, 3, 5
            )  # (N, h, w, C, p, p)
        x = x.reshape(n, self.num_tokens, self.token_size)  # (N, T, d)
        return x.flip(1) if self.reverse else x

    def _untokens(self, t: Tensor) -> Tensor:
        """``(N, T, d) -> (N, *event)``, inverse of :meth:`_tokens`."""
        n, p = t.shape[0], self.patch
        if self.reverse:
            t = t.flip(1)
        if len(self.event_shape) == 3:
            c, h, w = self.event_shape
            t = t.reshape(n, h // p, w // p, c, p, p).permute(
                0, 3, 1, 4, 2, 5
            )  # (N, C, h, p, w, p)
        x = t.reshape(n, *self.event_shape)
        return x.roll([-s for s in self._shifts()], self._dims()) if self.shift else x

    def _dims(self) -> list[int]:
        return [-2, -1] if len(self.event_shape) == 3 else [-1]

    def _shifts(self) -> list[int]:
        return [self.shift] * len(self._dims())

    def _flat(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor | None]:
        batch = batch_shape_of(x, self.event_shape)
        n = math.prod(batch)
        if context is not None:
            context = context.expand(*batch, context.shape[-1]).reshape(n, -1)
        return x.reshape(n, *self.event_shape), context

    def _params(self, out: Tensor) -> Tensor:
        """Network outputs ``(*, d P)`` as transformer parameters ``(*, d, P)``."""
        return out.unflatten(-1, (self.token_size, self.transformer.params_per_dim))

    # ---------------------------------------------------------------- density
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        flat, ctx = self._flat(x, context)
        tokens = self._tokens(flat)  # (N, T, d)
        z, ladj = self.transformer(tokens, self._params(self.net(tokens, ctx)))
        return self._untokens(z).reshape(x.shape), ladj.sum((-1, -2)).reshape(batch)

    # --------------------------------------------------------------- sampling
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Decode token by token with a key/value cache: ``T`` steps of one position."""
        return self._solve(z, context, cached=True)

    def inverse_uncached(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The reference inverse: ``T`` full passes of the network, one per token; equal to
        :meth:`inverse` (a test checks it), ``O(T)`` times its cost."""
        return self._solve(z, context, cached=False)

    def _weak_context(self, ctx: Tensor | None) -> Tensor | None:
        return None if ctx is None else torch.zeros_like(ctx)

    def _solve(self, z: Tensor, context: Tensor | None, cached: bool) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        flat, ctx = self._flat(z, context)
        zt = self._tokens(flat)  # (N, T, d)
        n, steps, _ = zt.shape
        g = self.guidance if self.guidance is not None and self.guidance.weight != 0 else None
        weak_ctx = self._weak_context(ctx)
        caches = (KVCache(n, steps), KVCache(n, steps))
        xs: list[Tensor] = []
        ladj = zt.new_zeros(n)
        for t in range(steps):
            raw = self._raw(xs, zt, t, ctx, 1.0, caches[0], cached)
            if g is not None:
                weak = self._raw(xs, zt, t, weak_ctx, g.attention_temperature, caches[1], cached)
                raw = raw + g.weight * (raw - weak)
            xt, lt = self.transformer.inverse(zt[:, t], self._params(raw))  # (N, d)
            xs.append(xt)
            ladj = ladj + lt.sum(-1)
        x = self._untokens(torch.stack(xs, 1))  # (N, T, d) -> (N, *event)
        return x.reshape(z.shape), ladj.reshape(batch)

    def _raw(
        self,
        xs: list[Tensor],
        zt: Tensor,
        t: int,
        ctx: Tensor | None,
        temperature: float,
        cache: KVCache,
        cached: bool,
    ) -> Tensor:
        """The network's output at token ``t`` given the decoded tokens ``xs`` ``< t``."""
        if cached:
            return self.net.step(xs[-1] if xs else None, cache, ctx, temperature)
        rest = zt.new_zeros(zt.shape[0], zt.shape[1] - t, zt.shape[2])  # never seen by output t
        known = torch.cat([*(x.unsqueeze(1) for x in xs), rest], dim=1)  # (N, T, d)
        return self.net(known, ctx, temperature)[:, t]

    def extra_repr(self) -> str:
        return (
            f"event_shape={self.event_shape}, patch={self.patch}, tokens={self.num_tokens}, "
            f"reverse={self.reverse}" + (f", shift={self.shift}" if self.shift else "")
        )


def token_layout(shape: Sequence[int], patch: int) -> tuple[int, int]:
    """``(T, d)``: the number of tokens and the size of one for ``shape`` cut by ``patch``.

    Example:
        >>> token_layout((3, 8, 8), 2), token_layout((12,), 4)
        ((16, 12), (3, 4))
    """
    shape = tuple(shape)
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1:
        raise ValueError(f"expected patch >= 1, got {patch!r}")
    if len(shape) == 3:
        c, h, w = shape
        if h % patch or w % patch:
            raise ValueError(
                f"expected the height and width divisible by patch {patch}, got {h}x{w}"
            )
        return (h // patch) * (w // patch), c * patch * patch
    if len(shape) == 1:
        if shape[0] % patch:
            raise ValueError(
                f"expected the features divisible by patch {patch} (features per token), "
                f"got {shape[0]}"
            )
        return shape[0] // patch, patch
    raise ValueError(f"expected shape (C, H, W) or (D,), got {shape}")


@contextmanager
def guided(
    module: nn.Module, weight: float, attention_temperature: float = 1.0
) -> Iterator[list[TransformerAutoregressive]]:
    """Within the block, every :class:`TransformerAutoregressive` in ``module`` samples guided.

    Each token's raw parameters become ``p_c + w (p_c - p_u)`` (:class:`Guidance`): ``p_u``
    from the null (all-zero) context for class-conditional flows trained with label
    dropout, and from attention logits divided by ``attention_temperature`` (TarFlow's
    guidance of unconditional models). Only sampling should run inside the block.

    Args:
        module: a flow or bijection holding transformer autoregressive layers.
        weight: the guidance weight ``w`` (0: none).
        attention_temperature: the weak model's attention temperature.

    Raises:
        ValueError: no such layer in ``module``, a weight that is not finite, a temperature
            that is not positive, or guidance of an unconditional network with temperature 1
            (the weak model would be the model itself).

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.TarFlow(features=4, patch=1, blocks=2, layers=1, width=16, heads=2)
        >>> with guided(flow, 1.0, attention_temperature=2.0):
        ...     x = flow.sample(3)
        >>> x.shape
        torch.Size([3, 4])
    """
    layers = [m for m in module.modules() if isinstance(m, TransformerAutoregressive)]
    if not layers:
        raise ValueError("guidance needs a flow with TransformerAutoregressive layers (TarFlow)")
    if not math.isfinite(weight):
        raise ValueError(f"expected a finite guidance weight, got {weight}")
    if not (attention_temperature > 0 and math.isfinite(attention_temperature)):
        raise ValueError(f"expected an attention temperature > 0, got {attention_temperature}")
    if weight != 0 and attention_temperature == 1 and not any(m.net.context for m in layers):
        raise ValueError(
            "guidance of an unconditional flow needs an attention temperature != 1 (the weak "
            "model); got 1"
        )
    previous = [m.guidance for m in layers]
    for m in layers:
        m.guidance = Guidance(float(weight), float(attention_temperature))
    try:
        yield layers
    finally:
        for m, g in zip(layers, previous, strict=True):
            m.guidance = g


__all__ = ["Guidance", "TransformerAutoregressive", "guided", "token_layout"]
