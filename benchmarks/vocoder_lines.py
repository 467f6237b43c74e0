"""The vocoder's output with its lines at multiples of ``rate / group`` removed, and a mel gain.

For each run directory given (``examples/vocoder.py`` writes ``seed0``, ``seed1``), 16
validation and 16 test segments of the run's speech split are resynthesised from their mel by:
librosa's Griffin-Lim (the baseline); the run's source estimate ``s``; the flow at ``T``
(``y = s + d``, ``d`` the flow's correction); the flow with its correction's lines removed
(:func:`flowforge.eval.audio.remove_lines`: ``d``'s spectrum zeroed within ``w`` Hz of every
multiple of ``rate / group``, where the squeeze puts a per-channel offset or a slowly varying
per-channel shift); and each of those followed by the mel gain
(:func:`flowforge.eval.audio.match_mel`: per frame and band, the gain that gives the
waveform's 40-band mel the conditioning's, the phases kept). The width ``w``, the gain's
rounds and ``T`` are chosen on the validation segments; one JSON line per row.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_lines.py runs/vocoder/seed0 ...
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from flowforge.data.audio import AUDIO_LEVELS, MEL_HOP, mel_context, mel_magnitude
from flowforge.data.registry import load_dataset
from flowforge.eval.audio import (
    _spread,
    griffin_lim,
    log_spectral_distance,
    match_mel,
    remove_lines,
    source_estimate,
)
from flowforge.runs import open_run
from flowforge.transforms.reshape import Squeeze1d

#: The decodings compared segment by segment on the test split.
PAIRS = (
    ("flow + mel gain", "griffin-lim"),
    ("flow + mel gain", "estimate + mel gain"),
    ("flow, lines removed, + mel gain", "estimate + mel gain"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.001, 0.1, 0.3])
    parser.add_argument("--widths", type=float, nargs="+", default=[0, 30, 60, 125, 250])
    parser.add_argument("--cutoffs", type=float, nargs="+", default=[250, 500, 1000, 2000, 4000])
    parser.add_argument("--rounds", type=int, nargs="+", default=[2, 4, 8, 16])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.runs:
        run = open_run(path)
        flow = run.flow.eval()
        seed = int(run.record["config"]["seed"])
        ds = mel_context(load_dataset("speech", seed=seed))
        chosen: dict[str, Any] = {}
        for split in ("val", "test"):
            for row in rows(flow, ds, split, args, chosen):
                print(json.dumps({"run": path, "seed": seed, "split": split, **row}), flush=True)
        print(json.dumps({"run": path, "seed": seed, **speed(flow, ds, chosen)}), flush=True)


def speed(flow: Any, ds: Any, chosen: dict[str, Any]) -> dict[str, Any]:
    """Synthesis speed (samples/s, wall clock, one thread, the best of 3) of 4 test segments:
    the flow's draw at the chosen ``T`` (its Griffin-Lim source included), alone and followed
    by the chosen mel gain."""
    rate = int(ds.sample_rate)
    c = ds.context_of("test")[:4]
    kw = chosen["flow + mel gain"]
    best = [float("inf"), float("inf")]
    for _ in range(3):
        start = time.perf_counter()
        with torch.no_grad():
            u = flow.sample(1, c, temperature=kw["T"])[0, :, 0]
        mid = time.perf_counter()
        match_mel((2 * u.double() - 1).numpy(), c, rate, rounds=kw["rounds"])
        end = time.perf_counter()
        best = [min(best[0], mid - start), min(best[1], end - start)]
    n = c.shape[0] * int(ds.event_shape[-1])
    return {"decode": "speed", "flow_samples_per_s": round(n / best[0]),
            "with_mel_gain_samples_per_s": round(n / best[1]), "rate": rate}  # fmt: skip


def rows(
    flow: Any, ds: Any, split: str, args: argparse.Namespace, chosen: dict[str, Any]
) -> list[dict[str, Any]]:
    """One split's rows. On ``val`` every setting, recording the best of each decoding in
    ``chosen``; on ``test`` only the chosen settings."""
    rate, length = int(ds.sample_rate), int(ds.event_shape[-1])
    idx = torch.as_tensor(_spread(getattr(ds, split).shape[0], 16))
    half = AUDIO_LEVELS // 2
    x = ((getattr(ds, split)[idx][:, 0].double() - half) / half).numpy()
    c = ds.context_of(split)[idx]
    group = next(m.factor for m in flow.modules() if isinstance(m, Squeeze1d))
    out: list[dict[str, Any]] = []

    clips: dict[str, np.ndarray] = {}  # the per-segment distances of each decoding's last row

    def lsd(name: str, y: np.ndarray) -> float:
        clips[name] = log_spectral_distance(y, x, rate)
        return round(float(clips[name].mean()), 3)

    def pick(name: str, settings: list[dict[str, Any]], make: Callable[..., np.ndarray]) -> None:
        """Rows of ``make(**setting)``; on val all, and the best kept under ``name``."""
        todo = settings if split == "val" else [chosen[name]]
        best = None
        for kw in todo:
            start = time.process_time()
            y = make(**kw)
            row = {
                "decode": name,
                **kw,
                "lsd": lsd(name, y),
                "s": round(time.process_time() - start, 2),
            }
            out.append(row)
            if best is None or row["lsd"] < best[0]:
                best = (row["lsd"], kw)
        if split == "val" and best is not None:
            chosen[name] = best[1]

    gl = griffin_lim(mel_magnitude(c), rate, length, hop=MEL_HOP).astype(np.float64)
    s = source_estimate(flow, c)
    if s is None:
        raise SystemExit("the run's vocoder has no source estimate (source='none')")
    samples: dict[float, np.ndarray] = {}
    for t in args.temperatures:
        torch.manual_seed(0)
        with torch.no_grad():
            u = flow.sample(1, c, temperature=t)[0, :, 0]
        samples[t] = (2 * u.double().clamp(0, 1) - 1).numpy()
    temps = [{"T": t} for t in args.temperatures]
    widths = [{"T": t, "w": w} for t in args.temperatures for w in args.widths]
    rounds = [{"rounds": r} for r in args.rounds]

    def lines(T: float, w: float) -> np.ndarray:
        return s + remove_lines(samples[T] - s, rate / group, w, rate)

    def below(T: float, fc: float) -> np.ndarray:
        d = samples[T] - s
        spec = np.fft.rfft(d, axis=-1)
        spec[..., np.fft.rfftfreq(d.shape[-1], 1 / rate) >= fc] = 0
        return s + np.fft.irfft(spec, n=d.shape[-1], axis=-1)

    cutoffs = [{"T": t, "fc": f} for t in args.temperatures for f in args.cutoffs]
    pick("griffin-lim", [{}], lambda: gl)
    pick("estimate", [{}], lambda: s)
    pick("flow", temps, lambda T: samples[T])
    pick("flow, lines removed", widths, lines)
    pick("flow, correction below fc", cutoffs, below)
    pick("griffin-lim + mel gain", rounds, lambda rounds: match_mel(gl, c, rate, rounds=rounds))
    pick("estimate + mel gain", rounds, lambda rounds: match_mel(s, c, rate, rounds=rounds))
    both = [{"T": t, "rounds": r} for t in args.temperatures for r in args.rounds]
    pick("flow + mel gain", both, lambda T, rounds: match_mel(samples[T], c, rate, rounds=rounds))
    pick(
        "flow, lines removed, + mel gain",
        [{**kw, "rounds": r} for kw in widths for r in args.rounds],
        lambda T, w, rounds: match_mel(lines(T, w), c, rate, rounds=rounds),
    )
    pick(
        "flow, correction below fc, + mel gain",
        [{**kw, "rounds": r} for kw in cutoffs for r in args.rounds],
        lambda T, fc, rounds: match_mel(below(T, fc), c, rate, rounds=rounds),
    )
    if split == "test":  # paired per-segment differences (dB), mean and 2 standard errors
        for a, b in PAIRS:
            diff = clips[a] - clips[b]
            err = 2 * diff.std(ddof=1) / np.sqrt(len(diff))
            out.append({"decode": f"{a} - ({b})", "paired_db": round(float(diff.mean()), 3),
                        "paired_2se": round(float(err), 3)})  # fmt: skip
    return out


if __name__ == "__main__":
    main()
