"""Embedding networks: a summary ``(*, E)`` of a structured observation, trained jointly with a
conditional flow (simulation-based inference takes them as ``embedding=``).

Each takes observations of a fixed event shape (:attr:`in_shape`) with any batch shape in front
and returns ``(*, out_features)``; :attr:`config` is its JSON-able constructor arguments and
:data:`EMBEDDINGS` maps a name to the class, so a saved posterior rebuilds its embedding without
executing code. None holds batch normalisation: a conditional density must not depend on the
other observations of its batch (:func:`check_embedding` refuses it).

- :class:`MLPEmbedding`: flatten, then a multilayer perceptron;
- :class:`Conv1dEmbedding`: a 1-D CNN over ``(L,)`` or ``(channels, L)`` series;
- :class:`Conv2dEmbedding`: a 2-D CNN over ``(C, H, W)`` images;
- :class:`DeepSetEmbedding`: permutation-invariant over i.i.d. trials ``(T, X)``, mean pooled,
  any number of trials ``T``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flowforge.nn.activations import activation_factory
from flowforge.nn.mlp import MLP

__all__ = [
    "EMBEDDINGS",
    "Conv1dEmbedding",
    "Conv2dEmbedding",
    "DeepSetEmbedding",
    "MLPEmbedding",
    "build_embedding",
    "check_embedding",
]


def _batch_of(x: Tensor, event: tuple[int, ...], name: str) -> tuple[int, ...]:
    """The batch shape of ``x`` whose trailing dimensions must be ``event``."""
    k = len(event)
    if x.dim() < k or tuple(x.shape[x.dim() - k :]) != event:
        shape = ", ".join(str(s) for s in event)
        raise ValueError(f"{name}: expected x of shape (*, {shape}), got {tuple(x.shape)}")
    return tuple(x.shape[: x.dim() - k])


class MLPEmbedding(nn.Module):
    """Flatten the observation, then an MLP: ``(*, *in_shape) -> (*, out_features)``.

    Args:
        in_shape: the event shape of one observation (an int: a vector).
        out_features: ``E``, the size of the summary.
        hidden: hidden widths.
        activation: a name of :data:`~flowforge.nn.activations.ACTIVATIONS`.

    Example:
        >>> net = MLPEmbedding((3, 4), out_features=5, hidden=(16,))
        >>> net(torch.randn(7, 3, 4)).shape
        torch.Size([7, 5])
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_features: int = 20,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.in_shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(in_shape)
        self.out_features = int(out_features)
        self.config: dict[str, Any] = {
            "in_shape": list(self.in_shape),
            "out_features": self.out_features,
            "hidden": list(hidden),
            "activation": activation,
        }
        size = math.prod(self.in_shape)
        self.net = MLP(size, self.out_features, tuple(hidden), activation, zero_last=False)

    def forward(self, x: Tensor) -> Tensor:
        batch = _batch_of(x, self.in_shape, "MLPEmbedding")
        return self.net(x.reshape(*batch, -1))  # (*, prod(in_shape)) -> (*, E)


class _ConvEmbedding(nn.Module):
    """What the CNN embeddings share: ``[conv -> act -> max-pool 2] * len(filters)`` over a
    channels-first view of the observation (the size kept through padding), then an MLP head.

    An observation of ``dims + 1`` dimensions is ``(channels, *spatial)``; one of ``dims``
    dimensions is ``spatial`` alone, read as one channel. Subclasses hold the signature and
    the documentation; the submodules are ``conv`` and ``head`` (the keys of saved weights).

    Args:
        dims: 1 (series) or 2 (images).
        shape: the event shape of one observation.
        shapes: the valid forms of ``shape``, for the error message (``"(L,) or (channels, L)"``).
        out_features, filters, kernel, hidden, activation: as the subclass documents them.
    """

    def __init__(
        self,
        dims: int,
        shape: tuple[int, ...],
        shapes: str,
        out_features: int,
        filters: Sequence[int],
        kernel: int,
        hidden: Sequence[int],
        activation: str,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if len(shape) not in (dims, dims + 1) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"{name}: expected in_shape {shapes} and an odd kernel, got {shape} and {kernel}"
            )
        self.in_shape, self.out_features = shape, int(out_features)
        self.config: dict[str, Any] = {
            "in_shape": list(shape),
            "out_features": self.out_features,
            "filters": list(filters),
            "kernel": kernel,
            "hidden": list(hidden),
            "activation": activation,
        }
        self._view = (1, *shape) if len(shape) == dims else shape  # (channels, *spatial)
        conv, pool = (nn.Conv1d, nn.MaxPool1d) if dims == 1 else (nn.Conv2d, nn.MaxPool2d)
        act = activation_factory(activation)
        layers: list[nn.Module] = []
        channels = self._view[0]
        for f in filters:
            layers += [conv(channels, int(f), kernel, padding=kernel // 2), act(), pool(2)]
            channels = int(f)
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            size = self.conv(torch.zeros(1, *self._view)).numel()
        self.head = MLP(size, self.out_features, tuple(hidden), activation, zero_last=False)

    def forward(self, x: Tensor) -> Tensor:
        batch = _batch_of(x, self.in_shape, type(self).__name__)
        h = self.conv(x.reshape(-1, *self._view))  # (N, channels, *spatial) -> (N, F, *spatial')
        return self.head(h.flatten(1)).reshape(*batch, self.out_features)  # (*, E)


class Conv1dEmbedding(_ConvEmbedding):
    """A 1-D CNN over series ``(*, L)`` or ``(*, channels, L)``, then an MLP head.

    Each block is a convolution (``kernel`` wide, padded), the activation and a max-pool by 2.

    Args:
        in_shape: ``(L,)`` or ``(channels, L)``.
        out_features: ``E``.
        filters: output channels of each block.
        kernel: the convolutions' width (odd).
        hidden: the head's hidden widths.
        activation: a name of :data:`~flowforge.nn.activations.ACTIVATIONS`.

    Example:
        >>> net = Conv1dEmbedding((32,), out_features=4, filters=(4, 8))
        >>> net(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 4])
    """

    def __init__(
        self,
        in_shape: int | Sequence[int],
        out_features: int = 20,
        filters: Sequence[int] = (16, 32),
        kernel: int = 5,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
    ) -> None:
        shape = (int(in_shape),) if isinstance(in_shape, int) else tuple(int(s) for s in in_shape)
        shapes = "(L,) or (channels, L)"
        super().__init__(1, shape, shapes, out_features, filters, kernel, hidden, activation)


class Conv2dEmbedding(_ConvEmbedding):
    """A 2-D CNN over images ``(*, C, H, W)`` (or ``(*, H, W)``), then an MLP head.

    Args:
        in_shape: ``(C, H, W)`` or ``(H, W)``.
        out_features: ``E``.
        filters: output channels of each block (conv, activation, max-pool by 2).
        kernel: the convolutions' size (odd).
        hidden: the head's hidden widths.
        activation: a name of :data:`~flowforge.nn.activations.ACTIVATIONS`.

    Example:
        >>> net = Conv2dEmbedding((1, 8, 8), out_features=3, filters=(4,))
        >>> net(torch.randn(6, 1, 8, 8)).shape
        torch.Size([6, 3])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int = 20,
        filters: Sequence[int] = (8, 16),
        kernel: int = 3,
        hidden: Sequence[int] = (64,),
        activation: str = "relu",
    ) -> None:
        shape = tuple(int(s) for s in in_shape)
        shapes = "(C, H, W) or (H, W)"
        super().__init__(2, shape, shapes, out_features, filters, kernel, hidden, activation)


class DeepSetEmbedding(nn.Module):
    """A permutation-invariant summary of i.i.d. trials: ``rho(mean_t phi(x_t))``.

    ``x`` is ``(*, T, X)``: ``T`` trials of ``X`` values each, for any ``T >= 1`` (the trial
    count may differ between training and the observation); ``phi`` embeds each trial, the mean
    over trials pools them, ``rho`` maps the pooled vector to the summary. Reordering the
    trials leaves the output unchanged.

    Args:
        trial_features: ``X``, the values of one trial.
        out_features: ``E``.
        hidden: hidden widths of ``phi`` and of ``rho``.
        pooled: the size of ``phi``'s output (the pooled vector).
        activation: a name of :data:`~flowforge.nn.activations.ACTIVATIONS`.

    References:
        Zaheer, Kottur, Ravanbakhsh, Poczos, Salakhutdinov, Smola (2017). Deep Sets.
        arXiv:1703.06114.

    Example:
        >>> net = DeepSetEmbedding(2, out_features=4, hidden=(8,), pooled=8)
        >>> x = torch.randn(3, 10, 2)
        >>> torch.allclose(net(x), net(x.flip(-2)), atol=1e-6), net(x[:, :4]).shape
        (True, torch.Size([3, 4]))
    """

    #: The observation's leading event dimension is a trial axis of any length.
    trial_axis = True

    def __init__(
        self,
        trial_features: int,
        out_features: int = 20,
        hidden: Sequence[int] = (64, 64),
        pooled: int = 64,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.trial_features, self.out_features = int(trial_features), int(out_features)
        self.config: dict[str, Any] = {
            "trial_features": self.trial_features,
            "out_features": self.out_features,
            "hidden": list(hidden),
            "pooled": int(pooled),
            "activation": activation,
        }
        self.phi = MLP(self.trial_features, int(pooled), tuple(hidden), activation, zero_last=False)
        self.rho = MLP(int(pooled), self.out_features, tuple(hidden), activation, zero_last=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[-1] != self.trial_features or x.shape[-2] < 1:
            raise ValueError(
                f"DeepSetEmbedding: expected x of shape (*, T, {self.trial_features}) with "
                f"T >= 1 trials, got {tuple(x.shape)}"
            )
        return self.rho(self.phi(x).mean(-2))  # (*, T, X) -> (*, T, P) -> (*, P) -> (*, E)


#: Embedding name -> class (what a saved posterior's record names).
EMBEDDINGS: dict[str, type[nn.Module]] = {
    "mlp": MLPEmbedding,
    "cnn1d": Conv1dEmbedding,
    "cnn2d": Conv2dEmbedding,
    "deepset": DeepSetEmbedding,
}


def build_embedding(name: str, config: dict[str, Any]) -> nn.Module:
    """The embedding :data:`EMBEDDINGS` names, built from its :attr:`config`.

    Raises:
        ValueError: an unknown name or options the class does not take.
    """
    if name not in EMBEDDINGS:
        raise ValueError(f"unknown embedding {name!r}; valid: {', '.join(EMBEDDINGS)}")
    try:
        return EMBEDDINGS[name](**config)
    except TypeError as e:
        raise ValueError(f"cannot build the embedding {name!r}: {e}") from None


def check_embedding(net: nn.Module) -> None:
    """Refuse an embedding that holds batch normalisation.

    Raises:
        ValueError: one line naming the layer: in training, batch statistics make the summary of
            one observation depend on the others in its batch.
    """
    for name, m in net.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"embedding layer {name or type(net).__name__!r} is {type(m).__name__}: batch "
                "statistics make q(theta | x) depend on the other observations of a batch; use "
                "LayerNorm (or no normalisation: observations are z-scored)"
            )
