"""Griffin-Lim's waveform from log-mel frames, in torch: a fixed, deterministic module."""

from __future__ import annotations

import importlib
import math

import torch
from torch import Tensor, nn

__all__ = ["MelGriffinLim"]

#: The non-negative least-squares solvers of the mel inversion.
NNLS = ("accelerated", "projected")
#: What a refinement adds to the magnitudes it scales (and takes off after).
_FLOOR = 1e-5


class MelGriffinLim(nn.Module):
    """A waveform estimate from mel frames: Griffin-Lim's phase reconstruction (no parameters).

    The features ``(*, F frames)`` are log-mel magnitudes in flowforge's vocoder units
    (``features = log(mel magnitude) / log_scale + log_shift``, what
    :func:`flowforge.data.audio.mel_features` computes; ``F`` band-major rows of ``frames``
    frames). The mel magnitudes are mapped back to linear STFT magnitudes by non-negative least
    squares against librosa's mel filterbank (projected gradient from the clamped
    pseudo-inverse, with Nesterov's momentum unless ``nnls="projected"``), optionally refined
    by a small learned network (``refine`` channels, :meth:`spectral_loss`), then ``iters``
    rounds of the fast Griffin-Lim algorithm (momentum 0.99) find a consistent phase from zero
    phases, so the output is a deterministic function of the features: a flow shifted by it
    (:class:`~flowforge.transforms.SourceShift`) keeps an exact density given the features.

    The refinement (``refine > 0``) multiplies the least-squares magnitudes (plus 1e-5, so
    that it can lift an empty bin) by ``exp(r(features))``, ``r`` two dilation-free convolutions over the frames (kernel 3,
    GELU) and a zero-initialised output, so it starts as the identity. Its weights get no
    gradient from :meth:`forward` (which runs without one); they are fitted beforehand by
    :meth:`spectral_loss` on training waveforms (``flowforge train`` does it,
    :func:`flowforge.train.vocoder_source.fit_source`), then fixed. The frames are centred on every ``hop``-th sample with the
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
        nnls: ``"accelerated"`` (Nesterov's momentum, FISTA) or ``"projected"`` (plain
            projected gradient: the estimate of vocoder runs saved before the momentum).
        refine: channels of the learned magnitude refinement (0: none).
        log_scale: the features' scale of the natural-log magnitudes.
        log_shift: the features' shift.

    References:
        Griffin, Lim (1984). Signal estimation from modified short-time Fourier transform.
        IEEE TASSP 32(2).
        Perraudin, Balazs, Sondergaard (2013). A fast Griffin-Lim algorithm. WASPAA.
        Beck, Teboulle (2009). A fast iterative shrinkage-thresholding algorithm (FISTA).
        SIAM J. Imaging Sciences 2(1).

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
        nnls: str = "accelerated",
        refine: int = 0,
    ) -> None:
        super().__init__()
        if min(features, frames, length, rate, n_fft, iters) < 1 or length % frames or refine < 0:
            raise ValueError(
                f"MelGriffinLim: expected positive sizes with length a multiple of frames, got "
                f"features={features}, frames={frames}, length={length}, rate={rate}, "
                f"n_fft={n_fft}, iters={iters}, refine={refine}"
            )
        if nnls not in NNLS:
            raise ValueError(f"MelGriffinLim: expected nnls in {NNLS}, got {nnls!r}")
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
        self.nnls, self.rate = nnls, int(rate)
        self.refiner: nn.Module | None = None
        if refine:
            bins = self.n_fft // 2 + 1
            out = nn.Conv1d(refine, bins, 1)
            nn.init.zeros_(out.weight)
            assert out.bias is not None
            nn.init.zeros_(out.bias)
            self.refiner = nn.Sequential(
                nn.Conv1d(features, refine, 3, padding=1),
                nn.GELU(),
                nn.Conv1d(refine, refine, 3, padding=1),
                nn.GELU(),
                out,
            )

    def _frames(self, c: Tensor) -> Tensor:
        """``(*, F frames)`` features to ``(N, F, frames + 1)``, the centred frame after the
        last repeated."""
        size = self.features * self.frames
        if c.shape[-1] != size:
            raise ValueError(
                f"MelGriffinLim: expected features of shape (*, {size}) ({self.features} "
                f"bands x {self.frames} frames), got {tuple(c.shape)}"
            )
        frames = c.reshape(-1, self.features, self.frames)
        return torch.cat([frames, frames[..., -1:]], dim=-1)

    @torch.no_grad()
    def least_squares(self, c: Tensor) -> Tensor:
        """``(*, F frames)`` features to the non-negative least-squares STFT magnitudes
        ``(N, n_fft/2 + 1, frames + 1)`` (``N`` the flattened batch), before any refinement."""
        frames = self._frames(c)
        return self._least_squares(torch.exp((frames - self.log_shift) * self.log_scale))

    def refine(self, c: Tensor, base: Tensor) -> Tensor:
        """The refinement of :meth:`least_squares`'s magnitudes ``base`` of features ``c``
        (``base`` itself without one); differentiable in the refinement's weights."""
        if self.refiner is None:
            return base
        # (N, F, frames + 1) -> (N, n_fft/2 + 1, frames + 1): a log-gain per bin and frame
        dtype = next(self.refiner.parameters()).dtype
        gain = self.refiner(self._frames(c).to(dtype)).to(base.dtype)
        return ((base + _FLOOR) * torch.exp(gain) - _FLOOR).clamp_min(0)  # gain 0: base

    def magnitudes(self, c: Tensor) -> Tensor:
        """``(*, F frames)`` features to linear STFT magnitudes ``(N, n_fft/2 + 1, frames + 1)``."""
        return self.refine(c, self.least_squares(c))

    def _least_squares(self, mel: Tensor) -> Tensor:
        """Non-negative ``s`` with ``basis @ s ~ mel``, ``(N, F, K) -> (N, n_fft/2 + 1, K)``."""
        basis = self.basis.to(mel.dtype)
        s = (self.pinv.to(mel.dtype) @ mel).clamp_min(0)
        y, t = s, 1.0
        for _ in range(self.nnls_iters):
            new = (y - self.step * basis.T @ (basis @ y - mel)).clamp_min(0)
            if self.nnls == "projected":
                y = s = new
                continue
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = new + ((t - 1) / t_next) * (new - s)
            s, t = new, t_next
        return s

    def spectral_loss(
        self, c: Tensor, x: Tensor, base: Tensor | None = None, bands: int = 80
    ) -> Tensor:
        """The mean squared log-mel error (dB^2) of the estimate's magnitudes, the loss that
        fits the refinement: ``(*, F frames)`` features and their ``(*, T)`` waveforms.

        The magnitudes (before Griffin-Lim) against the waveforms' own STFT magnitudes, both
        through a ``bands``-band mel filterbank (librosa's), powers floored at 1e-8 (-80 dB):
        the square of the log-spectral distance of :mod:`flowforge.eval.audio` per frame.
        ``base``: :meth:`least_squares` of ``c`` when already computed (a fit reuses it).
        """
        if x.shape[-1] != self.length or x.shape[:-1] != c.shape[:-1]:
            raise ValueError(
                f"MelGriffinLim: expected waveforms of shape {(*c.shape[:-1], self.length)} "
                f"for features {tuple(c.shape)}, got {tuple(x.shape)}"
            )
        librosa = importlib.import_module("librosa")
        fb = torch.as_tensor(
            librosa.filters.mel(sr=self.rate, n_fft=self.n_fft, n_mels=bands), dtype=x.dtype
        )
        window = self.window.to(x.dtype)
        with torch.no_grad():
            target = torch.stft(
                x.reshape(-1, self.length), self.n_fft, self.hop, window=window,
                pad_mode="constant", return_complex=True,
            ).abs()  # fmt: skip
        c = c.to(x.dtype)
        s = self.refine(c, self.least_squares(c) if base is None else base.to(x.dtype))
        ps, pt = ((fb @ m**2).clamp_min(1e-8) for m in (s, target))
        return ((10 * (torch.log10(ps) - torch.log10(pt))) ** 2).mean()

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
