"""Residual conditioner networks: a residual MLP and a masked residual MADE.

Both are an input layer to width ``H``, ``blocks`` pre-activation residual blocks
``h <- h + W_n act(... W_1 act(h))`` (``n = len(hidden)`` layers of width ``H`` each) and an
output layer ``W_out act(h)``, zero-initialised by default so that a flow layer starts as the
identity. Weights and biases live in one flat parameter, as in :class:`~flowforge.nn.MLP` and
:class:`~flowforge.nn.MADE`, whose subclasses they are (so the fused kernels, which implement
the plain networks exactly, never take them).

In the masked network every hidden layer has the same degrees (a MADE's degrees of width
``H``): a block's masks map degree-``d`` units to units of degree ``>= d`` and the residual
adds units of identical degrees, so output ``i`` still depends only on the inputs of lower
degree.

References:
    He, Zhang, Ren, Sun (2016). Identity Mappings in Deep Residual Networks.
    arXiv:1603.05027.
    Durkan, Bekasov, Murray, Papamakarios (2019). Neural Spline Flows. arXiv:1906.04032
    (residual conditioners, masked residual blocks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.nn.made import MADE
from flowforge.nn.mlp import MLP


def _block_layers(hidden: Sequence[int], blocks: int) -> tuple[int, ...]:
    """The hidden sizes of the equivalent plain network: ``(H,) * (1 + blocks * len(hidden))``.

    Raises:
        ValueError: unless ``blocks >= 1`` and ``hidden`` is a non-empty run of one width.
    """
    widths = [int(h) for h in hidden]
    if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
        raise ValueError(f"expected blocks >= 1, got {blocks!r}")
    if not widths or len(set(widths)) != 1:
        raise ValueError(
            f"residual blocks need hidden layers of one width (H, ..., H), got {tuple(widths)}"
        )
    return (widths[0],) * (1 + blocks * len(widths))


def _residual(
    h: Tensor,
    layers: Sequence[tuple[Tensor, Tensor]],
    activations: Sequence[nn.Module],
    per_block: int,
    dropout: float,
    training: bool,
) -> Tensor:
    """The residual blocks and the output layer on ``h``, the input layer's output ``(*, H)``."""

    def act(k: int, x: Tensor) -> Tensor:
        x = activations[k](x)  # never in place: x may be the residual stream
        return F.dropout(x, dropout, training) if dropout else x

    k = 0
    for start in range(1, len(layers) - 1, per_block):
        r = h
        for w, b in layers[start : start + per_block]:
            r = F.linear(act(k, r), w, b)
            k += 1
        h = h + r
    w, b = layers[-1]
    return F.linear(act(k, h), w, b)


class ResidualMLP(MLP):
    """A residual network ``in -> H -> blocks -> out``.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: widths ``(H, ..., H)`` of each block's layers (one width; ``len(hidden)``
            layers per block).
        blocks: number of residual blocks, ``>= 1``.
        activation: activation module factory, or a name in
            :data:`~flowforge.nn.activations.ACTIVATIONS`.
        zero_last: zero-initialise the output layer.
        dropout: probability of zeroing each hidden activation, in training mode only.

    Example:
        >>> import torch
        >>> net = ResidualMLP(3, 2, hidden=(16, 16), blocks=2, zero_last=False)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
        >>> len(net.layers())   # input, 2 blocks of 2, output
        6
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        blocks: int = 2,
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
        dropout: float = 0.0,
    ) -> None:
        sizes = _block_layers(hidden, blocks)
        super().__init__(in_features, out_features, sizes, activation, zero_last, dropout)
        self.blocks, self.per_block = int(blocks), len(hidden)

    def forward(self, x: Tensor) -> Tensor:
        layers = self.layers()
        w, b = layers[0]
        h = F.linear(x, w, b)
        return _residual(
            h, layers, list(self.activations), self.per_block, self.dropout, self.training
        )


class ResidualMADE(MADE):
    """A masked residual MADE: output block ``i`` depends only on inputs of lower degree.

    The same interface as :class:`~flowforge.nn.MADE` (output ``(*, D * P)`` laid out
    ``(D, P)``, context of degree 0); its hidden layers are residual blocks.

    Args:
        features: number of inputs ``D``.
        params_per_dim: outputs per input ``P``.
        hidden: widths ``(H, ..., H)`` of each block's layers (one width).
        blocks: number of residual blocks, ``>= 1``.
        context: size ``C`` of context inputs.
        order: degrees of the inputs, a permutation of ``1..D``; default ``1..D``.
        activation: activation module factory, or a name in
            :data:`~flowforge.nn.activations.ACTIVATIONS`.
        zero_last: zero-initialise the output layer.
        dropout: probability of zeroing each hidden activation, in training mode only.
        save_order: keep the order in the state dict (see :class:`~flowforge.nn.MADE`).

    Example:
        >>> import torch
        >>> made = ResidualMADE(3, 2, hidden=(8,), blocks=2, zero_last=False)
        >>> x = torch.randn(1, 3, requires_grad=True)
        >>> made(x)[0, 2:4].sum().backward()   # outputs of input 1 see input 0 only
        >>> x.grad[0].ne(0).tolist()
        [True, False, False]
    """

    def __init__(
        self,
        features: int,
        params_per_dim: int,
        hidden: Sequence[int] = (128, 128),
        blocks: int = 2,
        *,
        context: int = 0,
        order: Tensor | Sequence[int] | None = None,
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
        dropout: float = 0.0,
        save_order: bool = False,
    ) -> None:
        sizes = _block_layers(hidden, blocks)
        super().__init__(
            features,
            params_per_dim,
            sizes,
            context=context,
            order=order,
            activation=activation,
            zero_last=zero_last,
            dropout=dropout,
            save_order=save_order,
        )
        self.blocks, self.per_block = int(blocks), len(hidden)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        dim: int | None = None,
        param_major: bool = False,
        blocked: bool = False,
    ) -> Tensor:
        """Outputs ``(*, D * P)``; with ``dim``, those of dimension ``dim`` ``(*, P)``; with
        ``param_major`` or ``blocked``, the same values as ``(*, D, P)`` (see
        :meth:`flowforge.nn.MADE.forward`; here their memory layout is not promised)."""
        masked = [(w * m, b) for w, b, m in self.layers()]
        w, b = masked[0]
        h = F.linear(self._inputs(x, context), w, b)
        out = _residual(
            h, masked, list(self.activations), self.per_block, self.dropout, self.training
        )
        p = self.params_per_dim
        if dim is not None:
            return out[..., dim * p : (dim + 1) * p]
        if param_major or blocked:
            return out.unflatten(-1, (self.features, p))
        return out

    def forward_dim(
        self, x: Tensor, context: Tensor | None, dim: int, layers: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """The outputs of dimension ``dim``, ``(*, P)`` (a whole pass; ``layers`` unused)."""
        return self.forward(x, context, dim=dim)


__all__ = ["ResidualMADE", "ResidualMLP"]
