"""Masked autoregressive conditioner: a MADE outputs each dimension's transformer
parameters from the dimensions before it.

References:
    Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density
    Estimation. arXiv:1705.07057.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling (2016). Improved Variational
    Inference with Inverse Autoregressive Flow. arXiv:1606.04934.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection, batch_shape_of, overrides
from flowforge.functional.dispatch import eager_kernels_allowed
from flowforge.functional.made_affine import AffineLayerSpec, made_affine_chain
from flowforge.functional.made_affine_inference import (
    made_affine_inference,
    made_affine_inverse_inference,
)
from flowforge.nn.made import MADE
from flowforge.transforms.affine import Affine
from flowforge.transforms.rows import ROW_BUDGET, RowwiseBijection, value_by_row_chunks, widest
from flowforge.transforms.transformer import Transformer


class MaskedAutoregressive(RowwiseBijection):
    """``z_i = tau(x_i; made(x_{<i}, c)_i)``: one pass for the density, ``D`` to sample.

    ``forward`` (data -> latent) costs one network pass. ``inverse`` solves the triangular
    system by ``D`` passes, each fixing the next dimension in the MADE's order; it is
    exact. Its inverse ``MaskedAutoregressive(...).inv`` is an inverse autoregressive flow
    (IAF): one pass to sample, ``D`` for the density.

    Args:
        transformer: elementwise transformer.
        made: a :class:`flowforge.nn.MADE` with ``params_per_dim`` equal to the
            transformer's.

    Example:
        >>> import torch, flowforge as ff
        >>> t = ff.transforms.Affine()
        >>> maf = MaskedAutoregressive(t, ff.nn.MADE(4, t.params_per_dim, hidden=(16,)))
        >>> x = torch.randn(3, 4)
        >>> z, ladj = maf(x)
        >>> torch.allclose(maf.inverse(z)[0], x, atol=1e-6)
        True
    """

    def __init__(self, transformer: Transformer, made: MADE) -> None:
        if not isinstance(made, MADE):
            raise TypeError(
                f"expected made to be a flowforge.nn.MADE (or a subclass), got {type(made).__name__}"
            )
        if made.params_per_dim != transformer.params_per_dim:
            raise ValueError(
                f"the MADE outputs {made.params_per_dim} parameters per dimension but the "
                f"transformer takes {transformer.params_per_dim}"
            )
        super().__init__(made.features)
        self.transformer = transformer
        self.made = made
        self._width = widest(made, made.features * made.params_per_dim)

    def _params(self, x: Tensor, context: Tensor | None) -> Tensor:
        if type(self.made) is not MADE:
            # A subclass may override forward: only its documented interface is used.
            return self.made(x, context).unflatten(
                -1, (self.made.features, self.made.params_per_dim)
            )
        if self.transformer.param_major:
            return self.made(x, context, param_major=True)
        if self.transformer.param_blocked and torch.compiler.is_compiling():
            # Unit-stride parameter slices let inductor vectorise the transformer (with the
            # interleaved layout its fused kernel is scalar: 1.2-1.4x slower MAF log_prob).
            # Eager keeps the interleaved layout: there a stride-2 slice is one long loop,
            # a blocked (N, D) slice with small D a loop of D per row.
            return self.made(x, context, blocked=True)
        return self.made(x, context).unflatten(-1, (self.made.features, self.made.params_per_dim))

    def _fused(self, x: Tensor, context: Tensor | None) -> bool:
        """Whether this call takes the fused affine layer.

        Eager training of an affine layer with a ReLU MADE: one autograd node with a
        hand-written backward instead of ~25 (inductor fuses the composition by itself, and
        without gradients there is no graph to save).
        """
        return (
            self._fusable()
            and torch.is_grad_enabled()
            and x.dim() == 2
            and (context is None or context.shape == (x.shape[0], self.made.context))
            and eager_kernels_allowed()
        )

    def _fusable(self) -> bool:
        """Exactly an affine transformer on exactly a ReLU :class:`~flowforge.nn.MADE` without
        active dropout (none, or the MADE in eval mode): what the fused kernels implement (a
        subclass may override ``forward``, so it runs as a module; a residual MADE is one)."""
        made = self.made
        return (
            type(self.transformer) is Affine
            and type(made) is MADE
            and made.all_relu
            and (made.dropout == 0 or not made.training)
        )

    def _spec(self) -> AffineLayerSpec:
        """The fused layer's constants (views of the parameters, scaled masks), cached.

        Rebuilt when the parameters move to new memory or change dtype or device (``.to()``,
        a new ``flat``; the masks move with them); in-place updates (optimisers,
        ``load_state_dict``) keep the views valid.
        """
        made = self.made
        assert isinstance(self.transformer, Affine)
        key = (
            made.flat.data_ptr(),
            made.flat.dtype,
            made.flat.device,
            self.transformer.bound,
            made.order_version,  # a loaded order (MADE(save_order=True)) has new masks
        )
        cached = self.__dict__.get("_spec_cache")
        if cached is None or cached[0] != key:
            cached = (key, AffineLayerSpec(made, self.transformer.bound))
            self.__dict__["_spec_cache"] = cached
        return cached[1]

    def __getstate__(self) -> dict[str, object]:
        # The fused layer's cached constants are derived: not pickled or deep-copied.
        state = self.__dict__.copy()
        state.pop("_spec_cache", None)
        return state

    def chain_forward(
        self, chain: list[Bijection], x: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """``forward`` of a chain of bijections starting with this one, as one fused node.

        Called by :class:`~flowforge.Compose`: when every bijection in ``chain`` is a fused
        affine layer of this kind and the call trains (eager, with gradients), the whole
        chain is one autograd node; otherwise ``None`` (the chain runs layer by layer).
        """
        if not self._fused(x, context):
            return None
        for b in chain:
            if not (
                type(b) is MaskedAutoregressive
                and b._fusable()
                and b.made.features == self.made.features
                and b.made.context == self.made.context
            ):
                return None
        batch_shape_of(x, self.event_shape)
        layers: list[MaskedAutoregressive] = chain  # type: ignore[assignment]
        return made_affine_chain(
            x, context, [b._spec() for b in layers], [b.made.flat for b in layers]
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if (
            not torch.is_grad_enabled()
            and self._fusable()
            and x.dim() == 2
            and (context is None or context.shape == (x.shape[0], self.made.context))
            and eager_kernels_allowed()
        ):
            # Eager inference of an affine layer: masked weights formed once, row chunks
            # through reused cache-sized buffers, in-place elementwise work.
            batch_shape_of(x, self.event_shape)
            made = self.made
            assert isinstance(self.transformer, Affine)
            return made_affine_inference(
                x,
                context,
                self.transformer.bound,
                made.param_major_rows,
                made.flat,
                made.shapes,
                made.masks(),
                max(256, ROW_BUDGET // self._width),
            )
        return super().forward(x, context)

    def _inverse_kernel(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor] | None:
        """The no-grad D-pass kernel's result where it applies, else ``None``."""
        if (
            not torch.is_grad_enabled()
            and self._fusable()
            and z.dim() == 2
            and (context is None or context.shape == (z.shape[0], self.made.context))
            and eager_kernels_allowed()
        ):
            # Eager D-pass inversion of an affine layer without gradients (MAF sampling,
            # IAF density): weights formed once per call, x updated in place.
            batch_shape_of(z, self.event_shape)
            return made_affine_inverse_inference(
                z,
                context,
                self._spec(),
                self.made.flat,
                self._order(),
                max(256, ROW_BUDGET // self._width),
            )
        return None

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self._inverse_kernel(z, context)
        return out if out is not None else super().inverse(z, context)

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`inverse` without ``ladj`` (MAF sampling): the D-pass kernel where it applies
        (its ``ladj`` dropped), else the D passes with the transformer's
        :meth:`~flowforge.transforms.Transformer.inverse_value` (a spline skips its
        log-determinant in every pass). A subclass that overrides ``inverse`` gets its
        ``inverse``'s value."""
        if overrides(self, MaskedAutoregressive, "inverse", "_inverse"):
            return self.inverse(z, context)[0]
        out = self._inverse_kernel(z, context)
        if out is not None:
            return out[0]
        batch_shape_of(z, self.event_shape)
        return value_by_row_chunks(self._inverse_value, z, context, self._width)

    def _order(self) -> list[int]:
        """Dimensions in increasing degree (the order the ``D`` passes fix them in)."""
        version = self.made.order_version
        cached = self.__dict__.get("_order_cache")
        if cached is None or cached[0] != version:
            cached = (version, self.made.degrees.argsort().tolist())
            self.__dict__["_order_cache"] = cached
        return cached[1]

    def _forward(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        if self._fused(x, context):
            return made_affine_chain(x, context, [self._spec()], [self.made.flat])
        z, ladj = self.transformer(x, self._params(x, context))
        return z, ladj.sum(-1)

    def _inverse(self, z: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x, ladj = self._solve(z, context, with_ladj=True)
        assert ladj is not None
        return x, ladj

    def _inverse_value(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self._solve(z, context, with_ladj=False)[0]

    def _solve(
        self, z: Tensor, context: Tensor | None, with_ladj: bool
    ) -> tuple[Tensor, Tensor | None]:
        """The ``D`` passes of :meth:`inverse`: ``(x, ladj)``, ``ladj`` ``None`` unless
        ``with_ladj`` (then each pass takes the transformer's value-only inverse)."""
        d = self.made.features
        x = z.new_zeros(z.shape)
        ladj: list[Tensor] = [z] * d
        # Pass k fixes the dimension of degree k: its parameters depend only on dimensions
        # of lower degree, already exact, so x is exact after D passes. Each pass computes
        # the parameters of that one dimension only (the MADE's output layer is the bulk of
        # the work for splines), and inserts the column out of place, so gradients flow.
        # Each pass computes only the hidden units its dimension depends on (MADE.unit_plan).
        exact = type(self.made) is MADE  # a subclass runs its own forward, whole
        layers = self.made.sorted_layers() if exact else []
        for i in self._order():
            if exact:
                params = self.made.forward_dim(x, context, i, layers).unsqueeze(-2)  # (*, 1, P)
            else:
                params = self._params(x, context)[..., i : i + 1, :]  # (*, 1, P)
            zi = z[..., i : i + 1]
            if with_ladj:
                xi, ladj[i] = self.transformer.inverse(zi, params)  # (*, 1)
            else:
                xi = self.transformer.inverse_value(zi, params)
            x = torch.cat([x[..., :i], xi, x[..., i + 1 :]], dim=-1)
        return x, torch.cat(ladj, dim=-1).sum(-1) if with_ladj else None


__all__ = ["MaskedAutoregressive"]
