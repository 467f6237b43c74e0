"""Normalisation layers as bijections: ActNorm and flow batch normalisation.

Both act per feature of a vector event ``(D,)`` or per channel of an image event
``(C, H, W)``; the log-determinant counts every spatial position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, batch_shape_of


class _PerChannel(Bijection):
    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__(shape)
        if self.event_dim == 0:
            raise ValueError("expected a non-empty event shape")
        self.channels = self.event_shape[0]
        self.spatial = math.prod(self.event_shape[1:])

    def _view(self, p: Tensor) -> Tensor:
        """``(C,)`` -> ``(C, 1, ..., 1)`` broadcastable against an event."""
        return p.reshape(self.channels, *([1] * (self.event_dim - 1)))

    def _reduce_dims(self, x: Tensor) -> list[int]:
        """Every dimension but the channel one."""
        channel_dim = x.dim() - self.event_dim
        return [d for d in range(x.dim()) if d != channel_dim]


class ActNorm(_PerChannel):
    """``z = (x - loc) * exp(-log_scale)`` per channel, initialised from data.

    On the first forward pass in training mode, ``loc`` and ``log_scale`` are set so that
    this batch's output has zero mean and unit variance per channel (a channel that is
    constant in the batch is only centred: its scale stays 1); afterwards they are
    ordinary parameters. The ``initialized`` flag is a buffer, so it survives saving
    (``load_state_dict`` restores it); the check itself is a Python attribute, so
    ``torch.compile`` sees no data-dependent branch, even when the first batch runs compiled.
    To keep hand-set parameters, call :meth:`mark_initialized`.

    Args:
        shape: event shape, ``D`` or ``(C, H, W)``.

    References:
        Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.
    """

    initialized: Tensor

    def __init__(self, shape: int | Sequence[int]) -> None:
        super().__init__(shape)
        self.loc = nn.Parameter(torch.zeros(self.channels))
        self.log_scale = nn.Parameter(torch.zeros(self.channels))
        self.register_buffer("initialized", torch.tensor(0.0))
        self._initialized_seen = False  # Python mirror of the buffer, once it reads 1

    def _needs_init(self) -> bool:
        # A Python flag only: a tensor read here would be a graph break under torch.compile,
        # and a break on the first (initialising) call splits the compiled step for good.
        return not self._initialized_seen

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._initialized_seen = bool(self.initialized)  # the loaded flag, read at load time

    def mark_initialized(self) -> None:
        """Keep the current ``loc`` and ``log_scale``: no data initialisation."""
        self.initialized.fill_(1.0)
        self._initialized_seen = True

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = self._reduce_dims(x)
        if x.numel() // self.channels < 2:
            return  # one value per channel gives no scale; wait for a real batch
        mean = x.mean(dim=dims)
        std = x.std(dim=dims)
        self.loc.copy_(mean)
        # a channel constant in this batch tells nothing of its scale: keep it (log_scale 0)
        # rather than blow it up by 1e6, which a later varying batch would meet as a spike
        constant = std <= 1e-6 * mean.abs().clamp(min=1.0)
        self.log_scale.copy_(torch.where(constant, torch.zeros_like(std), torch.log(std)))
        self.initialized.fill_(1.0)
        self._initialized_seen = True

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        if self.training and self._needs_init():
            self._initialize(x)
        z = (x - self._view(self.loc)) * torch.exp(-self._view(self.log_scale))
        ladj = -self.log_scale.sum() * self.spatial
        return z, ladj.expand(batch).to(x.dtype)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        x = z * torch.exp(self._view(self.log_scale)) + self._view(self.loc)
        ladj = self.log_scale.sum() * self.spatial
        return x, ladj.expand(batch).to(z.dtype)


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduceSum(torch.autograd.Function):
    """A sum over ranks whose gradient is the sum over ranks of the gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.clone()
        torch.distributed.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        return grad


def _global_stats(x: Tensor, dims: list[int], c: int) -> tuple[Tensor, Tensor]:
    """Per-channel mean and (biased) variance over every rank's rows, differentiable: the sums
    are all-reduced with autograd, so each rank's gradient counts the others' use of its rows
    (with DDP's average, the gradient of the global batch's loss)."""
    sums = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims), x.new_full((1,), x.numel() / c)])
    total = _AllReduceSum.apply(sums)
    n = total[-1]
    mean = total[:c] / n
    var = (total[c : 2 * c] / n - mean * mean).clamp(min=0.0)
    return mean, var


class BatchNorm(_PerChannel):
    """Batch normalisation as a bijection, with a learned scale and shift.

    In training mode ``forward`` normalises with the batch statistics (and updates the
    running ones); under data-parallel training (an initialised process group of several
    ranks) those are the statistics of the global batch, all-reduced with their gradient. In
    eval mode, and always in ``inverse``, it uses the running statistics, which makes it an
    ordinary elementwise affine map.

    Args:
        shape: event shape, ``D`` or ``(C, H, W)``.
        momentum: weight of the newest batch in the running statistics.
        eps: added to the variance.

    References:
        Dinh, Sohl-Dickstein, Bengio (2017). Density estimation using Real NVP.
        arXiv:1605.08803.
    """

    running_mean: Tensor
    running_var: Tensor

    def __init__(
        self, shape: int | Sequence[int], momentum: float = 0.1, eps: float = 1e-5
    ) -> None:
        super().__init__(shape)
        self.momentum = momentum
        self.eps = eps
        self.log_gamma = nn.Parameter(torch.zeros(self.channels))
        self.beta = nn.Parameter(torch.zeros(self.channels))
        self.register_buffer("running_mean", torch.zeros(self.channels))
        self.register_buffer("running_var", torch.ones(self.channels))

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and _world_size() > 1:  # data-parallel: statistics of the global batch
            mean, var = _global_stats(x, self._reduce_dims(x), self.channels)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
            return mean, var
        if self.training and x.numel() // self.channels > 1:
            dims = self._reduce_dims(x)
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
            return mean, var
        return self.running_mean, self.running_var

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(x, self.event_shape)
        mean, var = self._stats(x)
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        z = (x - self._view(mean)) * torch.exp(self._view(log_scale)) + self._view(self.beta)
        return z, (log_scale.sum() * self.spatial).expand(batch).to(x.dtype)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        batch = batch_shape_of(z, self.event_shape)
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        x = (z - self._view(self.beta)) * torch.exp(-self._view(log_scale)) + self._view(
            self.running_mean
        )
        return x, (-log_scale.sum() * self.spatial).expand(batch).to(z.dtype)


__all__ = ["ActNorm", "BatchNorm"]
