"""The base class of elementwise transformers, and the parameter layouts they may ask for.

A transformer is a pure function of ``(x, params)``: a monotonic map of each dimension of
``x`` ``(*, D)`` given that dimension's ``P = params_per_dim`` parameters, ``params``
``(*, D, P)``. A conditioner (:class:`~flowforge.transforms.Coupling`,
:class:`~flowforge.transforms.MaskedAutoregressive`) decides where ``params`` come from; the
transformer returns its log-determinant elementwise, ``(*, D)``, and the conditioner sums it.
"""

from __future__ import annotations

from torch import Tensor, nn


class Transformer(nn.Module):
    """Base class of elementwise transformers.

    A subclass sets ``params_per_dim`` and implements :meth:`forward` and :meth:`inverse`.
    Whatever the layout flags below, ``params`` always has the *shape* ``(*, D, P)`` and the
    same values; the flags only choose its *memory layout*, so a transformer that ignores
    them is still correct, and one that sets a flag must still accept any layout (a
    conditioner may not honour it: the coupling conditioner gives ``(*, D, P)`` contiguous).

    Attributes:
        params_per_dim: ``P``, the number of parameters each dimension takes.
        param_major: ask the conditioner for ``params`` laid out parameter-major in memory:
            a view of a ``(P, D, N)`` buffer (``N`` the flattened batch), so each parameter
            ``params[..., p]`` is one contiguous ``(D, N)`` slab. For transformers that
            reduce over or combine many parameters of each element (the spline's softmax
            and partial sums over ``K`` bins are then elementwise ops over whole slabs,
            instead of strided reductions over a short last dimension, several times
            slower). :class:`~flowforge.nn.MADE` produces it without a transposing copy:
            its output layer is one ``addmm`` with rows in ``(P, D)`` order
            (``MADE.forward(..., param_major=True)``).
        param_blocked: ask for ``params`` laid out ``(*, P, D)`` in memory: each parameter
            ``params[..., p]`` is a ``(*, D)`` slice contiguous along ``D``, like ``x``.
            For transformers with a few parameters used elementwise next to ``x`` (affine:
            log-scale and shift), whose fused elementwise kernels then vectorise over unit
            stride (``MADE.forward(..., blocked=True)``; the masked autoregressive
            conditioner asks for it under ``torch.compile``, where it makes inductor's
            kernel vectorised; eager keeps the interleaved layout, where a stride-2 slice is
            one long loop). Test ``params.stride(-1) != 1`` to tell which layout came.

    Example:
        A transformer of two parameters per dimension, ``y = x * exp(a) + b`` unbounded,
        written to accept any layout (``unbind`` is a view in every one of them):

        >>> import torch
        >>> class Scale(Transformer):
        ...     params_per_dim = 2
        ...     param_blocked = True  # elementwise next to x: unit-stride slices help
        ...
        ...     def forward(self, x, params):
        ...         a, b = params.unbind(-1)  # (*, D) each, whatever the layout
        ...         return x * a.exp() + b, a
        ...
        ...     def inverse(self, y, params):
        ...         a, b = params.unbind(-1)
        ...         return (y - b) * (-a).exp(), -a
        >>> t, x = Scale(), torch.randn(3, 4)
        >>> blocked = torch.randn(3, 2, 4).transpose(-1, -2)  # (3, 4, 2), memory (3, 2, 4)
        >>> y, ladj = t(x, blocked)
        >>> torch.allclose(t.inverse(y, blocked)[0], x, atol=1e-6)
        True
    """

    params_per_dim: int = 1
    param_major: bool = False
    param_blocked: bool = False

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Map ``x`` ``(*, D)`` with ``params`` ``(*, D, P)``; returns ``(y, ladj)`` ``(*, D)``."""
        raise NotImplementedError

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        """Invert :meth:`forward`; returns ``(x, log|dx/dy|)`` elementwise."""
        raise NotImplementedError

    def inverse_value(self, y: Tensor, params: Tensor) -> Tensor:
        """:meth:`inverse` without its log-determinant (sampling): ``x`` ``(*, D)``.

        By default ``inverse(y, params)[0]``; a transformer whose log-determinant costs
        something to compute overrides it (the spline). The conditioners call it from their
        ``inverse_value``.
        """
        return self.inverse(y, params)[0]


__all__ = ["Transformer"]
