"""How a trained vocoder run turns a mel into a waveform: samples, denoised samples, MAP.

For each run directory given (``examples/vocoder.py`` writes ``seed0``, ``seed1``), 16
validation and 16 test segments of the run's speech split are resynthesised from their mel
frames by: librosa's Griffin-Lim (the baseline); the run's source estimate alone; the flow's
samples at temperatures ``T``; those samples moved one step along the flow's score
(Tweedie's ``x + sigma^2 grad log p(x | mel)``, :meth:`flowforge.Flow.denoise`); and gradient
ascent on ``log p(x | mel)`` (``K`` such steps of size ``h``) from the estimate and from the
``T -> 0`` sample. Prints the log-spectral distance (dB, mean over the segments) and the mean
log-density per sample of each, one JSON line per row.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_decoding.py runs/vocoder/seed0 ...
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from typing import Any

import torch

from flowforge.data.audio import AUDIO_LEVELS, MEL_HOP, mel_context, mel_magnitude
from flowforge.data.registry import load_dataset
from flowforge.eval.audio import _spread, griffin_lim, log_spectral_distance, source_estimate
from flowforge.runs import open_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.001, 0.1])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[3e-4, 1e-3])
    parser.add_argument("--map-steps", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--map-h", type=float, nargs="+", default=[3e-8, 1e-7, 3e-7])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.runs:
        run = open_run(path)
        seed = int(run.record["config"]["seed"])
        ds = mel_context(load_dataset("speech", seed=seed))
        for split in ("val", "test"):
            for row in rows(run.flow, ds, split, args):
                print(json.dumps({"run": path, "seed": seed, "split": split, **row}), flush=True)


class _Memo(torch.nn.Module):
    """The source's ``(s(c), e(c))`` of one context, computed once."""

    def __init__(self, net: Any, c: torch.Tensor) -> None:
        super().__init__()
        self.net, self.c = net, c
        with torch.no_grad():
            self.value = net(c)

    def forward(self, c: torch.Tensor) -> Any:
        if c is self.c or torch.equal(c, self.c):
            return self.value
        return self.net(c)


def memo(flow: Any, c: torch.Tensor) -> None:
    """Make ``flow``'s source compute its estimate of ``c`` once (a score step recomputes it
    otherwise: 32 rounds of Griffin-Lim); other contexts still get their own."""
    from flowforge.transforms.source_shift import SourceShift

    for m in flow.modules():
        if isinstance(m, SourceShift):
            net = m.net.net if isinstance(m.net, _Memo) else m.net
            m.net = _Memo(net, c)


def rows(flow: Any, ds: Any, split: str, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """One split's rows, each as soon as it is measured: ``decode`` and its settings, ``lsd``
    (dB, mean over 16 segments), ``lp`` (mean log-density per sample of ``u``), ``s`` (CPU
    seconds of the decoding, the source's estimate already computed)."""
    rate, length = int(ds.sample_rate), int(ds.event_shape[-1])
    idx = torch.as_tensor(_spread(getattr(ds, split).shape[0], 16))
    half = AUDIO_LEVELS // 2
    x = ((getattr(ds, split)[idx][:, 0].double() - half) / half).numpy()
    c = ds.context_of(split)[idx]
    memo(flow, c)

    def row(name: str, u: torch.Tensor, seconds: float, **kw: Any) -> dict[str, Any]:
        with torch.no_grad():
            lp = float(flow.log_prob(u.float(), c).mean()) / length
        w = (2 * u[:, 0].double().clamp(0, 1) - 1).numpy()
        lsd = float(log_spectral_distance(w, x, rate).mean())
        return {"decode": name, **kw, "lsd": round(lsd, 3), "lp": round(lp, 4),
                "s": round(seconds, 2)}  # fmt: skip

    gl = griffin_lim(mel_magnitude(c), rate, length, hop=MEL_HOP)
    yield {
        "decode": "griffin-lim",
        "lsd": round(float(log_spectral_distance(gl, x, rate).mean()), 3),
    }
    s = source_estimate(flow, c)
    if s is None:
        raise SystemExit(f"{split}: the run's vocoder has no source estimate (source='none')")
    est = torch.as_tensor((s + 1) / 2).float()[:, None]
    yield row("estimate", est, 0.0)
    samples = {}
    for t in args.temperatures:
        torch.manual_seed(0)
        t0 = time.process_time()
        with torch.no_grad():
            u = flow.sample(1, c, temperature=t)[0]
        samples[t] = u
        yield row("sample", u, time.process_time() - t0, T=t)
        for sigma in args.sigmas:
            t0 = time.process_time()
            u_d = flow.denoise(u, sigma, c)
            yield row("tweedie", u_d, time.process_time() - t0, T=t, sigma=sigma)
    for start_name, start in (("estimate", est), ("T0", samples[min(samples)])):
        for h in args.map_h:
            u, done, spent = start.clone(), 0, 0.0
            for k in args.map_steps:
                t0 = time.process_time()
                for _ in range(k - done):  # gradient ascent on log p(u | mel), step h
                    u = flow.denoise(u, h**0.5, c)
                done, spent = k, spent + time.process_time() - t0
                yield row("map", u, spent, start=start_name, h=h, K=k)


if __name__ == "__main__":
    main()
