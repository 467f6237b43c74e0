"""Multi-layer perceptrons used as conditioner networks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.functional.flat import join_layers, layer_sizes, split_layers
from flowforge.nn.activations import activation_factory, check_dropout


def compiled_linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``F.linear(x, w, b)`` as traced under ``torch.compile``.

    A layer with few inputs (a MADE's or coupling network's first layer at small ``D``)
    gets its weight as a contiguous transposed copy: the weight's gradient is then the
    product ``x.T @ grad``, with a wide output, instead of ``grad.T @ x``, whose output has
    a handful of columns and runs several times below the matmul rate in BLAS (the
    compiled graph otherwise computes the latter).
    """
    if w.shape[1] >= 16:
        return F.linear(x, w, b)
    out = x @ w.t().contiguous()
    return out if b is None else out + b


class MLP(nn.Module):
    """A fully connected network ``in -> hidden... -> out``.

    Like :class:`flowforge.nn.MADE`, it keeps all weights and biases in one flat parameter,
    ``flat`` (layer by layer: the ``(out, in)`` weight row-major, then the bias), so
    per-parameter optimizer loops touch one tensor; :meth:`layers` gives the views.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: activation module factory, or a name in
            :data:`~flowforge.nn.activations.ACTIVATIONS` (``"tanh"``).
        zero_last: initialise the last layer to zero, so that a flow layer whose parameters
            it outputs starts as the identity.
        dropout: probability of zeroing each hidden activation, in training mode only
            (``net.train()``); ``net.eval()`` is deterministic.

    Example:
        >>> import torch
        >>> net = MLP(3, 2, hidden=(16,), zero_last=False)
        >>> net(torch.randn(5, 3)).shape
        torch.Size([5, 2])
        >>> [tuple(w.shape) for w, b in net.layers()], net.flat.numel()
        ([(16, 3), (2, 16)], 98)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (128, 128),
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dropout = check_dropout(dropout)
        make_activation = activation_factory(activation)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        sizes = [self.in_features, *hidden, self.out_features]
        layers: list[tuple[Tensor, Tensor]] = []
        for k, (a, b) in enumerate(itertools.pairwise(sizes)):
            linear = nn.Linear(a, b)  # nn.Linear's initialisation
            weight, bias = linear.weight.detach(), linear.bias.detach()
            if zero_last and k == len(sizes) - 2:
                weight, bias = torch.zeros_like(weight), torch.zeros_like(bias)
            layers.append((weight, bias))
        self.flat = nn.Parameter(join_layers(layers))
        self.shapes = [(b, a) for a, b in itertools.pairwise(sizes)]
        self._sizes = layer_sizes(self.shapes)
        self.layer_widths = tuple(o for o, _ in self.shapes)
        self.activations = nn.ModuleList(make_activation() for _ in hidden)

    def layers(self) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` of each linear layer, views of ``flat``."""
        return split_layers(self.flat, self.shapes, self._sizes)

    def forward(self, x: Tensor) -> Tensor:
        layers = self.layers()
        inplace = not torch.compiler.is_compiling()
        for (w, b), act in zip(layers, self.activations):
            h = F.linear(x, w, b) if inplace else compiled_linear(x, w, b)
            # ReLU in place on the linear layer's fresh output (its backward does not need it).
            x = torch.relu_(h) if inplace and type(act) is nn.ReLU else act(h)
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        w, b = layers[-1]
        return F.linear(x, w, b)


__all__ = ["MLP"]
