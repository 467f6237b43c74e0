"""Audio figures of merit: log-likelihood per sample, synthesis speed, log-spectral distance.

- Log-likelihood per sample (nats) of a waveform in ``[-1, 1)``: the field's density figure
  (WaveFlow reports 5.101 on LJ Speech). A flow trained on dequantized 16-bit levels ``u`` in
  ``[0, 1)`` gives it as ``-NLL / T - log 2`` (``x = 2 u - 1``); bits per sample are its
  bits per dimension (out of 16).
- Synthesis speed: samples generated per second (``flow.sample`` at a temperature), against
  the sample rate (faster than real time when above it).
- Log-spectral distance (dB) between the mel spectrograms of two waveforms, the vocoder's
  figure: how far a resynthesis is from the original, against Griffin-Lim's phase
  reconstruction from the same mel (librosa) as the baseline a reader knows.

References:
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
    Ping, Peng, Zhao, Song (2020). WaveFlow: A Compact Flow-based Model for Raw Audio.
    arXiv:1912.01219.
    Griffin, Lim (1984). Signal estimation from modified short-time Fourier transform.
    IEEE TASSP 32(2).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from flowforge.data.audio import (
    AUDIO_LEVELS,
    MEL_BANDS,
    MEL_HOP,
    mel_magnitude,
    require,
    waveform,
)

__all__ = [
    "MEL_GAIN_ROUNDS",
    "TEMPERATURES",
    "audio_summary",
    "griffin_lim",
    "log_spectral_distance",
    "match_mel",
    "mel_power",
    "nats_per_sample",
    "remove_lines",
    "resynthesize",
    "source_estimate",
    "synthesis_speed",
    "vocoder_summary",
]

#: The temperatures a vocoder's resynthesis is tried at on the validation clips (the best kept;
#: WaveGlow samples at 0.6, a flow centred on a mel-derived estimate wants lower ones; an
#: anchored vocoder's draw with the mel gain was best at 0.03-0.05 on validation, between the
#: older grid's 0.01 and 0.1, benchmarks/results/vocoder.md).
TEMPERATURES = (0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.3, 0.6, 0.8, 1.0)

#: The rounds of :func:`match_mel` tried with every temperature on the validation clips (0: the
#: flow's draw as it is). Each round costs an STFT and its inverse: 32 keeps the CPU-sized
#: vocoder faster than real time on one thread (``benchmarks/results/vocoder.md``).
MEL_GAIN_ROUNDS = (0, 8, 16, 32)


def nats_per_sample(nll: float, length: int, unit_interval: bool = True) -> float:
    """Log-likelihood per sample in nats of a waveform in ``[-1, 1)``.

    Args:
        nll: negative log-likelihood of one segment of ``length`` samples, in nats.
        length: samples per segment ``T``.
        unit_interval: the flow's input was ``u = (x + 1) / 2`` in ``[0, 1)`` (``True``, the
            command line's audio runs) rather than ``x`` itself.

    Example:
        >>> round(nats_per_sample(-1000.0, 100), 4)  # 10 nats per sample of u, minus log 2
        9.3069
    """
    return -nll / length - (math.log(2.0) if unit_interval else 0.0)


def mel_power(x: Any, rate: int, n_mels: int = 80, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Mel power spectrogram ``(*, n_mels, frames)`` of waveforms ``(*, T)`` (librosa)."""
    librosa = require("librosa")
    a = np.asarray(x, dtype=np.float32)
    return librosa.feature.melspectrogram(
        y=a, sr=rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=2.0
    )


def log_spectral_distance(
    a: Any, b: Any, rate: int, n_mels: int = 80, floor: float = 1e-8
) -> np.ndarray:
    """Log-spectral distance in dB between the mel spectrograms of waveforms ``a`` and ``b``.

    Per frame the root mean square over the mel bands of ``10 log10(P_a / P_b)`` (powers
    floored at ``floor``), then averaged over the frames.

    Args:
        a: ``(*, T)`` waveforms in ``[-1, 1]``.
        b: ``(*, T)`` waveforms of the same shape.
        rate: sample rate in Hz.
        n_mels: mel bands.
        floor: smallest power counted (silence: -80 dB).

    Returns:
        ``(*)`` distances in dB.

    Example:
        >>> import numpy as np
        >>> x = 0.1 * np.random.default_rng(0).standard_normal(4096)  # broadband noise
        >>> float(log_spectral_distance(x, x, 16000)), bool(log_spectral_distance(x, 0.5 * x, 16000) > 5)
        (0.0, True)
    """
    pa = np.maximum(mel_power(a, rate, n_mels), floor)
    pb = np.maximum(mel_power(b, rate, n_mels), floor)
    diff = 10.0 * (np.log10(pa) - np.log10(pb))  # (*, bands, frames)
    return np.sqrt((diff**2).mean(axis=-2)).mean(axis=-1)


def griffin_lim(
    mel: np.ndarray,
    rate: int,
    length: int,
    n_fft: int = 1024,
    hop: int = 256,
    iters: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """Griffin-Lim's waveform from a mel *magnitude* spectrogram ``(*, F, frames)`` (librosa:
    the mel filterbank inverted by non-negative least squares, the phase by ``iters`` rounds
    of its fast Griffin-Lim from random phases drawn with ``seed``, so a rerun repeats it).

    Returns:
        ``(*, length)`` float32 waveforms.
    """
    librosa = require("librosa")
    m = np.asarray(mel, dtype=np.float32)
    if m.shape[-1] == length // hop:  # frames of log_mel (the centred last one dropped)
        m = np.concatenate([m, m[..., -1:]], axis=-1)  # librosa's length // hop + 1 frames
    stft = librosa.feature.inverse.mel_to_stft(m, sr=rate, n_fft=n_fft, power=1.0)
    y = librosa.griffinlim(
        stft, n_iter=iters, hop_length=hop, n_fft=n_fft, length=length, random_state=seed
    )
    return np.asarray(y, dtype=np.float32)


def remove_lines(d: Any, spacing: float, width: float, rate: int) -> np.ndarray:
    """``d`` with its spectrum zeroed within ``width`` Hz of every multiple of ``spacing`` Hz
    (0 Hz included): the lines a squeeze of ``g`` samples into channels leaves in a flow's
    output when a channel carries an offset (``spacing = rate / g``).

    A per-channel constant over the whole segment (``T`` a multiple of ``g``) lies exactly on
    those multiples, so ``width=0`` (the nearest FFT bin to each) removes it and nothing else of
    a segment without one; a slowly varying per-channel shift lies within its bandwidth of them.

    Args:
        d: ``(*, T)`` waveforms.
        spacing: Hz between the lines.
        width: Hz either side of a line that are zeroed (0: the nearest bin only).
        rate: sample rate in Hz.

    Returns:
        ``(*, T)`` float64.

    Example:
        >>> import numpy as np
        >>> t = np.arange(64)
        >>> tone, pattern = np.sin(2 * np.pi * 3 * t / 64), np.tile([0.5, -1, 0, 0.5], 16)
        >>> bool(np.allclose(remove_lines(tone + pattern, 4000, 0, 16000), tone))
        True
    """
    a = np.asarray(d, dtype=np.float64)
    n = a.shape[-1]
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    near = np.abs(freqs - spacing * np.round(freqs / spacing))  # Hz from the nearest line
    keep = near > max(float(width), 0.5 * rate / n)  # at least the nearest bin goes
    return np.fft.irfft(np.fft.rfft(a, axis=-1) * keep, n=n, axis=-1)


def match_mel(
    y: Any,
    features: Any,
    rate: int,
    rounds: int = 1,
    *,
    bands: int = MEL_BANDS,
    n_fft: int = 1024,
    hop: int = MEL_HOP,
    bound: float = 10.0,
) -> np.ndarray:
    """A waveform's STFT scaled per frame and mel band so that its mel matches the conditioning
    mel, its phases and the shape within each band kept: a vocoder's deterministic last step.

    Per frame, the gain of band ``b`` is ``m_b / mel(|Y|)_b`` (``m`` the mel magnitudes of the
    vocoder's features, :func:`~flowforge.data.audio.mel_magnitude`; both floored at 1e-5 as
    :func:`~flowforge.data.audio.log_mel` floors, the log-gain clipped to ``+-bound``); each
    STFT bin gets the geometric mean of the gains of the bands over it, weighted by the
    filterbank (librosa's, the features' own); the inverse STFT changes the magnitudes a
    little, so ``rounds`` repeats it.

    Args:
        y: ``(N, T)`` waveforms.
        features: ``(N, F frames)`` mel features (:func:`~flowforge.data.audio.mel_features`).
        rate: sample rate in Hz.
        rounds: analysis-gain-synthesis rounds.
        bands: mel bands ``F`` of the features.
        n_fft: FFT size of the features' mel (Hann window).
        hop: samples between frames.
        bound: largest absolute log-gain (natural log).

    Returns:
        ``(N, T)`` float64.
    """
    librosa = require("librosa")
    wave = torch.as_tensor(np.asarray(y, dtype=np.float64))
    length = wave.shape[-1]
    target = torch.as_tensor(mel_magnitude(features, bands))  # (N, F, T / hop)
    target = torch.cat([target, target[..., -1:]], dim=-1).clamp_min(1e-5)  # the centred last
    basis = torch.as_tensor(
        librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=target.shape[-2]), dtype=torch.float64
    )  # (F, bins)
    cover = basis.sum(0)
    weights = basis / cover.clamp_min(1e-12)  # per bin, over the bands
    window = torch.hann_window(n_fft, dtype=torch.float64)
    for _ in range(rounds):
        spec = torch.stft(
            wave, n_fft, hop, window=window, pad_mode="constant", return_complex=True
        )  # (N, bins, frames)
        mel = (basis @ spec.abs()).clamp_min(1e-5)
        log_gain = (target.log() - mel.log()).clamp(-bound, bound)
        gain = torch.where(cover[:, None] > 0, torch.exp(weights.T @ log_gain), 1.0)
        wave = torch.istft(spec * gain, n_fft, hop, window=window, length=length)
    return wave.numpy()


def audio_summary(flow: Any, test: Any, ds: Any, temperature: float = 0.6) -> dict[str, Any]:
    """An audio run's figures: test log-likelihood per sample (nats, waveform in ``[-1, 1)``;
    given each segment's mel frames for a vocoder), bits per 16-bit sample, the synthesis speed
    of the flow on this machine (a vocoder's with its mel gain), and for a vocoder (a dataset with a context) the
    :func:`vocoder_summary` of its resynthesis under ``"vocoder"``.

    Args:
        flow: the run's flow over dequantized levels ``u`` in ``[0, 1)``, shape ``(1, T)``.
        test: the test split's :class:`~flowforge.eval.likelihood.NLLSummary` (per segment).
        ds: the audio :class:`~flowforge.data.Dataset` (its ``sample_rate``).
        temperature: of the timed samples.
    """
    length = int(ds.event_shape[-1])
    context = ds.context_of("test")
    vocoder = None
    if context is None:
        speed = synthesis_speed(flow, 4, temperature=temperature)
    else:  # one resynthesis of each of 4 test segments with the vocoder's settings
        vocoder = vocoder_summary(flow, ds)
        speed = synthesis_speed(
            flow,
            1,
            context[:4],
            temperature=vocoder["temperature"],
            mel_gain=vocoder["mel_gain_rounds"],
            rate=int(ds.sample_rate),
        )
    rate = int(ds.sample_rate or 0)
    return {
        "sample_rate": rate,
        "test_ll_nats_per_sample": nats_per_sample(float(test.nll), length),
        "test_ll_nats_per_sample_err": float(test.nll_err) / length,
        "bits_per_sample": None if test.bpd is None else float(test.bpd),
        "synthesis_samples_per_s": speed,
        "real_time_factor": speed / rate if rate else None,
        "threads": torch.get_num_threads(),
        **({} if vocoder is None else {"vocoder": vocoder}),
    }


@torch.no_grad()
def resynthesize(
    flow: Any,
    context: torch.Tensor,
    temperature: float,
    seed: int = 0,
    mel_gain: int = 0,
    rate: int | None = None,
    bands: int = MEL_BANDS,
    hop: int = MEL_HOP,
) -> np.ndarray:
    """A vocoder's waveforms from their conditioning: one draw per row at ``temperature``,
    then ``mel_gain`` rounds of :func:`match_mel` towards the same mel (0: none).

    Args:
        flow: a flow over dequantized 16-bit levels ``u`` in ``[0, 1)``, shape ``(1, T)``,
            conditioned on ``(*, C)`` mel frames.
        context: ``(N, C)`` the mel frames of ``N`` segments.
        temperature: the base's standard deviation.
        seed: of the draws (the global generator is left as it was).
        mel_gain: rounds of the mel gain; the run's choice is ``mel_gain_rounds`` of its
            :func:`vocoder_summary`.
        rate, bands, hop: the mel's sample rate (needed with a gain), bands and hop.

    Returns:
        ``(N, T)`` float64 samples in ``[-1, 1]`` (a gain may leave a few beyond).

    Raises:
        ValueError: a negative ``mel_gain``, or a gain without ``rate``.
    """
    if mel_gain < 0 or (mel_gain and rate is None):
        raise ValueError(f"mel_gain takes rounds >= 0 and a rate; got {mel_gain}, rate {rate}")
    was = flow.training
    flow.eval()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        u = flow.sample(1, context, temperature=temperature)[0, :, 0]  # (N, T)
    flow.train(was)
    wave = waveform(u.clamp(0, 1)).double().cpu().numpy()
    if not mel_gain:
        return wave
    c = context.cpu()
    return match_mel(wave, c, int(rate or 0), rounds=mel_gain, hop=hop, bands=bands)


def _spread(n: int, k: int) -> np.ndarray:
    """``min(n, k)`` indices spread evenly over ``0 .. n-1``."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def vocoder_summary(
    flow: Any,
    ds: Any,
    clips: int = 16,
    temperatures: tuple[float, ...] = TEMPERATURES,
    mel_gains: tuple[int, ...] = MEL_GAIN_ROUNDS,
) -> dict[str, Any]:
    """A vocoder's resynthesis of held-out segments from their mel frames, against
    Griffin-Lim's waveform from the same mel and the vocoder's source estimate alone.

    The vocoder's settings, the temperature of :data:`TEMPERATURES` and the rounds of
    :data:`MEL_GAIN_ROUNDS` of :func:`match_mel` after the draw, are the pair whose
    resynthesis of up to ``clips`` validation segments has the smallest log-spectral distance;
    then up to ``clips`` test segments (spread over the test split) are resynthesised with
    them, and the log-spectral distance (dB, 80-band mel, :func:`log_spectral_distance`) of
    each to its original is reported with the flow's draw before the gain, the source
    estimate's and Griffin-Lim's (64 iterations from the same mel magnitudes).

    Args:
        flow: the run's flow over ``u`` in ``[0, 1)`` given mel frames (the dataset's context).
        ds: an audio :class:`~flowforge.data.Dataset` with a mel context
            (:func:`~flowforge.data.audio.mel_context`).
        clips: segments resynthesised per split.
        temperatures: the candidate temperatures.
        mel_gains: the candidate rounds of the mel gain.

    Returns:
        ``temperature``, ``mel_gain_rounds``, ``val_lsd_by_temperature`` (no gain),
        ``val_lsd_by_mel_gain`` (at the chosen temperature), ``test_segments``, ``lsd_db`` and
        ``lsd_db_err`` (2 standard errors; the vocoder's output, gain included),
        ``flow_lsd_db`` (the draw before the gain), ``griffin_lim_lsd_db`` and its ``_err``,
        and for a vocoder centred on a source ``source_lsd_db`` (the estimate alone),
        ``val_source_lsd_by_mel_gain`` (the estimate with each number of rounds),
        ``source_gain_lsd_db`` (the estimate with the vocoder's rounds: what the flow's draw
        must beat to add anything) and the paired difference of the vocoder's output from it
        over the test segments, ``gain_minus_source_gain_db`` and its ``_err``.
    """
    rate, length = int(ds.sample_rate), int(ds.event_shape[-1])

    def originals(split: str, idx: np.ndarray) -> np.ndarray:
        v = getattr(ds, split)[torch.as_tensor(idx)][:, 0].double().numpy()
        return (v - AUDIO_LEVELS // 2) / (AUDIO_LEVELS // 2)  # (n, T)

    def by_gain(wave: np.ndarray, c: torch.Tensor, x: np.ndarray) -> dict[int, np.ndarray]:
        """Per-segment distances after each number of rounds (one pass, rounds in order)."""
        out, done = {}, 0
        for r in sorted(mel_gains):
            if r > done:
                wave, done = match_mel(wave, c, rate, rounds=r - done, hop=MEL_HOP), r
            out[r] = log_spectral_distance(wave, x, rate)
        return out

    val_idx = _spread(ds.val.shape[0], clips)
    val_c = ds.context_of("val")[torch.as_tensor(val_idx)].cpu()
    val_x = originals("val", val_idx)
    grid = {
        float(t): {
            r: float(d.mean())
            for r, d in by_gain(resynthesize(flow, val_c, t), val_c, val_x).items()
        }
        for t in temperatures
    }
    best, rounds = min(((t, r) for t in grid for r in grid[t]), key=lambda k: grid[k[0]][k[1]])
    val_s = source_estimate(flow, val_c)
    idx = _spread(ds.test.shape[0], clips)
    context = ds.context_of("test")[torch.as_tensor(idx)].cpu()
    x = originals("test", idx)
    drawn = resynthesize(flow, context, best)
    lsd = by_gain(drawn, context, x)[rounds]
    gl = griffin_lim(mel_magnitude(context), rate, length, hop=MEL_HOP)
    lsd_gl = log_spectral_distance(gl, x, rate)
    n = len(idx)
    s = source_estimate(flow, context)

    def err(a: np.ndarray) -> float | None:
        return float(2 * a.std(ddof=1) / math.sqrt(n)) if n > 1 else None

    source: dict[str, Any] = {}
    if s is not None and val_s is not None:  # the estimate alone, and with the same gain
        s_gain = by_gain(s, context, x)[rounds]
        source = {
            "source_lsd_db": float(log_spectral_distance(s, x, rate).mean()),
            "val_source_lsd_by_mel_gain": {
                r: float(d.mean()) for r, d in by_gain(val_s, val_c, val_x).items()
            },
            "source_gain_lsd_db": float(s_gain.mean()),
            "gain_minus_source_gain_db": float((lsd - s_gain).mean()),
            "gain_minus_source_gain_db_err": err(lsd - s_gain),
        }

    return {
        "temperature": best,
        "mel_gain_rounds": rounds,
        "val_lsd_by_temperature": {t: v[0] for t, v in grid.items() if 0 in v},
        "val_lsd_by_mel_gain": grid[best],
        "test_segments": n,
        "lsd_db": float(lsd.mean()),
        "lsd_db_err": err(lsd),
        "flow_lsd_db": float(log_spectral_distance(drawn, x, rate).mean()),
        "griffin_lim_lsd_db": float(lsd_gl.mean()),
        "griffin_lim_lsd_db_err": err(lsd_gl),
        **source,
    }


@torch.no_grad()
def source_estimate(flow: Any, context: torch.Tensor) -> np.ndarray | None:
    """A source-centred vocoder's deterministic estimate alone (its
    :class:`~flowforge.transforms.SourceShift`'s, without the flow): ``(N, T)`` float64
    waveforms from ``(N, C)`` mel frames, or ``None`` for a vocoder without one."""
    from flowforge.transforms.source_shift import SourceShift

    shifts = [m for m in flow.modules() if isinstance(m, SourceShift)]
    if len(shifts) != 1:
        return None
    s = shifts[0].estimate(context.to(next(flow.parameters()).device))  # the waveform 2u - 1
    return s[:, 0].double().cpu().numpy()


@torch.no_grad()
def synthesis_speed(
    flow: Any,
    n: int = 4,
    context: torch.Tensor | None = None,
    temperature: float = 0.6,
    repeats: int = 3,
    mel_gain: int = 0,
    rate: int | None = None,
) -> float:
    """Samples per second that ``flow.sample`` generates (the best of ``repeats`` timings),
    a vocoder's ``mel_gain`` rounds of :func:`match_mel` included.

    Args:
        flow: a flow over sequences ``(C, T)``.
        n: draws per timing (per context row, when a context ``(B, K)`` is given).
        context: the conditioning (mel frames) of the draws, or ``None``.
        temperature: the base's standard deviation.
        repeats: timings; the fastest counts (the machine may be shared).
        mel_gain, rate: rounds of the mel gain after each draw (given ``context``: the mel
            frames) and the sample rate.

    Returns:
        Samples (time steps times channels) per second.
    """
    was = flow.training
    flow.eval()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        x = flow.sample(n, context, temperature=temperature)
        if mel_gain and context is not None:
            c = context.repeat(n, 1).cpu()  # (n B, C): the draws' rows, sample-major
            y = waveform(x.reshape(n * context.shape[0], -1).double().cpu()).numpy()
            match_mel(y, c, int(rate or 0), rounds=mel_gain)
        best = min(best, time.perf_counter() - start)
    flow.train(was)
    return x.numel() / best
