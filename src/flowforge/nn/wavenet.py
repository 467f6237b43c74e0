"""WaveNet-like conditioner networks for couplings on sequences ``(C, T)``.

References:
    van den Oord et al. (2016). WaveNet: A Generative Model for Raw Audio. arXiv:1609.03499.
    Prenger, Valle, Catanzaro (2019). WaveGlow: A Flow-based Generative Network for Speech
    Synthesis. arXiv:1811.00002.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class WaveNet(nn.Module):
    """Dilated convolutions with gated tanh-sigmoid units, residual and skip connections.

    ``(N, in + cond, T) -> (N, out, T)``, non-causal (each output sees ``(kernel - 1)
    (2^layers - 1)`` steps around it). The first ``in_channels`` input channels are the signal;
    the last ``cond_channels`` (if any) are a per-time-step conditioning sequence (mel frames
    upsampled to the signal's rate), which enters every layer's gate through its own 1x1
    convolution, as in WaveGlow, rather than the first layer only. Layer ``i`` has dilation
    ``2^i``. The output convolution starts at zero (``zero_last``), so a coupling whose
    parameters it outputs starts as the identity.

    Args:
        in_channels: signal channels.
        out_channels: output channels.
        hidden: residual (and skip) channels of every layer.
        layers: number of dilated layers.
        kernel: kernel size of the dilated convolutions (odd; padded to keep ``T``).
        cond_channels: conditioning channels at the end of the input (0: none).
        zero_last: initialise the output convolution to zero.

    References:
        van den Oord et al. (2016). WaveNet. arXiv:1609.03499.
        Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.

    Example:
        >>> import torch
        >>> net = WaveNet(4, 8, hidden=16, layers=3, cond_channels=5)
        >>> net(torch.randn(2, 4 + 5, 32)).shape
        torch.Size([2, 8, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int = 64,
        layers: int = 8,
        kernel: int = 3,
        cond_channels: int = 0,
        zero_last: bool = True,
    ) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"WaveNet: expected an odd kernel size, got {kernel}")
        if min(in_channels, out_channels, hidden, layers) < 1 or cond_channels < 0:
            raise ValueError(
                f"WaveNet: expected positive in/out/hidden/layers and cond_channels >= 0, got "
                f"in={in_channels}, out={out_channels}, hidden={hidden}, layers={layers}, "
                f"cond_channels={cond_channels}"
            )
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.hidden, self.layers = int(hidden), int(layers)
        self.cond_channels = int(cond_channels)
        self.start = nn.Conv1d(in_channels, hidden, 1)
        self.dilated = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden, kernel, dilation=2**i, padding=2**i * (kernel // 2))
            for i in range(layers)
        )
        # one 1x1 convolution gives every layer's conditioning term at once
        self.cond = nn.Conv1d(cond_channels, 2 * hidden * layers, 1) if cond_channels else None
        # every layer but the last: a residual and a skip output; the last: a skip output
        self.res_skip = nn.ModuleList(
            nn.Conv1d(hidden, 2 * hidden if i < layers - 1 else hidden, 1) for i in range(layers)
        )
        self.end = nn.Conv1d(hidden, out_channels, 1)
        if zero_last:
            with torch.no_grad():
                self.end.weight.zero_()
                self.end.bias.zero_()  # type: ignore[union-attr]

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in + cond, T) -> (N, out, T)``."""
        expected = self.in_channels + self.cond_channels
        if x.dim() != 3 or x.shape[1] != expected:
            raise ValueError(
                f"WaveNet: expected input of shape (N, {expected}, T) ({self.in_channels} "
                f"signal + {self.cond_channels} conditioning channels), got {tuple(x.shape)}"
            )
        signal, cond = x.split([self.in_channels, self.cond_channels], dim=1)
        h = self.start(signal)  # (N, hidden, T)
        gates = None if self.cond is None else self.cond(cond).chunk(self.layers, dim=1)
        skip = h.new_zeros(())
        for i, (dilated, res_skip) in enumerate(zip(self.dilated, self.res_skip)):
            a = dilated(h)  # (N, 2 hidden, T)
            if gates is not None:
                a = a + gates[i]
            tanh_part, sigmoid_part = a.chunk(2, dim=1)
            out = res_skip(torch.tanh(tanh_part) * torch.sigmoid(sigmoid_part))
            if i < self.layers - 1:
                residual, out = out.chunk(2, dim=1)
                h = h + residual
            skip = skip + out  # (N, hidden, T)
        return self.end(skip)


class CentredOutput(nn.Module):
    """A sequence network whose last ``channels`` outputs have their mean over time removed.

    ``(N, in, T) -> (N, out, T)`` as ``net``, then the last ``channels`` output channels minus
    their mean over the whole sequence (``window=0``) or over a centred moving window of
    ``window`` steps (odd; the window shrinks at the ends). In a WaveGlow coupling those
    channels are the affine shifts: a squeezed sequence turns a shift that is constant (or slow)
    per channel into a pattern repeating every group of samples, i.e. spectral lines at the
    multiples of ``rate / group``; centred shifts cannot carry one. The output stays a function
    of the network's input, so the coupling stays invertible with the same log-determinant.

    Args:
        net: the network, ``(N, in, T) -> (N, out, T)``.
        channels: how many of the last output channels are centred (``<= out``).
        window: steps of the moving mean (odd), 0 for the mean over the whole sequence.

    Example:
        >>> import torch
        >>> net = CentredOutput(WaveNet(2, 4, hidden=8, layers=2, zero_last=False), channels=2)
        >>> out = net(torch.randn(3, 2, 16))
        >>> out.shape, bool(out[:, 2:].mean(-1).abs().max() < 1e-6)
        (torch.Size([3, 4, 16]), True)
    """

    def __init__(self, net: nn.Module, channels: int, window: int = 0) -> None:
        super().__init__()
        if channels < 1 or window < 0 or (window and window % 2 == 0):
            raise ValueError(
                f"CentredOutput: expected channels >= 1 and an odd window (0: the whole "
                f"sequence), got channels={channels}, window={window}"
            )
        self.net, self.channels, self.window = net, int(channels), int(window)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in, T) -> (N, out, T)``, the last :attr:`channels` centred over time."""
        out = self.net(x)
        rest, shift = out.split([out.shape[1] - self.channels, self.channels], dim=1)
        if self.window and self.window < shift.shape[-1]:
            w = self.window
            mean = nn.functional.avg_pool1d(
                shift, w, stride=1, padding=w // 2, count_include_pad=False
            )
        else:
            mean = shift.mean(-1, keepdim=True)
        return torch.cat([rest, shift - mean], dim=1)


class AnchoredOutput(nn.Module):
    """A sequence network whose last ``channels`` outputs are 0 wherever its signal input is.

    ``(N, signal + cond, T) -> (N, out, T)``: the last ``channels`` outputs are
    ``f(h, c) - f(0, c)``, ``f`` the network, ``h`` its first ``signal`` input channels and
    ``c`` the rest (the conditioning); the other outputs are ``f(h, c)``. In a WaveGlow
    coupling those channels are the affine shifts, so a coupling maps a zero half to zero
    whatever the conditioning: with no per-channel offsets elsewhere, the flow maps ``z = 0``
    to its source estimate exactly, and every draw is the estimate plus what the flow's spread
    adds. The output stays a function of the conditioning half and the conditioning, so the
    coupling stays invertible with the same log-determinant. Costs a second pass of ``f``
    (both in one batch).

    Args:
        net: the network, ``(N, signal + cond, T) -> (N, out, T)``.
        signal: the input channels that are the coupling's conditioning half.
        channels: how many of the last output channels are anchored (``<= out``).

    Example:
        >>> import torch
        >>> wn = WaveNet(2, 4, hidden=8, layers=2, cond_channels=3, zero_last=False)
        >>> net = AnchoredOutput(wn, signal=2, channels=2)
        >>> x = torch.cat([torch.zeros(1, 2, 16), torch.randn(1, 3, 16)], dim=1)
        >>> bool(net(x)[:, 2:].abs().max() == 0), bool(net(x)[:, :2].abs().max() > 0)
        (True, True)
    """

    def __init__(self, net: nn.Module, signal: int, channels: int) -> None:
        super().__init__()
        if signal < 1 or channels < 1:
            raise ValueError(
                f"AnchoredOutput: expected signal >= 1 and channels >= 1, got signal={signal}, "
                f"channels={channels}"
            )
        self.net, self.signal, self.channels = net, int(signal), int(channels)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, signal + cond, T) -> (N, out, T)``, the last :attr:`channels` anchored."""
        zero = torch.cat([torch.zeros_like(x[:, : self.signal]), x[:, self.signal :]], dim=1)
        out, at_zero = self.net(torch.cat([x, zero], dim=0)).chunk(2, dim=0)
        k = out.shape[1] - self.channels
        return torch.cat([out[:, :k], out[:, k:] - at_zero[:, k:]], dim=1)


class FrameUpsample(nn.Module):
    """Feature frames to per-step features of a squeezed sequence (fixed, no parameters).

    A flattened ``(F, frames)`` sequence (mel frames, say) ``(*, F frames)`` is repeated
    ``hop = length / frames`` times along time (nearest-neighbour upsampling to the sample
    rate), then grouped like :class:`~flowforge.transforms.Squeeze1d` with ``factor``:
    ``(*, F factor length / factor)``, read as ``(F factor, length / factor)``. Channel
    ``f factor + i`` at step ``t`` is feature ``f`` at sample ``t factor + i``, so each group
    of samples sees the features of each of its samples. When ``hop`` is a multiple of
    ``factor`` every group lies in one frame and those ``factor`` channels are copies: the
    output is then ``(F, length / factor)`` (:attr:`channels` ``= F``), ``factor`` times
    smaller for the same information.

    Args:
        features: features per frame ``F``.
        frames: frames per sequence.
        length: samples per sequence; a multiple of ``frames`` and of ``factor``.
        factor: the group size of the squeezed sequence.

    Example:
        >>> import torch
        >>> up = FrameUpsample(features=1, frames=2, length=8, factor=2)
        >>> up(torch.tensor([[1.0, 2.0]])).tolist()  # hop 4, factor 2: (1, 4)
        [[1.0, 1.0, 2.0, 2.0]]
        >>> FrameUpsample(1, 4, 8, 4).channels  # hop 2 < factor 4: (4, 2)
        4
    """

    def __init__(self, features: int, frames: int, length: int, factor: int) -> None:
        super().__init__()
        if min(features, frames, length, factor) < 1 or length % frames or length % factor:
            raise ValueError(
                f"FrameUpsample: expected positive sizes with length a multiple of frames and "
                f"factor, got features={features}, frames={frames}, length={length}, "
                f"factor={factor}"
            )
        self.features, self.frames = int(features), int(frames)
        self.length, self.factor = int(length), int(factor)
        hop = self.length // self.frames
        #: channels per step of the output: ``F`` when ``hop`` is a multiple of ``factor``
        self.channels = self.features * (1 if hop % self.factor == 0 else self.factor)

    def forward(self, c: Tensor) -> Tensor:
        """``(*, F frames) -> (*, channels length / factor)``."""
        size = self.features * self.frames
        if c.shape[-1] != size:
            raise ValueError(
                f"FrameUpsample: expected features of shape (*, {size}) ({self.features} "
                f"features x {self.frames} frames), got {tuple(c.shape)}"
            )
        batch = c.shape[:-1]
        hop = self.length // self.frames
        g = self.factor
        if hop % g == 0:  # each group of g samples inside one frame
            frames = c.reshape(*batch, self.features, self.frames)
            return frames.repeat_interleave(hop // g, dim=-1).flatten(-2)  # (*, F T/g)
        up = c.reshape(*batch, self.features, self.frames).repeat_interleave(hop, dim=-1)
        up = up.reshape(*batch, self.features, self.length // g, g)  # (*, F, T/g, i)
        return up.transpose(-1, -2).flatten(-3)  # (*, F g T/g)


__all__ = ["AnchoredOutput", "CentredOutput", "FrameUpsample", "WaveNet"]
