"""The vocoder a user runs, re-measured on saved runs: its settings chosen on validation, its
test log-spectral distance beside Griffin-Lim's and the estimate's, and its speed.

For each run directory (``examples/vocoder.py`` writes ``seed0``, ``seed1``, ...):
:func:`flowforge.eval.audio.vocoder_summary` (what ``flowforge train`` reports: temperature
and mel-gain rounds chosen on 16 validation segments, then 16 test segments); the same at the
settings ``benchmarks/vocoder_lines.py`` chose (``--check T ROUNDS``, one pair per run), which
must reproduce that script's figures; the synthesis speed of 4 test segments with the gain
(:func:`~flowforge.eval.audio.synthesis_speed`, one thread); and the speed of
``flowforge sample --mel-from`` (:func:`~flowforge.eval.clip.resynthesize_clip`: segments every
``T / 2`` samples, cross-faded) on a clip of 8 test segments, with its log-spectral distance
to the clip beside librosa's Griffin-Lim from the whole clip's mel. ``--update`` writes the new
summary into the run's ``results.json``, so ``flowforge sample --mel-from`` uses its settings.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_product.py runs/vocoder/seed0 ... \\
        --check 0.1 16 0.1 16 0.001 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from flowforge.data.audio import AUDIO_LEVELS, MEL_HOP, mel_context, mel_features, mel_magnitude
from flowforge.data.registry import load_dataset
from flowforge.eval.audio import (
    griffin_lim,
    log_spectral_distance,
    synthesis_speed,
    vocoder_summary,
)
from flowforge.eval.clip import mel_settings, resynthesize_clip, wav_bytes
from flowforge.runs import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--check", type=float, nargs="*", default=[], help="T ROUNDS per run")
    parser.add_argument("--update", action="store_true", help="rewrite results.json's vocoder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for k, path in enumerate(args.runs):
        run = open_run(path)
        flow = run.flow.eval()
        seed = int(run.record["config"]["seed"])
        ds = mel_context(load_dataset("speech", seed=seed))
        start = time.process_time()
        voc = vocoder_summary(flow, ds)
        row = {"run": path, "seed": seed, "s": round(time.process_time() - start, 1), **voc}
        print(json.dumps(row), flush=True)
        if len(args.check) >= 2 * k + 2:
            t, r = args.check[2 * k], int(args.check[2 * k + 1])
            at = vocoder_summary(flow, ds, temperatures=(t,), mel_gains=(r,))
            print(json.dumps({"run": path, "check": [t, r], "lsd_db": at["lsd_db"]}), flush=True)
        rate = int(ds.sample_rate)
        t, r = voc["temperature"], voc["mel_gain_rounds"]
        c = ds.context_of("test")[:4]
        speed = {
            "flow": synthesis_speed(flow, 1, c, temperature=t),
            "with_gain": synthesis_speed(flow, 1, c, temperature=t, mel_gain=r, rate=rate),
        }
        settings = mel_settings(run.spec, rate)
        assert settings is not None
        levels = ds.test[:8, 0].double().numpy().reshape(-1)
        wave = (levels - AUDIO_LEVELS // 2) / (AUDIO_LEVELS // 2)
        whole = mel_features(levels[None, None], rate)
        gl = griffin_lim(mel_magnitude(whole), rate, wave.size, hop=MEL_HOP)
        clip_lsd = {"griffin_lim": float(log_spectral_distance(gl[0], wave, rate))}
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "clip.wav"
            clip.write_bytes(wav_bytes(wave, rate))
            for name, gain in (("clip", 0), ("clip_with_gain", r)):
                best = float("inf")
                for _ in range(2):
                    begin = time.perf_counter()
                    y = resynthesize_clip(flow, clip, settings, t, mel_gain=gain)
                    best = min(best, time.perf_counter() - begin)
                speed[name] = wave.size / best
                clip_lsd[name] = float(log_spectral_distance(y, wave, rate))
        per_s = {f"{k}_samples_per_s": round(v) for k, v in speed.items()}
        lsd = {f"{k}_lsd_db": round(v, 3) for k, v in clip_lsd.items()}
        print(json.dumps({"run": path, "rate": rate, **per_s, **lsd}), flush=True)
        if args.update:
            results_path = Path(path) / "results.json"
            results = json.loads(results_path.read_text())
            results["audio"]["vocoder"] = voc
            results["audio"]["synthesis_samples_per_s"] = speed["with_gain"]
            results["audio"]["real_time_factor"] = speed["with_gain"] / rate
            results_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
