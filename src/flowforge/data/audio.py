"""Audio from a folder of WAV / FLAC files: mono, resampled to one rate, cut into segments.

A folder in LJSpeech's layout (``wavs/*.wav`` and ``metadata.csv``, one ``id|text|...`` row per
clip) is read in the metadata's order; any other folder gives every ``*.wav`` / ``*.flac``
under it, in sorted order. Each clip is read with soundfile, averaged to mono, resampled to
``rate`` (soxr) and cut into non-overlapping segments of ``segment`` samples (the tail that
does not fill one is dropped). The *clips*, not the segments, are split into
train / validation / test (shuffled with ``seed``), so held-out segments come from clips the
flow never saw.

The samples are stored as 16-bit levels: ``v = round(32768 x) + 32768`` in ``0 .. 65535``
(float32 holds them exactly), ``Dataset.levels = 65536``, the event shape ``(1, segment)``.
A flow's input is the dequantized ``u = (v + U(0, 1)) / 65536`` in ``[0, 1)``; its
log-likelihood then gives bits per sample as images give bits per dimension.

Mel features (:func:`log_mel`) come from librosa. Install the audio extra:
``pip install flowforge[audio]``.

References:
    Ito, Johnson (2017). The LJ Speech Dataset. https://keithito.com/LJ-Speech-Dataset/
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError, Dataset, as_float32, split_size

__all__ = [
    "AUDIO_LEVELS",
    "MEL_BANDS",
    "MEL_HOP",
    "audio_files",
    "load_audio_folder",
    "log_mel",
    "mel_context",
    "mel_features",
    "mel_magnitude",
    "read_audio",
    "require",
    "to_levels",
    "waveform",
]

#: 16-bit audio: the number of quantisation levels of a sample.
AUDIO_LEVELS = 65536
#: The vocoder's conditioning: mel bands per frame, and samples between frames.
MEL_BANDS, MEL_HOP = 40, 256
#: ``log_mel`` (natural log of magnitudes floored at 1e-5, so in about ``[-11.5, 3]``) mapped to
#: about unit size for the networks: ``features = log_mel / 4 + 2``.
_MEL_SCALE, _MEL_SHIFT = 4.0, 2.0
_SUFFIXES = (".wav", ".flac")


def require(name: str) -> Any:
    """Import the audio extra's module ``name``, or raise a :class:`DataError` saying how to
    install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise DataError(
            f"audio needs the package {name!r}: pip install flowforge[audio] ({e})"
        ) from None


def read_audio(path: str | Path, rate: int) -> np.ndarray:
    """Read one WAV / FLAC file as mono float64 samples in ``[-1, 1]`` at ``rate`` Hz.

    Args:
        path: the file.
        rate: the sample rate to resample to.

    Returns:
        ``(T,)`` float64.

    Raises:
        DataError: the file cannot be read as audio.
    """
    sf = require("soundfile")
    try:
        x, sr = sf.read(str(path), dtype="float64", always_2d=True)  # (T, channels)
    except (RuntimeError, OSError, sf.LibsndfileError) as e:
        raise DataError(f"cannot read audio file {path}: {e}") from None
    mono = x.mean(axis=1)
    if sr != rate and mono.size:
        mono = require("soxr").resample(mono, sr, rate)
    return np.clip(mono, -1.0, 1.0)


def to_levels(x: np.ndarray) -> np.ndarray:
    """Samples in ``[-1, 1]`` to 16-bit levels ``0 .. 65535`` (``round(32768 x) + 32768``)."""
    return np.clip(np.round(x * 32768.0) + 32768.0, 0, AUDIO_LEVELS - 1)


def waveform(u: Any) -> Any:
    """A flow's input units back to samples: dequantized ``u`` in ``[0, 1)`` to ``2 u - 1``."""
    return 2.0 * u - 1.0


def audio_files(folder: Path) -> list[Path]:
    """The clips of ``folder``: LJSpeech's ``metadata.csv`` order if it has one, else every
    WAV / FLAC under it, sorted."""
    meta = folder / "metadata.csv"
    if meta.is_file() and (folder / "wavs").is_dir():
        files = []
        for i, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            clip = line.split("|", 1)[0].strip()
            if not clip:
                continue
            path = folder / "wavs" / f"{clip}.wav"
            if not path.is_file():
                raise DataError(f"{meta}, line {i}: clip {clip!r} has no file {path}")
            files.append(path)
        return files
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())


def _segments(clips: list[np.ndarray], segment: int) -> np.ndarray:
    pieces = [c[: len(c) // segment * segment].reshape(-1, segment) for c in clips]
    pieces = [p for p in pieces if len(p)]
    if not pieces:
        return np.zeros((0, 1, segment))
    return np.concatenate(pieces)[:, None, :]  # (N, 1, segment)


def load_audio_folder(
    folder: str | Path,
    *,
    rate: int = 16000,
    segment: int = 4096,
    seed: int = 0,
    n_val: float | None = None,
    n_test: float | None = None,
    name: str | None = None,
) -> Dataset:
    """Load a folder of WAV / FLAC clips as a :class:`Dataset` of 16-bit segments.

    Args:
        folder: the folder (LJSpeech's layout, or any folder of clips).
        rate: sample rate in Hz that every clip is resampled to.
        segment: samples per example; the event shape is ``(1, segment)``.
        seed: seed of the shuffle of the clips before the split.
        n_val: validation clips, a count or a fraction below 1 (default 10%).
        n_test: test clips, like ``n_val``.
        name: the dataset's name (default: the folder's name).

    Returns:
        A :class:`Dataset` of kind ``"audio"``, ``levels=65536``, with ``sample_rate`` set.

    Raises:
        DataError: no folder, fewer than 3 clips, a split without a whole segment, an
            unreadable file.

    Example:
        >>> import tempfile, numpy as np, soundfile as sf
        >>> from pathlib import Path
        >>> root = Path(tempfile.mkdtemp())
        >>> for i in range(5):
        ...     sf.write(root / f"clip{i}.wav", np.sin(np.arange(8000) * 0.1 * (i + 1)), 8000)
        >>> ds = load_audio_folder(root, rate=4000, segment=1000, n_val=1, n_test=1)
        >>> ds.kind, ds.event_shape, ds.levels, tuple(ds.train.shape), ds.sample_rate
        ('audio', (1, 1000), 65536, (12, 1, 1000), 4000)
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"audio folder {root} does not exist")
    if rate < 1 or segment < 1:
        raise DataError(f"rate and segment must be >= 1, got rate={rate}, segment={segment}")
    files = audio_files(root)
    if len(files) < 3:
        raise DataError(
            f"{root}: expected at least 3 WAV/FLAC clips (train, validation, test), found "
            f"{len(files)}"
        )
    n = len(files)
    nv, nt = split_size(n, n_val, "n_val"), split_size(n, n_test, "n_test")
    if n - nv - nt < 1:
        raise DataError(f"{root}: {n} clips leave none for training after {nv} + {nt} held out")
    import torch  # the shuffle of every other split in flowforge

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    clips = [to_levels(read_audio(files[i], rate)) for i in order]
    parts = {
        "train": clips[: n - nv - nt],
        "val": clips[n - nv - nt : n - nt],
        "test": clips[n - nt :],
    }
    arrays = {k: _segments(v, segment) for k, v in parts.items()}
    for k, a in arrays.items():
        if len(a) == 0:
            raise DataError(
                f"{root}: the {k} clips hold no whole segment of {segment} samples at {rate} "
                "Hz; use a shorter segment"
            )
    return Dataset(
        name=name or root.name,
        kind="audio",
        event_shape=(1, segment),
        train=as_float32(arrays["train"]),
        val=as_float32(arrays["val"]),
        test=as_float32(arrays["test"]),
        levels=AUDIO_LEVELS,
        sample_rate=int(rate),
    )


def log_mel(
    x: Any, rate: int, n_mels: int = 40, hop: int = 256, n_fft: int = 1024, floor: float = 1e-5
) -> np.ndarray:
    """Log-mel spectrogram of waveforms, computed by librosa.

    Frames are centred on every ``hop``-th sample (``center=True``) and the last one dropped,
    so a waveform of ``T`` samples (a multiple of ``hop``) has exactly ``T / hop`` frames
    (the frame ``k`` describes the samples around ``k hop``).

    Args:
        x: ``(*, T)`` samples in ``[-1, 1]`` (numpy or torch).
        rate: the sample rate in Hz.
        n_mels: mel bands ``F``.
        hop: samples between frames.
        n_fft: FFT size.
        floor: magnitudes below this are clipped before the log (natural log).

    Returns:
        ``(*, F, T / hop)`` float32 ``log(max(mel power, floor))``.

    Example:
        >>> import numpy as np
        >>> log_mel(np.zeros((2, 1024)), 16000, n_mels=8, hop=256).shape
        (2, 8, 4)
    """
    librosa = require("librosa")
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float32)
    if a.shape[-1] % hop:
        raise DataError(f"log_mel: the length {a.shape[-1]} is not a multiple of hop {hop}")
    mel = librosa.feature.melspectrogram(
        y=a, sr=rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, power=1.0
    )
    frames = a.shape[-1] // hop
    return np.log(np.maximum(mel[..., :frames], floor)).astype(np.float32)


def mel_features(levels: Any, rate: int, bands: int = MEL_BANDS, hop: int = MEL_HOP) -> np.ndarray:
    """The vocoder's conditioning of 16-bit segments: their log-mel frames, scaled to about
    unit size (``log_mel / 4 + 2``) and flattened band-major.

    Args:
        levels: ``(N, 1, T)`` 16-bit levels ``0 .. 65535`` (a :class:`Dataset`'s rows).
        rate: the sample rate in Hz.
        bands: mel bands ``F``.
        hop: samples between frames (``T`` a multiple of it).

    Returns:
        ``(N, F T / hop)`` float32: row ``n`` is ``(F, T / hop)`` frames of segment ``n``.

    Example:
        >>> import numpy as np
        >>> mel_features(np.full((2, 1, 1024), 32768.0), 16000, bands=8, hop=256).shape
        (2, 32)
    """
    a = np.asarray(levels.cpu() if hasattr(levels, "cpu") else levels, dtype=np.float64)
    x = (a[:, 0] - AUDIO_LEVELS // 2) / (AUDIO_LEVELS // 2)  # (N, T) the stored samples
    mel = log_mel(x, rate, n_mels=bands, hop=hop)  # (N, F, T / hop)
    return (mel / _MEL_SCALE + _MEL_SHIFT).reshape(len(a), -1).astype(np.float32)


def mel_magnitude(features: Any, bands: int = MEL_BANDS) -> np.ndarray:
    """Undo :func:`mel_features`: ``(N, F frames)`` features to ``(N, F, frames)`` mel
    magnitudes (what Griffin-Lim inverts)."""
    f = np.asarray(features.cpu() if hasattr(features, "cpu") else features, dtype=np.float64)
    return np.exp((f.reshape(len(f), bands, -1) - _MEL_SHIFT) * _MEL_SCALE)


def mel_context(ds: Dataset, bands: int = MEL_BANDS, hop: int = MEL_HOP) -> Dataset:
    """``ds`` with each segment's :func:`mel_features` as its per-example context: a flow
    trained on it is a vocoder, ``p(waveform | mel)``.

    Raises:
        DataError: not an audio set, or segments that are not a multiple of ``hop`` long.

    Example:
        >>> import torch
        >>> rows = torch.full((3, 1, 1024), 32768.0)
        >>> ds = Dataset("a", "audio", (1, 1024), rows, rows[:1], rows[:2], levels=65536,
        ...              sample_rate=16000)
        >>> mel_context(ds, bands=8, hop=256).context_of("test").shape
        torch.Size([2, 32])
    """
    if ds.kind != "audio" or ds.train is None or not ds.sample_rate:
        raise DataError(f"mel frames condition audio segments; {ds.name!r} is {ds.kind} data")
    length = ds.event_shape[-1]
    if length % hop:
        raise DataError(
            f"mel frames every {hop} samples need segments a multiple of {hop} long, got {length}"
        )
    splits = {"train": ds.train, "val": ds.val, "test": ds.test}
    context = {
        k: as_float32(mel_features(v, ds.sample_rate, bands, hop)) for k, v in splits.items()
    }
    return dataclasses.replace(ds, context=context)
