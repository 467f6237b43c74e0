"""The bijection contract: invertible maps with log-absolute-determinant Jacobians.

Direction convention: ``forward`` maps **data -> latent** (the density direction) and
``inverse`` maps **latent -> data** (the sampling direction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

Shape = tuple[int, ...]


def as_shape(shape: int | Sequence[int]) -> Shape:
    """Normalise an int or a sequence of ints to a tuple shape."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


def batch_shape_of(x: Tensor, event_shape: Shape) -> Shape:
    """The batch shape of ``x`` for a given event shape, checking the trailing dims.

    Raises:
        ValueError: if ``x`` does not end with ``event_shape``.
    """
    n = len(event_shape)
    if x.dim() < n or tuple(x.shape[x.dim() - n :]) != tuple(event_shape):
        expected = ", ".join(["*", *(str(s) for s in event_shape)])
        raise ValueError(f"expected input of shape ({expected}), got {tuple(x.shape)}")
    return tuple(x.shape[: x.dim() - n])


def overrides(obj: object, base: type, *names: str) -> bool:
    """Whether ``type(obj)`` replaces any of ``base``'s methods ``names``: a subclass with its
    own ``inverse`` then gets its ``inverse``'s value from a value-only default, never a
    shortcut past the code it wrote.

    Example:
        >>> class A:
        ...     def f(self): ...
        >>> class B(A):
        ...     def f(self): ...
        >>> overrides(B(), A, "f"), overrides(A(), A, "f")
        (True, False)
    """
    return any(getattr(type(obj), n) is not getattr(base, n) for n in names)


class Bijection(nn.Module):
    """Base class of every invertible map in flowforge.

    Subclasses implement :meth:`forward` (data -> latent) and :meth:`inverse`
    (latent -> data). Both return the output and ``ladj``, the log-absolute-determinant
    of the Jacobian of the map that was applied, summed over the event dimensions, with
    shape ``x.shape[:-len(event_shape)]``.

    A direction without a closed form is either computed the exact way (several passes,
    root finding) or raises :class:`NotImplementedError` naming the missing direction;
    it is never silently wrong.

    :meth:`inverse_value` and :meth:`forward_value` are the value-only directions (sampling
    needs ``x``, not ``ladj``). They are optional: the defaults return ``inverse(z)[0]`` and
    ``forward(x)[0]``, so a bijection with ``forward`` and ``inverse`` only works everywhere.
    Override them where ``ladj`` is costly (a :class:`~flowforge.transforms.CNF` then
    integrates the state without the Jacobian trace) or in a container of bijections
    (:class:`Compose`, :class:`Inverse`, Multiscale), which pass the call on to their
    members. An override returns the same value as the full direction (a CNF's to the
    solver's tolerance) and is differentiable like it.

    Attributes:
        event_shape: the shape of one input event in the forward (data) direction,
            ``(D,)`` for vectors or ``(C, H, W)`` for images.

    Example:
        >>> import torch, flowforge as ff
        >>> class Shift(ff.Bijection):
        ...     def forward(self, x, context=None):
        ...         return x + 1.0, x.new_zeros(x.shape[:-1])
        ...     def inverse(self, z, context=None):
        ...         return z - 1.0, z.new_zeros(z.shape[:-1])
        >>> Shift(2).inverse_value(torch.zeros(1, 2)).tolist()  # the default: inverse(z)[0]
        [[-1.0, -1.0]]
    """

    event_shape: Shape = ()

    def __init__(self, event_shape: int | Sequence[int] = ()) -> None:
        super().__init__()
        self.event_shape = as_shape(event_shape)

    @property
    def event_dim(self) -> int:
        """Number of trailing dimensions that form one event."""
        return len(self.event_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} has no forward (data -> latent) direction"
        )

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent ``z`` to data ``x``; returns ``(x, log|det dx/dz|)``."""
        raise NotImplementedError(
            f"{type(self).__name__} has no inverse (latent -> data) direction"
        )

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Map data ``x`` to latent ``z`` without its ``ladj``; by default ``forward(x)[0]``.

        Args:
            x: ``(*, *event_shape)``.
            context: ``(*, C)`` for a conditional bijection.

        Returns:
            ``z`` of shape ``(*, *forward_shape(event_shape))``, equal to ``forward(x)[0]``.
        """
        return self.forward(x, context)[0]

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Map latent ``z`` to data ``x`` without its ``ladj`` (sampling); by default
        ``inverse(z)[0]``.

        Args:
            z: ``(*, *forward_shape(event_shape))``.
            context: ``(*, C)`` for a conditional bijection.

        Returns:
            ``x`` of shape ``(*, *event_shape)``, equal to ``inverse(z)[0]``.
        """
        return self.inverse(z, context)[0]

    def forward_shape(self, shape: Shape) -> Shape:
        """Event shape after :meth:`forward`, given the input event shape."""
        return tuple(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        """Event shape after :meth:`inverse`, given the latent event shape."""
        return tuple(shape)

    @property
    def inv(self) -> Bijection:
        """The inverse bijection, a cached :class:`Inverse` wrapper with ``b.inv.inv is b``."""
        cached = self.__dict__.get("_inverse_wrapper")
        if cached is None:
            cached = Inverse(self)
            # Stored outside of nn.Module's registries, so modules() has no cycle.
            self.__dict__["_inverse_wrapper"] = cached
        return cached


class Inverse(Bijection):
    """The inverse of a bijection: swaps ``forward`` and ``inverse``.

    Use ``b.inv`` rather than constructing this directly, so that ``b.inv.inv is b``.

    Args:
        bijection: the bijection to invert.
    """

    def __init__(self, bijection: Bijection) -> None:
        # The data of the inverse is the latent of the bijection.
        super().__init__(bijection.forward_shape(bijection.event_shape))
        self.bijection = bijection
        self.__dict__["_inverse_wrapper"] = bijection

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection.inverse(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.bijection.forward(z, context)

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.bijection.inverse_value(x, context)

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        return self.bijection.forward_value(z, context)

    def chain_forward(
        self, chain: list[Bijection], x: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """A chain of inverses forward is the inverted bijections' chain inverse."""
        return _delegate_chain(chain, x, context, "chain_inverse")

    def chain_inverse(
        self, chain: list[Bijection], z: Tensor, context: Tensor | None
    ) -> tuple[Tensor, Tensor] | None:
        """A chain of inverses inverted is the inverted bijections' chain forward (IAF)."""
        return _delegate_chain(chain, z, context, "chain_forward")

    def forward_shape(self, shape: Shape) -> Shape:
        return self.bijection.inverse_shape(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        return self.bijection.forward_shape(shape)

    def extra_repr(self) -> str:
        return "inverse of:"


def _delegate_chain(
    chain: list[Bijection], x: Tensor, context: Tensor | None, name: str
) -> tuple[Tensor, Tensor] | None:
    inner = [b.bijection for b in chain if isinstance(b, Inverse)]
    hook = getattr(inner[0], name, None) if len(inner) == len(chain) else None
    return None if hook is None else hook(inner, x, context)


class Compose(Bijection):
    """A chain of bijections applied in order in the forward (data -> latent) direction.

    A bijection may evaluate a whole chain at once: if the first one (in the direction of
    the call) has a ``chain_forward(chain, x, context)`` (``chain_inverse(chain, z,
    context)`` for :meth:`inverse`, the chain then in the order applied) returning
    something other than ``None``, that result is the chain's (fused kernels use this:
    a MAF's affine layers train as one autograd node). :meth:`forward_value` and
    :meth:`inverse_value` try the same hooks, then chain the members' value-only maps.

    Args:
        bijections: the bijections, first applied first in ``forward``; each one's
            ``event_shape`` must be the previous one's output shape (``forward_shape``).

    Raises:
        ValueError: if the chain is empty or two neighbours' shapes do not match.

    Example:
        >>> import torch, flowforge as ff
        >>> b = ff.Compose([ff.transforms.ReversePermutation(3), ff.transforms.ReversePermutation(3)])
        >>> z, ladj = b(torch.tensor([[1.0, 2.0, 3.0]]))
        >>> z.tolist(), ladj.tolist()
        ([[1.0, 2.0, 3.0]], [0.0])
    """

    def __init__(self, bijections: Sequence[Bijection]) -> None:
        if len(bijections) == 0:
            raise ValueError("Compose needs at least one bijection, got none")
        for i in range(1, len(bijections)):
            prev, b = bijections[i - 1], bijections[i]
            out = tuple(prev.forward_shape(prev.event_shape))
            if tuple(b.event_shape) != out:
                raise ValueError(
                    f"Compose: bijection {i} ({type(b).__name__}) takes events of shape "
                    f"{tuple(b.event_shape)}, but bijection {i - 1} ({type(prev).__name__}) "
                    f"outputs events of shape {out}"
                )
        super().__init__(bijections[0].event_shape)
        self.bijections = nn.ModuleList(bijections)

    def chain(self) -> list[Bijection]:
        """The bijections in forward order."""
        return list(self.bijections)  # type: ignore[arg-type]

    def _hooked(
        self, chain: list[Bijection], x: Tensor, context: Tensor | None, name: str
    ) -> tuple[Tensor, Tensor] | None:
        """The first member's chain hook ``name`` on ``chain`` (in the order applied), or
        ``None`` when it has none or declines."""
        hook = getattr(chain[0], name, None)
        if hook is None or len(chain) == 1:
            return None
        return hook(chain, x, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        chain = self.chain()
        fused = self._hooked(chain, x, context, "chain_forward")
        if fused is not None:
            return fused
        batch = batch_shape_of(x, self.event_shape)
        total = x.new_zeros(batch)
        for b in chain:
            x, ladj = b(x, context)
            total = total + ladj
        return x, total

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        chain = self.chain()[::-1]
        fused = self._hooked(chain, z, context, "chain_inverse")
        if fused is not None:
            return fused
        batch = batch_shape_of(z, self.forward_shape(self.event_shape))
        total = z.new_zeros(batch)
        for b in chain:
            z, ladj = b.inverse(z, context)
            total = total + ladj
        return z, total

    def forward_value(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`forward` without ``ladj``: each member's :meth:`~Bijection.forward_value`
        in order (a chain hook that fuses the run still applies; its ``ladj`` is dropped)."""
        chain = self.chain()
        fused = self._hooked(chain, x, context, "chain_forward")
        if fused is not None:
            return fused[0]
        batch_shape_of(x, self.event_shape)
        for b in chain:
            x = b.forward_value(x, context)
        return x

    def inverse_value(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`inverse` without ``ladj``: each member's :meth:`~Bijection.inverse_value`,
        last member first (a chain hook that fuses the run still applies; its ``ladj`` is
        dropped)."""
        chain = self.chain()[::-1]
        fused = self._hooked(chain, z, context, "chain_inverse")
        if fused is not None:
            return fused[0]
        batch_shape_of(z, self.forward_shape(self.event_shape))
        for b in chain:
            z = b.inverse_value(z, context)
        return z

    def forward_shape(self, shape: Shape) -> Shape:
        for b in self.chain():
            shape = b.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape: Shape) -> Shape:
        for b in reversed(self.chain()):
            shape = b.inverse_shape(shape)
        return tuple(shape)


def sum_event(t: Tensor, event_dim: int) -> Tensor:
    """Sum the last ``event_dim`` dimensions of ``t`` (no-op for ``event_dim == 0``)."""
    if event_dim == 0:
        return t
    return t.flatten(t.dim() - event_dim).sum(-1)


def numel(shape: Shape) -> int:
    """Number of elements of an event shape."""
    return math.prod(shape)


__all__ = [
    "Bijection",
    "Compose",
    "Inverse",
    "Shape",
    "as_shape",
    "batch_shape_of",
    "numel",
    "overrides",
    "sum_event",
]
