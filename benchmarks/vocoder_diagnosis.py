"""Why a vocoder run's resynthesis is far from the mel, and which of its weights to keep.

Given a ``flowforge train --flow waveglow`` run (a vocoder on the built-in ``speech`` set or a
folder), resynthesises 16 validation segments from their mel at temperatures 0.001 to 1 and
prints, per temperature: the log-spectral distance (dB), the distance after matching each
resynthesis's loudness to its original's, the loudness ratio, the mean signed band error
(dB) of the low / middle / high thirds of the 80 mel bands, and the distance over the loud and
the quiet frames; then Griffin-Lim's from the same mel. With ``--weights last`` or
``--weights average`` it instead compares the checkpoint's last weights and their moving
average (same trajectory): validation nats per sample (64 segments, waveform units) and the
vocoder summary of :func:`flowforge.eval.audio.vocoder_summary`.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_diagnosis.py RUN
    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_diagnosis.py RUN --weights last average
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowforge.data.audio import MEL_HOP, mel_magnitude
from flowforge.eval.audio import (
    _spread,
    griffin_lim,
    log_spectral_distance,
    mel_power,
    resynthesize,
    vocoder_summary,
)
from flowforge.runs.checkpoint import load_checkpoint
from flowforge.runs.run import open_run
from flowforge.runs.weights import load_state
from flowforge.train.prepare import load_data, run_config


def diagnose(flow: Any, ds: Any) -> None:
    """The temperature / loudness / band table of the module docs."""
    rate, length = int(ds.sample_rate), int(ds.event_shape[-1])
    idx = torch.as_tensor(_spread(ds.val.shape[0], 16))
    c = ds.context_of("val")[idx]
    x = (ds.val[idx][:, 0].double().numpy() - 32768) / 32768
    loud = 10 * np.log10(np.maximum(mel_power(x, rate).sum(1), 1e-8))  # (n, frames)
    median = np.median(loud)

    def bands(y: np.ndarray) -> np.ndarray:  # signed dB errors (n, 80, frames)
        pa, pb = (np.maximum(mel_power(a, rate), 1e-8) for a in (y, x))
        return 10 * (np.log10(pa) - np.log10(pb))

    def row(name: str, y: np.ndarray) -> None:
        d = bands(y)
        frame = np.sqrt((d**2).mean(1))
        gain = np.sqrt(
            (x**2).mean(1, keepdims=True) / np.maximum((y**2).mean(1, keepdims=True), 1e-12)
        )
        matched = log_spectral_distance(y * gain, x, rate).mean()
        rms = math.sqrt((y**2).mean() / (x**2).mean())
        third = d.shape[1] // 3
        signed = " ".join(f"{d[:, k * third : (k + 1) * third].mean():+6.1f}" for k in range(3))
        print(
            f"{name:>8} | {frame.mean():6.2f} | {matched:6.2f} | {rms:5.2f} | {signed} | "
            f"{frame[loud > median].mean():6.2f} {frame[loud <= median].mean():6.2f}"
        )

    print("       T |    LSD | level-matched | RMS ratio | signed dB low mid high | LSD loud quiet")
    for t in (0.001, 0.2, 0.4, 0.6, 0.8, 1.0):
        row(str(t), resynthesize(flow, c, t))
    row("GL", griffin_lim(mel_magnitude(c), rate, length, hop=MEL_HOP).astype(np.float64))


def compare(path: str, flow: Any, ds: Any, which: list[str], decay: float) -> None:
    """Validation nats/sample and the vocoder summary of the checkpoint's weights."""
    ck = load_checkpoint(f"{path}/checkpoint.safetensors")
    states = {"last": ck["model"], "average": (ck.get("ema") or {}).get("state")}
    val, vc = ds.val[:64].float(), ds.context_of("val")[:64]
    for name in which:
        if states[name] is None:
            print(f"{name}: the run kept no average (ema_decay 0)")
            continue
        load_state(flow, states[name], name)
        flow.eval()
        torch.manual_seed(0)
        with torch.no_grad():
            u = (val + torch.rand(val.shape)) / 65536
            ll = flow.log_prob(u, vc).mean().item() / val.shape[-1] - math.log(2)
        v = vocoder_summary(flow, ds)
        label = name if name == "last" else f"average {decay}"
        print(f"{label}: validation {ll:.3f} nats/sample; {json.dumps(v)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a vocoder run directory")
    parser.add_argument("--weights", nargs="*", choices=("last", "average"), default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = open_run(args.run)
    record = json.loads(Path(args.run, "config.json").read_text())
    cfg = run_config(record, args.run)
    ds = load_data(cfg)
    if args.weights:
        compare(args.run, run.flow, ds, args.weights, cfg.ema_decay)
    else:
        diagnose(run.flow, ds)


if __name__ == "__main__":
    main()
