"""MADE: masked autoencoder for distribution estimation, with context inputs.

References:
    Germain, Gregor, Murray, Larochelle (2015). MADE: Masked Autoencoder for Distribution
    Estimation. arXiv:1502.03509.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.functional.flat import join_layers, layer_sizes, split_layers
from flowforge.nn.activations import activation_factory, check_dropout
from flowforge.nn.mlp import compiled_linear


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed binary mask.

    Args:
        mask: ``(out, in)`` binary mask.
        bias: whether to add a bias.
    """

    mask: Tensor

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__(mask.shape[1], mask.shape[0], bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype))
        # Scale the initial weights up to the fan-in each unit really has.
        with torch.no_grad():
            fan_in = self.mask.sum(1, keepdim=True).clamp(min=1)
            self.weight.mul_(torch.sqrt(mask.shape[1] / fan_in))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)

    def forward_rows(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Only the outputs ``start:stop`` of :meth:`forward`, shape ``(*, stop - start)``."""
        w = self.weight[start:stop] * self.mask[start:stop]
        return F.linear(x, w, None if self.bias is None else self.bias[start:stop])


def hidden_degrees(units: int, features: int, context: bool = False) -> Tensor:
    """Degrees of a hidden layer: cycle through ``1 .. max(1, D - 1)``.

    With ``context``, through ``0 .. D - 1``: units of degree 0 see the context only, so the
    first dimension's outputs (degree 1) depend on the context too.
    """
    if context:
        return torch.arange(units) % features
    return torch.arange(units) % max(1, features - 1) + 1


def made_masks(degrees: Tensor, hidden: Sequence[int], context: int) -> list[Tensor]:
    """The boolean ``(out, in)`` masks of a MADE with input ``degrees`` (a permutation of
    ``1..D``) after ``context`` inputs of degree 0; the output layer's rows are ``(D, P)``
    blocks, one row per dimension here (repeat each row ``P`` times)."""
    features = degrees.numel()
    prev = torch.cat([torch.zeros(context, dtype=torch.long), degrees])
    masks: list[Tensor] = []
    for h in hidden:
        deg = hidden_degrees(h, features, context=context > 0)
        masks.append(deg[:, None] >= prev[None, :])
        prev = deg
    masks.append(degrees[:, None] > prev[None, :])
    return masks


def _check_order(order: Tensor, features: int) -> None:
    if sorted(order.tolist()) != list(range(1, features + 1)):
        raise ValueError(f"order must be a permutation of 1..{features}, got {order.tolist()}")


class MADE(nn.Module):
    """A masked MLP whose ``i``-th output block depends only on inputs of lower degree.

    Output ``(*, D * P)`` is laid out as ``(D, P)``: the ``P`` outputs of dimension ``i``
    depend on the inputs ``j`` with ``degree[j] < degree[i]`` and on the whole context.

    All weights and biases live in one flat parameter, ``flat`` (layer by layer: the
    ``(out, in)`` weight row-major, then the bias); :meth:`layers` gives them as views. One
    tensor instead of ``2L`` makes the per-parameter loops of ``torch.optim`` (their default
    on CPU) ``2L`` times cheaper, and the masks are derived buffers, not state.

    Args:
        features: number of inputs ``D``.
        params_per_dim: outputs per input ``P``.
        hidden: hidden layer sizes.
        context: size ``C`` of context inputs (degree 0, seen by every unit).
        order: degrees of the inputs, a permutation of ``1..D``; default ``1..D``.
        activation: activation module factory, or a name in
            :data:`~flowforge.nn.activations.ACTIVATIONS` (``"tanh"``).
        zero_last: zero-initialise the output layer (flow layers start as the identity).
        dropout: probability of zeroing each hidden activation, in training mode only
            (``made.train()``); ``made.eval()`` is deterministic.
        save_order: keep the order (``degrees``) in the state dict, and rebuild the masks
            from a loaded one: for a random order, so that a saved model reloads its own.

    Example:
        >>> import torch
        >>> made = MADE(3, 2, hidden=(8,), zero_last=False)
        >>> x = torch.randn(1, 3, requires_grad=True)
        >>> made(x)[0, 2:4].sum().backward()   # outputs of input 1 ...
        >>> bool(x.grad[0, 0] != 0), bool(x.grad[0, 1] == 0), bool(x.grad[0, 2] == 0)
        (True, True, True)
        >>> [tuple(w.shape) for w, b, m in made.layers()]
        [(8, 3), (6, 8)]
    """

    degrees: Tensor
    param_major_rows: Tensor

    def __init__(
        self,
        features: int,
        params_per_dim: int,
        hidden: Sequence[int] = (128, 128),
        *,
        context: int = 0,
        order: Tensor | Sequence[int] | None = None,
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
        dropout: float = 0.0,
        save_order: bool = False,
    ) -> None:
        super().__init__()
        self.features = int(features)
        self.params_per_dim = int(params_per_dim)
        self.context = int(context)
        self.dropout = check_dropout(dropout)
        make_activation = activation_factory(activation)
        if order is None:
            degrees = torch.arange(1, features + 1)
        else:
            degrees = torch.as_tensor(order, dtype=torch.long)
            _check_order(degrees, self.features)
        self.save_order = bool(save_order)
        self.hidden = tuple(int(h) for h in hidden)
        self.order_version = 0  # bumped when a loaded order replaces the masks
        self.register_buffer("degrees", degrees, persistent=self.save_order)
        masks = self._masks_for(degrees)
        # Rows of the output layer in (P, D) order, for the parameter-major layout.
        d_p = torch.arange(features * self.params_per_dim).view(features, self.params_per_dim)
        self.register_buffer("param_major_rows", d_p.T.flatten(), persistent=False)
        layers: list[tuple[Tensor, Tensor]] = []
        for k, mask in enumerate(masks):
            # nn.Linear's initialisation, weights scaled up to the fan-in each unit really has.
            linear = nn.Linear(mask.shape[1], mask.shape[0])
            fan_in = mask.sum(1, keepdim=True).clamp(min=1)
            weight = linear.weight.detach() * torch.sqrt(mask.shape[1] / fan_in)
            bias = linear.bias.detach()
            if zero_last and k == len(masks) - 1:
                weight, bias = torch.zeros_like(weight), torch.zeros_like(bias)
            layers.append((weight, bias))
            self.register_buffer(f"mask{k}", mask.float(), persistent=False)
        self.flat = nn.Parameter(join_layers(layers))
        self.shapes = [(int(m.shape[0]), int(m.shape[1])) for m in masks]
        self._sizes = layer_sizes(self.shapes)
        self.layer_widths = tuple(o for o, _ in self.shapes)
        self.activations = nn.ModuleList(make_activation() for _ in hidden)
        self.all_relu = all(type(a) is nn.ReLU for a in self.activations)

    def _masks_for(self, degrees: Tensor) -> list[Tensor]:
        masks = made_masks(degrees.cpu(), self.hidden, self.context)
        masks[-1] = masks[-1].repeat_interleave(self.params_per_dim, dim=0)
        return masks

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        errors: list[str],
    ) -> None:
        """A saved order (``save_order``) replaces this one: the masks follow it."""
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        if not self.save_order or prefix + "degrees" not in state_dict:
            return
        try:
            _check_order(self.degrees.cpu(), self.features)
        except ValueError as e:
            errors.append(f"{prefix}degrees: {e}")
            return
        for k, mask in enumerate(self._masks_for(self.degrees)):
            getattr(self, f"mask{k}").copy_(mask)
        self.__dict__.pop("_unit_plan", None)
        self.order_version += 1

    def masks(self) -> list[Tensor]:
        """The binary ``(out, in)`` masks of the linear layers."""
        return [getattr(self, f"mask{k}") for k in range(len(self.shapes))]

    def unit_plan(self) -> tuple[list[Tensor], list[tuple[int, ...]]]:
        """Which hidden units the outputs of each input dimension depend on.

        A unit's effective degree is the highest input degree it sees (0: context only).
        The outputs of the dimension of degree ``k`` depend only on units of effective degree
        below ``k``, and those only on such units of the layer before. Returns the units of
        each hidden layer sorted by effective degree (``orders``) and, per dimension ``i``,
        how many of them (a prefix of each layer) its outputs need (``needed[i]``): what a
        ``D``-pass inversion that fixes one dimension per pass computes (about half of the
        network over all passes). Cached; it depends on the masks and degrees only.
        """
        cached = self.__dict__.get("_unit_plan")
        if cached is not None:
            return cached
        eff = torch.cat([torch.zeros(self.context, dtype=torch.long), self.degrees.cpu()])
        orders: list[Tensor] = []
        sorted_effs = []
        for m in self.masks()[:-1]:
            seen = m.cpu() != 0
            e = torch.where(seen, eff[None, :], -1).amax(1).clamp(min=0)
            order = torch.sort(e, stable=True).indices
            orders.append(order)
            sorted_effs.append(e[order])
            eff = e
        degrees = self.degrees.tolist()
        needed = [tuple(int((es < deg).sum()) for es in sorted_effs) for deg in degrees]
        self.__dict__["_unit_plan"] = (orders, needed)
        return orders, needed

    def sorted_layers(self) -> list[tuple[Tensor, Tensor]]:
        """Masked ``(weight, bias)`` of each layer, hidden units in :meth:`unit_plan` order.

        Rows of hidden layers and the columns that read them are permuted alike (the same
        network); the output layer's rows keep their ``(D, P)`` order. For
        :meth:`forward_dim`; formed once per ``D``-pass inversion, not per pass.
        """
        orders, _ = self.unit_plan()
        out: list[tuple[Tensor, Tensor]] = []
        prev: Tensor | None = None
        for k, (w, b, m) in enumerate(self.layers()):
            wm = w * m
            if k < len(orders):
                order = orders[k].to(w.device)
                wm, b = wm[order], b[order]
            if prev is not None:
                wm = wm[:, prev]
            out.append((wm, b))
            prev = orders[k].to(w.device) if k < len(orders) else None
        return out

    def forward_dim(
        self, x: Tensor, context: Tensor | None, dim: int, layers: list[tuple[Tensor, Tensor]]
    ) -> Tensor:
        """``forward(x, context, dim=dim)`` computing only the hidden units ``dim`` needs.

        ``layers`` from :meth:`sorted_layers`. Same values (to rounding) as
        ``forward(x, context, dim=dim)``, shape ``(*, P)``.
        """
        h = self._inputs(x, context)
        _, needed = self.unit_plan()
        width = h.shape[-1]
        inplace = not torch.compiler.is_compiling()
        for (w, b), act, n in zip(layers, self.activations, needed[dim]):
            h = F.linear(h, w[:n, :width], b[:n])
            h = torch.relu_(h) if inplace and type(act) is nn.ReLU else act(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
            width = n
        w, b = layers[-1]
        p = self.params_per_dim
        return F.linear(h, w[dim * p : (dim + 1) * p, :width], b[dim * p : (dim + 1) * p])

    def layers(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """``(weight, bias, mask)`` of each linear layer; weight and bias are views of ``flat``."""
        views = split_layers(self.flat, self.shapes, self._sizes)
        return [(w, b, mask) for (w, b), mask in zip(views, self.masks())]

    def _inputs(self, x: Tensor, context: Tensor | None) -> Tensor:
        if self.context:
            if context is None:
                raise ValueError(f"expected a context of shape (*, {self.context}), got None")
            x = torch.cat([context.expand(*x.shape[:-1], self.context), x], dim=-1)
        return x

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        dim: int | None = None,
        param_major: bool = False,
        blocked: bool = False,
    ) -> Tensor:
        """Outputs of shape ``(*, D * P)`` from ``x`` ``(*, D)`` and ``context`` ``(*, C)``.

        With ``dim = i``, only the ``P`` outputs of input dimension ``i``, shape ``(*, P)``:
        equal to ``forward(x, context).unflatten(-1, (D, P))[..., i, :]``, but the output
        layer computes only those ``P`` rows. A ``D``-pass inversion that fixes one
        dimension per pass needs no more (``D`` times less work in the output layer).

        With ``param_major``, the outputs as ``(*, D, P)``: the same values as
        ``forward(x, context).unflatten(-1, (D, P))``, but a view of memory laid out
        ``(P, D, N)``, so each parameter is one contiguous ``(D, N)`` slab (what the spline
        kernel works on) without a transposing copy.

        With ``blocked``, the outputs as ``(*, D, P)`` again, but a view of memory laid out
        ``(*, P, D)``: each parameter is a ``(*, D)`` slice contiguous along ``D``, like
        ``x``, so elementwise transformers (affine) run on unit-stride vectors.
        """
        h = self._inputs(x, context)
        layers = self.layers()
        d, p = self.features, self.params_per_dim
        w, b, m = layers[-1]
        if param_major:
            h = self._hidden(h.reshape(-1, h.shape[-1]), layers)  # (N, H)
            rows = self.param_major_rows
            out = torch.addmm(b[rows].unsqueeze(-1), (w * m)[rows], h.T)  # (P * D, N)
            return out.view(p, d, -1).permute(2, 1, 0).reshape(*x.shape[:-1], d, p)
        h = self._hidden(h, layers)
        if blocked:
            rows = self.param_major_rows
            out = F.linear(h, (w * m)[rows], b[rows])  # (*, P * D)
            return out.unflatten(-1, (p, d)).transpose(-1, -2)  # (*, D, P), memory (*, P, D)
        if dim is None:
            return F.linear(h, w * m, b)
        sl = slice(dim * p, (dim + 1) * p)
        return F.linear(h, w[sl] * m[sl], b[sl])

    def _hidden(self, h: Tensor, layers: list[tuple[Tensor, Tensor, Tensor]]) -> Tensor:
        """The hidden layers: ``h`` ``(*, C + D)`` to the last hidden activations."""
        inplace = not torch.compiler.is_compiling()
        for (w, b, m), act in zip(layers, self.activations):
            h = compiled_linear(h, w * m, b) if not inplace else F.linear(h, w * m, b)
            # ReLU in place on the linear layer's fresh output (its backward does not need
            # it): no new buffer, and the write stays in cache.
            h = torch.relu_(h) if inplace and type(act) is nn.ReLU else act(h)
            if self.dropout:
                h = F.dropout(h, self.dropout, self.training)
        return h


__all__ = ["MADE", "MaskedLinear", "hidden_degrees", "made_masks"]
