"""Where the vocoder's ``T -> 0`` output gets its broadband floor, band by band (issue 27).

For each run directory given (``examples/vocoder.py`` writes ``seed0``, ``seed1``), 16
validation segments of the run's speech split are resynthesised from their mel frames by the
source estimate ``s`` and by the flow at ``T = 0.001`` (``y``, a deterministic function of the
mel: ``s + g^{-1}(0; e)``). Per linear-frequency band it prints the power (dB) of the true
residual ``r = x - s``, of the flow's correction ``d = y - s``, of the error left ``x - y``,
and the error left over the residual's (negative: the correction explains part of the
residual in that band). Then the same for corrections with parts of the flow switched off at
``z = 0`` (every coupling's network output zeroed: the ActNorm / 1x1-convolution offsets
alone; one step of flow at a time), and the correction's power near multiples of 2 kHz (the
squeeze's images: a slow error on one of the 8 grouped channels lands at ``2k m +- f``)
against near the odd kHz. One JSON line per row.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_floor.py runs/vocoder/seed0 ...
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import librosa
import numpy as np
import torch

from flowforge.data.audio import AUDIO_LEVELS, mel_context
from flowforge.data.registry import load_dataset
from flowforge.eval.audio import _spread, log_spectral_distance, mel_power, source_estimate
from flowforge.runs import open_run
from flowforge.transforms.image_coupling import ChannelCoupling

#: Band edges (Hz) of the per-band table.
EDGES = (0, 250, 500, 1000, 2000, 4000, 8000)


def band_power(a: np.ndarray, rate: int, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Mean power (dB) per band of :data:`EDGES` of waveforms ``(N, T)`` (Hann STFT)."""
    spec = torch.stft(
        torch.as_tensor(a, dtype=torch.float64), n_fft, hop,
        window=torch.hann_window(n_fft, dtype=torch.float64), return_complex=True,
    ).abs().pow(2).mean(dim=(0, 2)).numpy()  # fmt: skip
    freqs = np.arange(len(spec)) * rate / n_fft
    return np.array(
        [
            10 * np.log10(spec[(freqs >= lo) & (freqs < hi)].mean() + 1e-20)
            for lo, hi in itertools.pairwise(EDGES)
        ]
    )


def images(d: np.ndarray, rate: int, n_fft: int = 1024) -> dict[str, float]:
    """Power (dB) of ``d`` within 125 Hz of 2, 4, 6 kHz against within 125 Hz of 3, 5, 7 kHz."""
    spec = np.abs(np.fft.rfft(d * np.hanning(d.shape[-1]), axis=-1)) ** 2
    spec = spec.mean(0)
    freqs = np.fft.rfftfreq(d.shape[-1], 1 / rate)

    def near(centres: tuple[int, ...]) -> float:
        m = np.zeros_like(freqs, dtype=bool)
        for f in centres:
            m |= np.abs(freqs - f) < 125
        return float(10 * np.log10(spec[m].mean() + 1e-20))

    return {"even_khz_db": round(near((2000, 4000, 6000)), 2),
            "odd_khz_db": round(near((3000, 5000, 7000)), 2)}  # fmt: skip


@contextmanager
def nets_off(flow: Any, keep: set[int] | None = None) -> Iterator[None]:
    """Zero the output of every coupling network but those numbered in ``keep``: log-scale 0,
    shift 0, so those couplings are the identity."""
    hooks = []
    couplings = [m for m in flow.modules() if isinstance(m, ChannelCoupling)]
    for k, m in enumerate(couplings):
        if keep is None or k not in keep:
            hooks.append(m.net.register_forward_hook(lambda mod, i, o: torch.zeros_like(o)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def at_zero(flow: Any, c: torch.Tensor) -> np.ndarray:
    """The flow's output at ``z ~ 0`` (temperature 1e-9): ``(N, T)`` in ``[-1, 1]``."""
    torch.manual_seed(0)
    with torch.no_grad():
        u = flow.sample(1, c, temperature=1e-9)[0, :, 0]
    return (2 * u.double() - 1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.runs:
        diagnose(path, args.split)


def diagnose(path: str, split: str) -> None:
    """One run's rows (the module docs), one JSON line each."""
    run = open_run(path)
    flow = run.flow.eval()
    seed = int(run.record["config"]["seed"])
    ds = mel_context(load_dataset("speech", seed=seed))
    rate = int(ds.sample_rate)
    rows = getattr(ds, split)
    idx = torch.as_tensor(_spread(rows.shape[0], 16))
    half = AUDIO_LEVELS // 2
    x = ((rows[idx][:, 0].double() - half) / half).numpy()
    c = ds.context_of(split)[idx]
    s = source_estimate(flow, c)
    if s is None:
        raise SystemExit(f"{path}: the run's vocoder has no source estimate (source='none')")
    pr = band_power(x - s, rate)
    loud = 10 * np.log10(np.maximum(mel_power(x, rate), 1e-8).sum(1))  # (N, frames)
    which = np.digitize(loud, np.quantile(loud, [0.25, 0.5, 0.75]))  # 0 quietest .. 3 loudest
    high = librosa.mel_frequencies(82, fmax=rate / 2)[1:-1] >= 1000  # mel bands above 1 kHz

    def by_quarter(a: np.ndarray) -> list[float]:
        """Mean dB power above 1 kHz per loudness quarter of the original's frames."""
        db = 10 * np.log10(np.maximum(mel_power(a, rate), 1e-8))[:, high].mean(1)
        return [round(float(db[which == q].mean()), 1) for q in range(4)]

    def emit(name: str, y: np.ndarray) -> None:
        d = y - s
        pd, pe = band_power(d, rate), band_power(x - y, rate)
        print(json.dumps({
            "run": path, "seed": seed, "split": split, "row": name,
            "lsd": round(float(log_spectral_distance(y, x, rate).mean()), 3),
            "high_db_by_quarter": {"x": by_quarter(x), "y": by_quarter(y), "d": by_quarter(d)},
            "bands_hz": list(EDGES), "x_db": band_power(x, rate).round(1).tolist(),
            "residual_db": pr.round(1).tolist(), "correction_db": pd.round(1).tolist(),
            "error_left_db": pe.round(1).tolist(),
            "left_minus_residual_db": (pe - pr).round(2).tolist(), **images(d, rate),
        }), flush=True)  # fmt: skip

    emit("estimate", s)
    y0 = at_zero(flow, c)
    emit("flow z=0", y0)
    torch.manual_seed(0)
    with torch.no_grad():
        u1 = flow.sample(1, c, temperature=1.0)[0, :, 0]
    emit("estimate + (flow T=1 - flow z=0)", (2 * u1.double() - 1).numpy() - y0 + s)
    with nets_off(flow):
        emit("couplings off (offsets only)", at_zero(flow, c))
    n = sum(isinstance(m, ChannelCoupling) for m in flow.modules())
    for k in range(n):
        with nets_off(flow, keep={k}):
            emit(f"coupling {k} only", at_zero(flow, c))


if __name__ == "__main__":
    main()
