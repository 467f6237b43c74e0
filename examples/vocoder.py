"""A CPU-sized WaveGlow vocoder on the built-in speech set, against Griffin-Lim from the same mel.

Trains ``ff.flows.WaveGlow`` conditioned on 40-band log-mel frames for a few minutes, then
resynthesises held-out test clips from their mel and compares the log-spectral distance (dB,
80-band mel of the resynthesis against the original) with Griffin-Lim's waveform from the same
mel. Writes WAV files, a spectrogram figure and ``vocoder.json`` into ``--out``.

    PYTHONPATH=src python examples/vocoder.py --minutes 5 --out runs/vocoder

References:
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import flowforge as ff
from flowforge.data import default_data_dir
from flowforge.data.audio import log_mel
from flowforge.data.speech import load_speech
from flowforge.eval.audio import griffin_lim, log_spectral_distance, synthesis_speed

RATE, HOP, MELS = 16000, 256, 40


def waveforms(levels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """16-bit levels ``(N, 1, T)`` to samples in ``[-1, 1)``, dequantized when a generator
    is given."""
    noise = 0.5 if generator is None else torch.rand(levels.shape, generator=generator)
    return (levels - 32768 + noise) / 32768


def features(x: torch.Tensor) -> torch.Tensor:
    """The conditioning: log-mel frames ``(N, MELS * T / HOP)``, scaled to about unit size."""
    mel = log_mel(x[:, 0].numpy(), RATE, n_mels=MELS, hop=HOP)  # (N, MELS, frames)
    return torch.from_numpy(mel / 4.0 + 2.0).flatten(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time")
    parser.add_argument("--clips", type=int, default=16, help="test segments to resynthesise")
    parser.add_argument("--out", default="runs/vocoder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="evaluate these saved weights instead of training")
    parser.add_argument("--resume", help="continue training from these saved weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    ds = load_speech(default_data_dir(None))
    length = ds.event_shape[1]
    assert ds.train is not None
    train_x = waveforms(ds.train, None)
    train_c = features(train_x)
    val_x = waveforms(ds.val, None)
    val_c = features(val_x)
    flow = ff.flows.WaveGlow(
        shape=(1, length),
        context=train_c.shape[1],
        frame_features=MELS,
        depth=8,
        hidden=32,
        layers=3,
    )
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(args.seed)
    start, step, losses = time.perf_counter(), 0, [math.nan]
    if args.weights or args.resume:
        from safetensors.torch import load_file

        flow.load_state_dict(load_file(args.weights or args.resume))
    while not args.weights and time.perf_counter() - start < 60 * args.minutes:
        idx = torch.randint(train_x.shape[0], (8,), generator=gen)
        x = waveforms(ds.train[idx], gen)
        loss = -flow.log_prob(x, train_c[idx]).mean() / length
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 50.0)
        opt.step()
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}")
        losses.append(float(loss.detach()))
        step += 1
    seconds = time.perf_counter() - start
    if not args.weights:
        from safetensors.torch import save_file

        save_file(flow.state_dict(), str(out / "vocoder.safetensors"))
    flow.eval()
    with torch.no_grad():
        val_ll = float(flow.log_prob(val_x, val_c).mean()) / length

    # resynthesis of held-out test segments from their mel; temperature chosen on validation
    test_x = waveforms(ds.test[: args.clips], None)
    test_c = features(test_x)
    original = test_x[:, 0].numpy()

    def resynthesise(c: torch.Tensor, t: float) -> np.ndarray:
        torch.manual_seed(args.seed)
        with torch.no_grad():
            return flow.sample(1, c, temperature=t)[0, :, 0].clamp(-1, 1).numpy()

    temps = (0.5, 0.7, 0.9, 1.0)
    val_lsd = {
        t: float(
            log_spectral_distance(resynthesise(val_c[:16], t), val_x[:16, 0].numpy(), RATE).mean()
        )
        for t in temps
    }
    best_t = min(val_lsd, key=val_lsd.__getitem__)
    flow_wave = resynthesise(test_c, best_t)
    magnitude = np.exp((test_c.reshape(-1, MELS, length // HOP).numpy() - 2.0) * 4.0)
    gl_wave = griffin_lim(magnitude, RATE, length, hop=HOP)
    lsd_flow = log_spectral_distance(flow_wave, original, RATE)
    lsd_gl = log_spectral_distance(gl_wave, original, RATE)
    speed = synthesis_speed(flow, 1, test_c[:4], temperature=best_t)

    import soundfile as sf

    for i in range(min(3, args.clips)):
        sf.write(out / f"test{i}_original.wav", original[i], RATE, subtype="PCM_16")
        sf.write(out / f"test{i}_waveglow.wav", flow_wave[i], RATE, subtype="PCM_16")
        sf.write(out / f"test{i}_griffin_lim.wav", gl_wave[i], RATE, subtype="PCM_16")
    from flowforge.train.plots import spectrogram_figure

    spectrogram_figure(
        {
            "original": original[0],
            f"WaveGlow (T={best_t})": flow_wave[0],
            "Griffin-Lim": gl_wave[0],
        },
        RATE,
        out / "spectrograms.png",
    )
    report = {
        "steps": step,
        "train_seconds": round(seconds, 1),
        "final_train_nll_per_sample": float(np.mean(losses[-20:])),
        "val_ll_nats_per_sample": val_ll,
        "parameters": sum(p.numel() for p in flow.parameters()),
        "temperature": best_t,
        "val_lsd_by_temperature": val_lsd,
        "test_clips": args.clips,
        "lsd_waveglow_db": [float(lsd_flow.mean()), float(lsd_flow.std() / math.sqrt(args.clips))],
        "lsd_griffin_lim_db": [float(lsd_gl.mean()), float(lsd_gl.std() / math.sqrt(args.clips))],
        "synthesis_samples_per_s": speed,
        "real_time_factor": speed / RATE,
        "threads": args.threads,
    }
    (out / "vocoder.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
