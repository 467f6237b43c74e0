"""Convolutional conditioner networks for image couplings and split priors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowforge.nn.activations import activation_factory


class ConvNet(nn.Module):
    """``conv k x k -> act -> conv 1x1 -> act -> conv k x k``, keeping the spatial size.

    The shape of Glow's and RealNVP's coupling networks: ``(N, in, H, W) -> (N, out, H, W)``
    with ``hidden`` channels inside. The last convolution starts at zero (``zero_last``), so
    a coupling whose parameters it outputs starts as the identity.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        hidden: channels of the two hidden layers.
        kernel: size of the first and last kernels (odd; padded to keep ``H, W``).
        activation: a name in :data:`~flowforge.nn.activations.ACTIVATIONS` (``"relu"``), or
            an activation module factory.
        zero_last: initialise the last convolution to zero.

    References:
        Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.

    Example:
        >>> import torch
        >>> net = ConvNet(2, 6, hidden=16)
        >>> net(torch.randn(5, 2, 4, 4)).shape
        torch.Size([5, 6, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 512,
        kernel: int = 3,
        activation: str | Callable[[], nn.Module] = "relu",
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"ConvNet: expected an odd kernel size, got {kernel}")
        if min(in_channels, out_channels, hidden) < 1:
            raise ValueError(
                f"ConvNet: expected positive channel counts, got in={in_channels}, "
                f"out={out_channels}, hidden={hidden}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        activation = activation_factory(activation)
        pad = kernel // 2
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel, padding=pad),
            activation(),
            nn.Conv2d(hidden, hidden, 1),
            activation(),
            nn.Conv2d(hidden, out_channels, kernel, padding=pad),
        )
        if zero_last:
            last = self.layers[-1]
            assert isinstance(last, nn.Conv2d)
            with torch.no_grad():
                last.weight.zero_()
                last.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in, H, W) -> (N, out, H, W)``."""
        return self.layers(x)


__all__ = ["ConvNet"]
