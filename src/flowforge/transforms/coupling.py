"""Coupling layers: half of the dimensions parameterise a transformer of the other half.

References:
    Dinh, Krueger, Bengio (2014). NICE. arXiv:1410.8516.
    Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP. arXiv:1605.08803.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of, overrides
from flowforge.functional.coupling_chain import CouplingStep, Step, coupling_chain
from flowforge.functional.coupling_inference import coupling_inference
from flowforge.functional.dispatch import eager_kernels_allowed
from flowforge.nn.mlp import MLP
from flowforge.transforms.additive import Additive
from flowforge.transforms.affine import Affine
from flowforge.transforms.permutation import (
    Permutation,
    RandomPermutation,
    ReversePermutation,
)
from flowforge.transforms.rows import ROW_BUDGET, RowwiseBijection, value_by_row_chunks, widest
from flowforge.transforms.transformer import Transformer

# The permutations the fused chain implements (exact types: a subclass may override forward).
KERNEL_PERMUTATIONS = (Permutation, ReversePermutation, RandomPermutation)


class Coupling(RowwiseBijection):
    """A coupling layer over vectors: ``z_B = tau(x_B; net(x_A, c))``, ``z_A = x_A``.

    Args:
        mask: boolean ``(D,)``; ``True`` marks the identity (conditioning) part ``A``.
        transformer: the elementwise transformer applied to the other part ``B``.
        net: maps ``(*, |A| + C)`` to ``(*, |B| * P)``, with ``P`` the transformer's
            parameters per dimension (e.g. :class:`flowforge.nn.MLP`).
        context: size ``C`` of the context vector concatenated to the network input.

    Example:
        >>> import torch, flowforge as ff
        >>> t = ff.transforms.Affine()
        >>> mask = torch.tensor([True, True, False])
        >>> layer = Coupling(mask, t, ff.nn.MLP(2, 1 * t.params_per_dim, hidden=(8,)))
        >>> z, ladj = layer(torch.randn(5, 3))
        >>> z.shape, ladj.shape
        (torch.Size([5, 3]), torch.Size([5]))
    """

    idx_a: Tensor
    idx_b: Tensor
    gather_back: Tensor
    transformer: Transformer

    def __init__(
        self,
        mask: Tensor | Sequence[bool],
        transformer: Transformer,
        net: nn.Module,
        *,
        context: int = 0,
    ) -> None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.dim() != 1:
            raise ValueError(f"expected a 1-D mask, got shape {tuple(mask.shape)}")
        super().__init__(mask.numel())
        idx_a = torch.nonzero(mask).flatten()
        idx_b = torch.nonzero(~mask).flatten()
        if idx_a.numel() == 0 or idx_b.numel() == 0:
            raise ValueError("the coupling mask must mark at least one dimension of each part")
        self.register_buffer("idx_a", idx_a, persistent=False)
        self.register_buffer("idx_b", idx_b, persistent=False)
        self.register_buffer(
            "gather_back", torch.argsort(torch.cat([idx_a, idx_b])), persistent=False
        )
        # When A is a prefix, slicing replaces gathers.
        self.split = (
            int(idx_a.numel()) if bool((idx_a == torch.arange(idx_a.numel())).all()) else None
        )
        self.transformer = transformer
        self.net = net
        self.context = int(context)
        self._width = widest(net, idx_b.numel() * transformer.params_per_dim)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.split is not None:
            return x[..., : self.split], x[..., self.split :]
        return x[..., self.idx_a], x[..., self.idx_b]

    def _join(self, a: Tensor, b: Tensor) -> Tensor:
        out = torch.cat([a, b], dim=-1)
        return out if self.split is not None else out[..., self.gather_back]

    def _params(self, a: Tensor, context: Tensor | None) -> Tensor:
        h = a
        if self.context:
            if context is None:
                raise ValueError(f"expected a context of shape (*, {self.context}), got None")
            h = torch.cat([a, context.expand(*a.shape[:-1], self.context)], dim=-1)
        nb = self.idx_b.numel()
        return self.net(h).unflatten(-1, (nb, self.transformer.params_per_dim))  # (*, |B|, P)

    def _fusable(self) -> bool:
        """Whether the fused kernels implement this layer exactly: a prefix identity part,
        a network that is exactly a ReLU :class:`~flowforge.nn.MLP` (a subclass may
        override ``forward``, so it runs as a module; a residual MLP is one) without active
        dropout (none, or the network in eval mode) and exactly an affine or additive
        transformer. Anything else runs the plain module path."""
        net = self.net
        return (
            self.split is not None
            and type(self.transformer) in (Affine, Additive)
            and type(net) is MLP
            and all(type(a) is nn.ReLU for a in net.activations)
            and (net.dropout == 0 or not net.training)
        )

    def _step(self) -> CouplingStep:
        """This layer as a step of the fused chain (its parameters: ``net.flat``)."""
        assert self.split is not None and isinstance(self.net, MLP)
        t = self.transformer
        return CouplingStep(
            self.split,
            self.context,
            tuple(self.net.shapes),
            t.bound if isinstance(t, Affine) else None,
        )

    def _fused(self, x: Tensor, context: Tensor | None) -> bool:
        """Whether this call trains through the fused chain (eager, with gradients).

        Inductor fuses the composition by itself, and without gradients the inference
        kernel applies instead.
        """
        return (
            torch.is_grad_enabled()
            and self._fusable()
            and x.dim() == 2
            and (context is None or context.shape == (x.shape[0], self.context))
            and eager_kernels_allowed()
        )

    def chain_forward(
        self, chain: list[Bijection], x: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """``forward`` of a chain starting with this layer, its fusable run as one node.

        Called by :class:`~flowforge.Compose` when training (eager, with gradients): the
        longest run of fusable coupling layers (same size and context) and permutations
        from the start of ``chain`` is one autograd node (:class:`CouplingChain`); the
        bijections after it (a NICE's final scaling, say) run one by one. ``None`` when
        this call does not train through the fused chain.
        """
        if not self._fused(x, context):
            return None
        d = self.event_shape[0]
        steps: list[Step] = []
        flats: list[Tensor] = []
        for b in chain:
            if (
                type(b) is Coupling
                and b._fusable()
                and b.event_shape == self.event_shape
                and b.context == self.context
            ):
                steps.append(b._step())
                flats.append(b.net.flat)  # type: ignore[arg-type]
            elif isinstance(b, KERNEL_PERMUTATIONS) and type(b) in KERNEL_PERMUTATIONS:
                if b.perm.shape != (d,):
                    break
                steps.append((b.perm, b.inv_perm))
            else:
                break
        batch_shape_of(x, self.event_shape)
        z, total = coupling_chain(x, context, steps, flats)
        for b in chain[len(steps) :]:
            z, ladj = b(z, context)
            total = total + ladj
        return z, total

    def _inference(
        self, x: Tensor, context: Tensor | None, inverse: bool
    ) -> tuple[Tensor, Tensor] | None:
        """The no-grad kernel's result when it applies (eager inference, prefix identity
        part, ReLU :class:`~flowforge.nn.MLP`, affine or additive transformer), else ``None``."""
        t = self.transformer
        net = self.net
        if (
            torch.is_grad_enabled()
            or not self._fusable()
            or x.dim() != 2
            or (context is not None and context.shape != (x.shape[0], self.context))
            or not eager_kernels_allowed()
        ):
            return None
        batch_shape_of(x, self.event_shape)
        assert self.split is not None and isinstance(net, MLP)
        bound = t.bound if isinstance(t, Affine) else None
        chunk = max(256, ROW_BUDGET // self._width)
        return coupling_inference(x, context, self.split, net.layers(), bound, inverse, chunk)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self._inference(x, context, inverse=False)
        return out if out is not None else super().forward(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self._inference(z, context, inverse=True)
        return out if out is not None else super().inverse(z, context)

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`inverse` without ``ladj`` (sampling): the inference kernel where it applies
        (its ``ladj`` dropped), else the transformer's
        :meth:`~flowforge.transforms.Transformer.inverse_value` (a spline skips its
        log-determinant). A subclass that overrides ``inverse`` gets its ``inverse``'s value."""
        if overrides(self, Coupling, "inverse", "_inverse"):
            return self.inverse(z, context)[0]
        out = self._inference(z, context, inverse=True)
        if out is not None:
            return out[0]
        batch_shape_of(z, self.event_shape)
        return value_by_row_chunks(self._inverse_value, z, context, self._width)

    def _inverse_value(self, z: Tensor, context: Tensor | None) -> Tensor:
        a, b = self._parts(z)
        return self._join(a, self.transformer.inverse_value(b, self._params(a, context)))

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self._fused(x, context):
            return coupling_chain(x, context, [self._step()], [self.net.flat])  # type: ignore[list-item]
        a, b = self._parts(x)
        zb, ladj = self.transformer(b, self._params(a, context))
        return self._join(a, zb), ladj.sum(-1)

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        a, b = self._parts(z)
        xb, ladj = self.transformer.inverse(b, self._params(a, context))
        return self._join(a, xb), ladj.sum(-1)


def half_mask(features: int, flip: bool = False) -> Tensor:
    """A mask whose first ``ceil(D / 2)`` entries are ``True`` (or the last, when ``flip``)."""
    mask = torch.arange(features) < (features + 1) // 2
    return ~mask if flip and features > 1 else mask


__all__ = ["Coupling", "half_mask"]
