"""Where a vocoder's error from the mel lies: the magnitudes or the phase.

On the built-in speech set (seed 0's split), 16 validation and 16 test segments (those that a
run's vocoder summary uses) are resynthesised from their 40-band mel by: librosa's Griffin-Lim
(64 rounds, the baseline); the torch estimate of a ``waveglow`` vocoder's source
(:class:`~flowforge.nn.MelGriffinLim`, 32 rounds) with the plain projected and the accelerated
least squares, and with the learned refinement after the fit that ``flowforge train`` runs
(:func:`~flowforge.train.vocoder_source.fit_source`); each estimate's magnitudes also with the
original's own phase (what the phase costs); and the original's own STFT magnitudes with
librosa's Griffin-Lim (what the magnitudes cost). Prints the log-spectral distance (dB, mean
over the segments) of each.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_estimate.py
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

import flowforge as ff
from flowforge.data.audio import MEL_HOP, mel_context, mel_magnitude, require
from flowforge.data.registry import load_dataset
from flowforge.eval.audio import _spread, griffin_lim, log_spectral_distance
from flowforge.nn.griffin_lim import MelGriffinLim
from flowforge.train.vocoder_source import SOURCE_FIT, fit_source

RATE, LENGTH, N_FFT = 16000, 4096, 1024


def main() -> None:
    torch.set_num_threads(1)
    librosa = require("librosa")
    ds = mel_context(load_dataset("speech", seed=0))
    torch.manual_seed(0)
    flow = ff.flows.WaveGlow(
        (1, LENGTH), context=640, frame_features=40, depth=2, hidden=4, layers=2,
        source="griffin-lim", sample_rate=RATE, source_refine=128,
    )  # fmt: skip
    (refined,) = [m for m in flow.modules() if isinstance(m, MelGriffinLim)]
    start = time.perf_counter()
    fitted = fit_source(flow, ds, seed=0)
    print(f"refinement fit ({SOURCE_FIT}): {fitted}, {time.perf_counter() - start:.1f} s")
    estimates = {
        "projected least squares": MelGriffinLim(40, 16, LENGTH, RATE, nnls="projected"),
        "accelerated least squares": MelGriffinLim(40, 16, LENGTH, RATE),
        "accelerated + refinement (128)": refined,
    }
    for split in ("val", "test"):
        for name, value in split_rows(ds, split, estimates, librosa):
            print(f"{split} | {name} | {value:.2f}")


@torch.no_grad()
def split_rows(
    ds: Any, split: str, estimates: dict[str, MelGriffinLim], librosa: Any
) -> list[tuple[str, float]]:
    """The distances of one split's 16 segments, one row per resynthesis."""
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    idx = torch.as_tensor(_spread(getattr(ds, split).shape[0], 16))
    x = (getattr(ds, split)[idx][:, 0].double() - 32768) / 32768  # (16, T)
    c = ds.context_of(split)[idx]
    spec = torch.stft(x, N_FFT, MEL_HOP, window=window, pad_mode="constant", return_complex=True)
    phase = torch.exp(1j * torch.angle(spec))

    def lsd(y: Any) -> float:
        return float(log_spectral_distance(np.asarray(y, dtype=np.float64), x.numpy(), RATE).mean())

    oracle = librosa.griffinlim(
        spec.abs().numpy(), n_iter=64, hop_length=MEL_HOP, n_fft=N_FFT, length=LENGTH,
        random_state=0,
    )  # fmt: skip
    rows = [
        ("librosa Griffin-Lim (64)", lsd(griffin_lim(mel_magnitude(c), RATE, LENGTH))),
        ("original magnitudes + librosa Griffin-Lim (64)", lsd(oracle)),
    ]
    for name, gl in estimates.items():
        rows.append((f"{name}, Griffin-Lim (32)", lsd(gl(c)[:, 0])))
        m = gl.magnitudes(c).double()
        own = torch.istft(m * phase, N_FFT, MEL_HOP, window=window, length=LENGTH)
        rows.append((f"{name}, original phase", lsd(own)))
    return rows


if __name__ == "__main__":
    main()
