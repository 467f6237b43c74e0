"""Griffin-Lim's waveform from log-mel frames, in torch: a fixed, deterministic module."""

from __future__ import annotations

import importlib

import torch
from torch import Tensor, nn

__all__ = ["MelGriffinLim"]


class MelGriffinLim(nn.Module):
    """A waveform estimate from mel frames: Griffin-Lim's phase reconstruction (no parameters).

    The features ``(*, F frames)`` are log-mel magnitudes in flowforge's vocoder units
    (``features = log(mel magnitude) / log_scale + log_shift``, what
    :func:`flowforge.data.audio.mel_features` computes; ``F`` band-major rows of ``frames``
    frames). The mel magnitudes are mapped back to linear STFT magnitudes by non-negative least
    squares against librosa's mel filterbank (projected gradient from the clamped
    pseudo-inverse), then ``iters`` rounds of the fast Griffin-Lim algorithm (momentum 0.99)
    find a consistent phase from zero phases, so the output is a deterministic function of the
    features: a flow shifted by it (:class:`~flowforge.transforms.SourceShift`) keeps an exact
    density given the features. The frames are centred on every ``hop``-th sample with the
    last one dropped (``frames = length / hop``, as :func:`~flowforge.data.audio.log_mel`);
    the frame after the last is repeated.

    Args:
        features: mel bands ``F``.
        frames: frames per sequence.
        length: samples per sequence ``T`` (``hop = T / frames``).
        rate: sample rate in Hz (of the mel filterbank).
        n_fft: FFT size (a Hann window of that size), at least twice the hop.
        iters: Griffin-Lim rounds.
        nnls_iters: projected-gradient rounds of the non-negative least squares.
        log_scale: the features' scale of the natural-log magnitudes.
        log_shift: the features' shift.

    References:
        Griffin, Lim (1984). Signal estimation from modified short-time Fourier transform.
        IEEE TASSP 32(2).
        Perraudin, Balazs, Sondergaard (2013). A fast Griffin-Lim algorithm. WASPAA.

    Example:
        >>> import torch
        >>> gl = MelGriffinLim(features=8, frames=4, length=1024, rate=16000, n_fft=512)
        >>> gl(torch.zeros(3, 8 * 4)).shape  # (*, 1, T)
        torch.Size([3, 1, 1024])
    """

    basis: Tensor
    pinv: Tensor
    window: Tensor

    def __init__(
        self,
        features: int,
        frames: int,
        length: int,
        rate: int,
        n_fft: int = 1024,
        iters: int = 32,
        nnls_iters: int = 100,
        log_scale: float = 4.0,
        log_shift: float = 2.0,
    ) -> None:
        super().__init__()
        if min(features, frames, length, rate, n_fft, iters) < 1 or length % frames:
            raise ValueError(
                f"MelGriffinLim: expected positive sizes with length a multiple of frames, got "
                f"features={features}, frames={frames}, length={length}, rate={rate}, "
                f"n_fft={n_fft}, iters={iters}"
            )
        if 2 * (length // frames) > n_fft:  # Hann windows overlapping by half at least
            raise ValueError(
                f"MelGriffinLim: expected a hop (length / frames = {length // frames}) of at "
                f"most n_fft / 2 = {n_fft // 2}"
            )
        try:
            librosa = importlib.import_module("librosa")
        except ImportError as e:
            raise ImportError(
                f"MelGriffinLim needs librosa's mel filterbank: pip install flowforge[audio] ({e})"
            ) from None
        basis = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=features)  # (F, n_fft/2 + 1)
        self.register_buffer("basis", torch.as_tensor(basis, dtype=torch.float32))
        self.register_buffer("pinv", torch.linalg.pinv(self.basis))
        self.register_buffer("window", torch.hann_window(n_fft))
        self.step = float(1.0 / torch.linalg.matrix_norm(self.basis.double(), 2) ** 2)
        self.features, self.frames, self.length = int(features), int(frames), int(length)
        self.hop, self.n_fft = self.length // self.frames, int(n_fft)
        self.iters, self.nnls_iters = int(iters), int(nnls_iters)
        self.log_scale, self.log_shift = float(log_scale), float(log_shift)

    def magnitudes(self, c: Tensor) -> Tensor:
        """``(*, F frames)`` features to linear STFT magnitudes ``(*, n_fft/2 + 1, frames + 1)``."""
        size = self.features * self.frames
        if c.shape[-1] != size:
            raise ValueError(
                f"MelGriffinLim: expected features of shape (*, {size}) ({self.features} "
                f"bands x {self.frames} frames), got {tuple(c.shape)}"
            )
        mel = torch.exp(
            (c.reshape(-1, self.features, self.frames) - self.log_shift) * self.log_scale
        )
        mel = torch.cat([mel, mel[..., -1:]], dim=-1)  # the centred frame after the last
        basis = self.basis.to(mel.dtype)
        s = (self.pinv.to(mel.dtype) @ mel).clamp_min(0)
        for _ in range(self.nnls_iters):
            s = (s - self.step * basis.T @ (basis @ s - mel)).clamp_min(0)
        return s

    @torch.no_grad()
    def forward(self, c: Tensor) -> Tensor:
        """``(*, F frames)`` features to ``(*, 1, T)`` waveforms (no gradient flows back)."""
        batch = c.shape[:-1]
        work = c.float() if c.dtype not in (torch.float32, torch.float64) else c
        s = self.magnitudes(work)
        window = self.window.to(s.dtype)
        n, hop = self.n_fft, self.hop
        angles = torch.ones_like(
            s, dtype=torch.complex128 if s.dtype == torch.float64 else torch.complex64
        )
        rebuilt = torch.zeros_like(angles)
        alpha = 0.99 / (1 + 0.99)
        for _ in range(self.iters):
            y = torch.istft(s * angles, n, hop, window=window, length=self.length)
            previous = rebuilt
            rebuilt = torch.stft(y, n, hop, window=window, pad_mode="constant", return_complex=True)
            angles = rebuilt - alpha * previous
            angles = angles / (angles.abs() + 1e-16)
        y = torch.istft(s * angles, n, hop, window=window, length=self.length)
        return y.reshape(*batch, 1, self.length).to(c.dtype)
