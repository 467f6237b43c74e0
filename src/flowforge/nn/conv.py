"""Convolutional conditioner networks for image couplings and split priors."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from flowforge.nn.activations import activation_factory


def conv_hidden(name: str, hidden: int | Sequence[int]) -> tuple[int, ...]:
    """The hidden widths of a conv net: a sequence of positive channel counts, as a tuple.

    A single number ``h`` (the old form, when the net had exactly two hidden layers) means
    ``(h, h)``, with a :class:`DeprecationWarning`.

    Example:
        >>> conv_hidden("ConvNet", [32, 64])
        (32, 64)

    Raises:
        ValueError: naming ``name``: not a non-empty sequence of positive integers.
    """
    if isinstance(hidden, bool) or not isinstance(hidden, (int, Sequence)):
        raise ValueError(
            f"{name}: expected hidden to be a sequence of positive channel counts, got {hidden!r}"
        )
    if isinstance(hidden, int):
        warnings.warn(
            f"{name}(hidden={hidden}) is deprecated: hidden is the sequence of the hidden "
            f"layers' channels, give hidden=({hidden}, {hidden})",
            DeprecationWarning,
            stacklevel=3,
        )
        hidden = (hidden, hidden)
    ok = isinstance(hidden, Sequence) and not isinstance(hidden, str) and len(hidden) > 0
    if not ok or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(
            f"{name}: expected hidden to be a sequence of positive channel counts, got {hidden!r}"
        )
    return tuple(int(h) for h in hidden)


class ConvNet(nn.Module):
    """``conv k x k -> act -> (conv 1x1 -> act) x (L - 1) -> conv k x k``, keeping the
    spatial size.

    The shape of Glow's and RealNVP's coupling networks: ``(N, in, H, W) -> (N, out, H, W)``
    with ``L`` hidden layers of ``hidden[i]`` channels (Glow's is ``hidden=(h, h)``). The last
    convolution starts at zero (``zero_last``), so a coupling whose parameters it outputs
    starts as the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden: channels of each hidden layer, e.g. ``(512, 512)`` (a single number ``h``
            means ``(h, h)`` and is deprecated).
        kernel: size of the first and last kernels (odd; padded to keep ``H, W``).
        activation: a name in :data:`~flowforge.nn.activations.ACTIVATIONS` (``"relu"``), or
            an activation module factory.
        zero_last: initialise the last convolution to zero.

    References:
        Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> net = ConvNet(2, 6, hidden=(16, 16))
        >>> net(torch.randn(5, 2, 4, 4)).shape
        torch.Size([5, 6, 4, 4])
        >>> len(ConvNet(2, 6, hidden=(16, 32, 16)).layers)  # three hidden layers
        7
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: Sequence[int] = (512, 512),
        kernel: int = 3,
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ConvNet: expected an odd kernel size, got {kernel}")
        widths = conv_hidden("ConvNet", hidden)
        if min(in_channels, out_channels) < 1:
            raise ValueError(
                f"ConvNet: expected positive channel counts, got in={in_channels}, "
                f"out={out_channels}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        activation = activation_factory(activation)
        pad = kernel // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], kernel, padding=pad)]
        for a, b in itertools.pairwise(widths):
            layers += [activation(), nn.Conv2d(a, b, 1)]
        layers += [activation(), nn.Conv2d(widths[-1], out_channels, kernel, padding=pad)]
        self.layers = nn.Sequential(*layers)
        if zero_last:
            last = self.layers[-1]
            assert isinstance(last, nn.Conv2d)
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in, H, W) -> (N, out, H, W)``."""
        return self.layers(x)


__all__ = ["ConvNet", "conv_hidden"]
