"""A causal transformer over a sequence of tokens, with a key/value cache for decoding.

The conditioner of :class:`~flowforge.transforms.TransformerAutoregressive`: its output at
position ``t`` depends on the input tokens ``0 .. t-1`` only (the inputs are shifted by one
behind a learned start token), so it holds the parameters of token ``t``'s transform.

References:
    Vaswani et al. (2017). Attention Is All You Need. arXiv:1706.03762.
    Zhai et al. (2024). Normalizing Flows are Capable Generative Models. arXiv:2412.06329.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.nn.activations import check_dropout


@dataclass
class KVCache:
    """The keys and values of the positions decoded so far, one entry per layer.

    Without gradients and with a ``capacity``, each layer's keys and values live in one
    buffer of ``capacity`` positions written in place (decoding ``T`` positions copies
    nothing); otherwise each step concatenates (differentiable).

    Attributes:
        batch: ``N``, the number of sequences decoded side by side.
        capacity: the number of positions to preallocate, or ``None``.
        keys: per layer, ``(N, heads, t, width / heads)`` (or the buffer of ``capacity``).
        values: per layer, the same shape.
        length: ``t``, the number of positions cached.
        inputs: the input tokens read so far, each ``(N, D_in)`` (kept for a network with a
            local embedding, which reads a token's earlier neighbours).
    """

    batch: int
    capacity: int | None = None
    keys: list[Tensor] = field(default_factory=list)
    values: list[Tensor] = field(default_factory=list)
    length: int = 0
    inputs: list[Tensor] = field(default_factory=list)


class CausalBlock(nn.Module):
    """A pre-norm transformer block: ``h + attn(norm(h))``, then ``h + mlp(norm(h))``.

    Args:
        width: model width ``E``.
        heads: attention heads (``E`` divisible by it).
        expansion: hidden width of the MLP, in multiples of ``E``.
        dropout: of the attention's and the MLP's outputs before each residual sum (training
            mode only).
    """

    def __init__(self, width: int, heads: int, expansion: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()  # none: no call
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width)
        )

    def _qkv(self, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)  # (N, T, E) each
        n, t, e = q.shape
        shape = (n, t, self.heads, e // self.heads)
        # (N, T, E) -> (N, H, T, E/H)
        return (
            q.view(shape).transpose(1, 2),
            k.view(shape).transpose(1, 2),
            v.view(shape).transpose(1, 2),
        )

    def _out(self, h: Tensor, attended: Tensor) -> Tensor:
        # (N, H, T, E/H) -> (N, T, E)
        h = h + self.drop(self.proj(attended.transpose(1, 2).flatten(2)))
        return h + self.drop(self.mlp(self.norm2(h)))

    def forward(self, h: Tensor, query_scale: float = 1.0, bias: Tensor | None = None) -> Tensor:
        """``(N, T, E) -> (N, T, E)``; position ``t`` attends to positions ``<= t``.

        ``bias``: ``(H, T, T)`` added to the attention logits (already causal: ``-inf`` above
        the diagonal), or ``None`` for plain causal attention.
        """
        q, k, v = self._qkv(h)
        if bias is None:
            a = F.scaled_dot_product_attention(q * query_scale, k, v, is_causal=True)
        else:
            mask = (bias * query_scale).to(q.dtype)  # autocast: q may be bf16
            a = F.scaled_dot_product_attention(q * query_scale, k, v, mask)
        return self._out(h, a)

    def step(
        self,
        h: Tensor,
        cache: KVCache,
        layer: int,
        query_scale: float = 1.0,
        bias: Tensor | None = None,
    ) -> Tensor:
        """One new position ``(N, 1, E)`` given the cached ones; appends its keys/values.

        ``bias``: ``(H, 1, t + 1)``, the new position's row of :meth:`forward`'s bias.
        """
        q, k, v = self._qkv(h)  # (N, H, 1, E/H)
        t = cache.length
        if cache.capacity is not None and not torch.is_grad_enabled():
            if layer == len(cache.keys):  # the first position: the buffers
                n, heads, _, size = k.shape
                cache.keys.append(k.new_empty(n, heads, cache.capacity, size))
                cache.values.append(v.new_empty(n, heads, cache.capacity, size))
            cache.keys[layer][:, :, t : t + 1] = k
            cache.values[layer][:, :, t : t + 1] = v
            keys, values = cache.keys[layer][:, :, : t + 1], cache.values[layer][:, :, : t + 1]
        else:
            if layer == len(cache.keys):  # the first position
                cache.keys.append(k)
                cache.values.append(v)
            else:
                cache.keys[layer] = torch.cat([cache.keys[layer], k], dim=2)
                cache.values[layer] = torch.cat([cache.values[layer], v], dim=2)
            keys, values = cache.keys[layer], cache.values[layer]
        # one query over every cached position: nothing to mask
        mask = None if bias is None else (bias * query_scale).to(q.dtype)
        a = F.scaled_dot_product_attention(q * query_scale, keys, values, mask)
        return self._out(h, a)


class RelativeBias(nn.Module):
    """Learned attention biases of a causal transformer over tokens on a ``rows x cols``
    grid in raster order, one per head and relative grid offset (Shaw et al. 2018; Swin's
    relative position bias): locality in the attention rather than in the embedding.

    Position ``t`` of the shifted sequence predicts token ``t`` and holds token ``t - 1``, so
    the bias of query ``i`` on key ``j >= 1`` is the table's entry for the offset of token
    ``i`` from token ``j - 1``; key 0 (the start token) has its own entry. Starts at zero
    (plain attention).

    Args:
        grid: ``(rows, cols)``.
        heads: attention heads.
    """

    def __init__(self, grid: tuple[int, int], heads: int) -> None:
        super().__init__()
        rows, cols = (int(g) for g in grid)
        if min(rows, cols) < 1:
            raise ValueError(f"RelativeBias: expected a grid of positive sides, got {grid}")
        tokens = rows * cols
        r = torch.arange(tokens) // cols
        c = torch.arange(tokens) % cols
        offset = (r[:, None] - r[None, :] + rows - 1) * (2 * cols - 1) + c[:, None] - c[None, :]
        offset = offset + cols - 1  # (T, T): query token i, key token j
        start = (2 * rows - 1) * (2 * cols - 1)  # the start token's entry
        index = torch.full((tokens, tokens), start, dtype=torch.long)
        index[:, 1:] = offset[:, :-1]  # key position j holds token j - 1
        self.index: Tensor
        self.register_buffer("index", index, persistent=False)
        self.table = nn.Parameter(torch.zeros(heads, start + 1))

    def forward(self) -> Tensor:
        """``(H, T, T)``: the biases, ``-inf`` where a key comes after its query."""
        t = self.index.shape[0]
        future = torch.ones(t, t, dtype=torch.bool, device=self.index.device).triu(1)
        return self.table[:, self.index].masked_fill(future, float("-inf"))


class CausalConv(nn.Module):
    """``(N, T, D) -> (N, T, E)``: a 3x3 convolution over tokens on a ``rows x cols`` grid in
    raster order, masked so that output ``t`` reads tokens ``<= t`` only (PixelCNN's mask
    "B": the row above and the left neighbour and itself).

    Args:
        grid: ``(rows, cols)``.
        features: ``D``.
        width: ``E``.
    """

    def __init__(self, grid: tuple[int, int], features: int, width: int) -> None:
        super().__init__()
        self.rows, self.cols = (int(g) for g in grid)
        if min(self.rows, self.cols) < 1:
            raise ValueError(f"CausalConv: expected a grid of positive sides, got {grid}")
        self.conv = nn.Conv2d(features, width, 3, padding=1)
        mask = torch.ones(3, 3)
        mask[1, 2:] = 0  # right of the centre
        mask[2:] = 0  # the row below
        self.mask: Tensor
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        n, _, d = x.shape
        grid = x.transpose(1, 2).reshape(n, d, self.rows, self.cols)
        w = self.conv.weight * self.mask
        out = F.conv2d(grid, w, self.conv.bias, padding=1)  # (N, E, rows, cols)
        return out.flatten(2).transpose(1, 2)


class CausalTransformer(nn.Module):
    """``(N, T, D_in) -> (N, T, D_out)``, output ``t`` a function of input tokens ``< t``.

    The input sequence is the learned start token followed by the embedded tokens ``0 ..
    T-2``, plus a learned position embedding and, with a context, a linear embedding of the
    context vector (a one-hot class, say; the zero vector is then the null class). Pre-norm
    blocks with torch's ``scaled_dot_product_attention`` (``is_causal=True``: flash and
    memory-efficient kernels where the device has them), a final norm and a linear output
    layer that starts at zero. :meth:`step` decodes one position at a time with a
    :class:`KVCache`; it equals :meth:`forward` position by position.

    Args:
        features: ``D_in``, the size of one input token.
        out_features: ``D_out``, the size of one output.
        tokens: ``T``, the sequence length (the size of the position embedding).
        width: model width ``E``.
        heads: attention heads (``E`` divisible by it).
        layers: number of transformer blocks.
        context: size ``C`` of the context vector (0: none).
        expansion: MLP hidden width in multiples of ``E``.
        dropout: of each block's attention and MLP outputs, in training mode (0: none).
        token_noise: standard deviation of Gaussian noise added to the input tokens that the
            network reads (not to its output's targets), in training mode only (0: none): a
            regulariser of the conditioner; evaluation and decoding read the clean tokens.
        grid: ``(rows, cols)`` with ``rows * cols = T``: the tokens lie on this grid in
            raster order, and each token's embedding adds a causal (PixelCNN-style masked)
            3x3 convolution over its grid neighbours at or before it in that order (the rows
            above, the left on its own row): locality, as in a convolutional coupling.
            ``None``: the linear embedding only.
        relative: ``(rows, cols)`` with ``rows * cols = T``: each block adds a learned
            :class:`RelativeBias` over this grid of tokens to its attention logits (``None``:
            none).

    Example:
        >>> import torch
        >>> net = CausalTransformer(3, 6, tokens=5, width=16, heads=2, layers=1)
        >>> _ = torch.nn.init.normal_(net.out.weight)  # a zero output layer hides causality
        >>> x = torch.randn(2, 5, 3)
        >>> y = net(x)
        >>> x2 = x.clone(); x2[:, 3] += 1.0  # token 3 changes outputs 4.. only
        >>> bool(torch.equal(net(x2)[:, :4], y[:, :4])), bool((net(x2)[:, 4] != y[:, 4]).any())
        (True, True)
    """

    def __init__(
        self,
        features: int,
        out_features: int,
        tokens: int,
        width: int = 128,
        heads: int = 4,
        layers: int = 2,
        *,
        context: int = 0,
        expansion: int = 4,
        dropout: float = 0.0,
        token_noise: float = 0.0,
        grid: tuple[int, int] | None = None,
        relative: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if min(features, out_features, tokens, width, heads, layers) < 1 or context < 0:
            raise ValueError(
                "CausalTransformer: expected positive sizes and context >= 0, got "
                f"features={features}, out_features={out_features}, tokens={tokens}, "
                f"width={width}, heads={heads}, layers={layers}, context={context}"
            )
        if width % heads:
            raise ValueError(
                f"CausalTransformer: expected width divisible by heads, got {width} and {heads}"
            )
        self.features, self.out_features, self.tokens = features, out_features, tokens
        if not (token_noise >= 0 and math.isfinite(token_noise)):
            raise ValueError(f"CausalTransformer: expected token_noise >= 0, got {token_noise!r}")
        self.context = context
        self.token_noise = float(token_noise)
        self.embed = nn.Linear(features, width)
        self.local = None if grid is None else CausalConv(grid, features, width)
        if self.local is not None and self.local.rows * self.local.cols != tokens:
            raise ValueError(f"CausalTransformer: expected a grid of {tokens} tokens, got {grid}")
        self.start = nn.Parameter(torch.randn(width) * 0.02)
        self.position = nn.Parameter(torch.randn(tokens, width) * 0.02)
        self.context_embed = nn.Linear(context, width) if context else None
        self.blocks = nn.ModuleList(
            CausalBlock(width, heads, expansion, check_dropout(dropout)) for _ in range(layers)
        )
        self.relative = (
            None
            if relative is None
            else nn.ModuleList(RelativeBias(relative, heads) for _ in range(layers))
        )
        if relative is not None and relative[0] * relative[1] != tokens:
            raise ValueError(
                f"CausalTransformer: expected a relative grid of {tokens} tokens, got {relative}"
            )
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_features)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _offset(self, context: Tensor | None, n: int) -> Tensor:
        """What every position adds: its position embedding and the context's, ``(N|1, T, E)``."""
        pos = self.position.unsqueeze(0)  # (1, T, E)
        if self.context_embed is None:
            return pos
        if context is None or context.shape != (n, self.context):
            found = None if context is None else tuple(context.shape)
            raise ValueError(f"expected a context of shape ({n}, {self.context}), got {found}")
        return pos + self.context_embed(context).unsqueeze(1)

    def forward(
        self, x: Tensor, context: Tensor | None = None, attention_temperature: float = 1.0
    ) -> Tensor:
        """All outputs at once.

        Args:
            x: tokens ``(N, T, D_in)``.
            context: ``(N, C)`` when the network takes a context.
            attention_temperature: divides every attention logit (1: the trained model;
                above 1 flattens the attention, TarFlow's guidance of unconditional models).

        Returns:
            ``(N, T, D_out)``; output ``t`` depends on ``x[:, :t]`` (and the context) only.
        """
        n, t, _ = x.shape
        start = self.start.expand(n, 1, -1)  # (N, 1, E)
        read = x[:, :-1]
        if self.training and self.token_noise > 0:
            read = read + self.token_noise * torch.randn_like(read)
        e = self.embed(read)
        if self.local is not None:
            e = e + self.local(torch.cat([read, x[:, -1:]], dim=1))[:, :-1]
        h = torch.cat([start, e], dim=1)  # (N, T, E), shifted by one
        h = h + self._offset(context, n)[:, :t]
        for i, block in enumerate(self.blocks):
            bias = None if self.relative is None else self.relative[i]()[:, :t, :t]
            h = block(h, 1.0 / attention_temperature, bias)
        return self.out(self.norm(h))

    def step(
        self,
        previous: Tensor | None,
        cache: KVCache,
        context: Tensor | None = None,
        attention_temperature: float = 1.0,
    ) -> Tensor:
        """The output at the next position ``t = cache.length``, from token ``t - 1``.

        Args:
            previous: token ``t - 1``, ``(N, D_in)``; ``None`` at ``t = 0`` (the start token).
            cache: the keys and values of positions ``< t`` (start with ``KVCache(N)``);
                extended in place.
            context: ``(N, C)`` when the network takes a context.
            attention_temperature: as in :meth:`forward`.

        Returns:
            Output ``t``, ``(N, D_out)``, equal to ``forward(x)[:, t]``.
        """
        t = cache.length
        if previous is None:
            if t != 0:
                raise ValueError(f"expected the previous token at position {t}, got None")
            h = self.start.expand(cache.batch, 1, -1)  # (N, 1, E)
        else:
            h = self.embed(previous).unsqueeze(1)  # (N, 1, E)
            if self.local is not None:
                cache.inputs.append(previous)
                seen = torch.stack(cache.inputs, 1)  # (N, t, D_in)
                pad = seen.new_zeros(seen.shape[0], self.tokens - t, seen.shape[2])
                h = h + self.local(torch.cat([seen, pad], 1))[:, t - 1 : t]  # sees tokens < t
        n = cache.batch
        h = h + self._offset(context, n)[:, t : t + 1]
        for i, block in enumerate(self.blocks):
            assert isinstance(block, CausalBlock)
            bias = None if self.relative is None else self.relative[i]()[:, t : t + 1, : t + 1]
            h = block.step(h, cache, i, 1.0 / attention_temperature, bias)
        cache.length = t + 1
        return self.out(self.norm(h)).squeeze(1)


__all__ = ["CausalBlock", "CausalConv", "CausalTransformer", "KVCache", "RelativeBias"]
