"""A vocoder run applied to a recording of the user's.

The clip is read as the data pipeline reads training clips (:func:`~flowforge.data.audio.
read_audio`: mono, resampled to the run's rate, 16-bit levels), cut into the run's segments,
and each segment's mel frames are computed by the pipeline's own
:func:`~flowforge.data.audio.mel_features` with the run's bands and hop. From them the flow
resynthesises the clip (:func:`resynthesize_clip`) or gives the clip's log-likelihood per
sample (:func:`clip_nats_per_sample`).

References:
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowforge.data.audio import (
    AUDIO_LEVELS,
    mel_features,
    read_audio,
    require,
    to_levels,
)
from flowforge.data.base import DataError, dequantize
from flowforge.eval.audio import match_mel, nats_per_sample, resynthesize

__all__ = [
    "CLIP_SUFFIXES",
    "MelSettings",
    "clip_nats_per_sample",
    "mel_settings",
    "read_clip",
    "resynthesize_clip",
    "wav_bytes",
]

#: The clips :func:`read_clip` takes.
CLIP_SUFFIXES = (".wav", ".flac")


@dataclasses.dataclass(frozen=True)
class MelSettings:
    """How a vocoder run conditions its segments: sample rate (Hz), segment length ``T``,
    mel bands ``F`` and hop (samples between frames)."""

    rate: int
    length: int
    bands: int
    hop: int


def mel_settings(spec: Any, record_rate: int | None = None) -> MelSettings | None:
    """A run's mel settings, from its flow recipe; ``None`` when the run is not a vocoder.

    Args:
        spec: the run's :class:`~flowforge.runs.recipe.ModelSpec`.
        record_rate: the sample rate the run reported, for a recipe that lacks it.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> spec = NS(kind="audio", data_shape=(1, 4096),
        ...           kwargs={"context": 640, "frame_features": 40, "sample_rate": 16000})
        >>> mel_settings(spec)
        MelSettings(rate=16000, length=4096, bands=40, hop=256)
    """
    kw = spec.kwargs
    context, bands = int(kw.get("context") or 0), int(kw.get("frame_features") or 0)
    if spec.kind != "audio" or not context or not bands:
        return None
    length = int(spec.data_shape[-1])
    rate = int(kw.get("sample_rate") or record_rate or 0)
    if not rate:
        raise DataError("the run records no sample rate; it cannot compute a clip's mel frames")
    return MelSettings(rate, length, bands, length // (context // bands))


def read_clip(path: str | Path, settings: MelSettings, pad: bool) -> tuple[np.ndarray, int]:
    """A clip as the run's segments of 16-bit levels.

    Args:
        path: a WAV (or FLAC) file.
        settings: the run's :class:`MelSettings`.
        pad: pad the last segment with silence (``True``) or drop the tail that does not fill
            one, as training does (``False``).

    Returns:
        ``(N, 1, T)`` float64 levels ``0 .. 65535``, and the clip's length in samples at the
        run's rate.

    Raises:
        DataError: no such file, not a WAV / FLAC file, an empty clip, or (without ``pad``) a
            clip shorter than one segment.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such file; expected a WAV clip")
    if p.suffix.lower() not in CLIP_SUFFIXES:
        raise DataError(f"{p}: expected a .wav (or .flac) clip, got a {p.suffix or 'bare'} file")
    x = read_audio(p, settings.rate)
    n, t = x.size, settings.length
    if n == 0:
        raise DataError(f"{p}: the clip holds no samples")
    if not pad and n < t:
        raise DataError(
            f"{p}: {n} samples at {settings.rate} Hz; the run scores whole segments of {t}"
        )
    whole = math.ceil(n / t) * t if pad else n // t * t
    x = np.pad(x, (0, max(whole - n, 0)))[:whole]
    return to_levels(x).reshape(-1, 1, t), n


def _context(levels: np.ndarray, settings: MelSettings, flow: Any) -> torch.Tensor:
    """Each segment's mel frames, by the data pipeline's function with the run's settings, on
    the flow's device."""
    mel = mel_features(levels, settings.rate, settings.bands, settings.hop)
    return torch.from_numpy(mel).to(next(flow.parameters()).device)


def resynthesize_clip(
    flow: Any,
    path: str | Path,
    settings: MelSettings,
    temperature: float,
    seed: int = 0,
    mel_gain: int = 0,
) -> np.ndarray:
    """The flow's resynthesis of a clip from its own mel frames, followed by ``mel_gain``
    rounds of :func:`~flowforge.eval.audio.match_mel` towards the whole clip's mel (0: none;
    a run's choice is its vocoder's ``mel_gain_rounds``, 0 in runs made before it).

    The clip is cut into segments of the run's length ``T`` every ``T / 2`` samples (padded
    with ``T / 2`` samples of silence before and after), each resynthesised from its own mel
    frames, and the segments are cross-faded with periodic Hann windows, which sum to one: a
    segment's edges, where its mel frames are padded, weigh least, so there is no seam every
    ``T`` samples. Measured on 8 speech clips with a vocoder centred on a refined source
    (``benchmarks/results/vocoder.md``): back to back, the frames within 512
    samples of a seam were 1.9 dB (the flow) and 2.6 dB (its estimate) worse than the others;
    cross-faded, 0.05 dB worse and 0.3 dB better. The gain runs once on the cross-faded clip
    (its mel computed over the whole padded clip), not on each segment, which would cost it
    twice over.

    Returns:
        ``(n,)`` float64 samples in ``[-1, 1]`` at ``settings.rate``, as long as the clip.
    """
    if mel_gain < 0:
        raise ValueError(f"mel_gain takes rounds >= 0; got {mel_gain}")
    levels, n = read_clip(path, settings, pad=True)
    t = settings.length
    half = t // 2
    count = math.ceil(n / half) + 1  # segments starting at 0, T/2, ... of the padded clip
    size = count * half + t
    flat = np.full(size + (-size % settings.hop), AUDIO_LEVELS // 2, dtype=np.float64)  # silence
    flat[half : half + n] = levels.reshape(-1)[:n]
    segments = np.stack([flat[k * half : k * half + t] for k in range(count)])[:, None]
    waves = resynthesize(flow, _context(segments, settings, flow), temperature, seed=seed)
    window = np.sin(np.pi * np.arange(t) / t) ** 2  # w(i) + w(i + T/2) = 1
    out = np.zeros(flat.size)
    for k, wave in enumerate(waves):  # (count, T)
        out[k * half : k * half + t] += window * wave
    if mel_gain:
        rate, bands, hop = settings.rate, settings.bands, settings.hop
        mel = mel_features(flat[None, None], rate, bands, hop)  # the whole clip's
        out = match_mel(out[None], mel, rate, mel_gain, bands=bands, hop=hop)[0]
    return out[half : half + n]


@torch.no_grad()
def clip_nats_per_sample(
    flow: Any, path: str | Path, settings: MelSettings, seed: int = 0
) -> np.ndarray:
    """Log-likelihood per sample (nats, waveform in ``[-1, 1)``) of each whole segment of a
    clip given its own mel frames; the 16-bit levels dequantized with noise seeded by
    ``seed``.

    Returns:
        ``(N,)`` float64, one per segment.
    """
    levels, _ = read_clip(path, settings, pad=False)
    g = torch.Generator().manual_seed(seed)
    u = dequantize(torch.from_numpy(levels).float(), AUDIO_LEVELS, g)
    c = _context(levels, settings, flow)
    ll = flow.log_prob(u.to(c.device), c).double().cpu().numpy()
    return np.array([nats_per_sample(-float(v), settings.length) for v in ll])


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """A 16-bit WAV file's bytes (written in memory, so the caller can write them atomically)."""
    sf = require("soundfile")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
