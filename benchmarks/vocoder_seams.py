"""Seams in a vocoder's resynthesis of long clips: segments back to back against cross-faded.

``flowforge sample RUN --mel-from CLIP`` resynthesises a clip longer than the run's segments
(4,096 samples) segment by segment, each from its own mel frames
(:func:`flowforge.eval.clip.resynthesize_clip`, segments every 2,048 samples cross-faded by
Hann windows). On the first 8 clips of the built-in speech set this prints, for the flow (at
temperature 0.001) and for its source estimate alone (a vocoder centred on one), the mean
80-band log-spectral distance (dB) of the frames within 512 samples of a multiple of 4,096
(where back-to-back segments meet) and of the other frames, and the mean absolute step between
two samples there relative to the mean step; segments back to back first, then cross-faded.

    OMP_NUM_THREADS=1 nice python benchmarks/vocoder_seams.py RUN
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

import flowforge as ff
from flowforge.data import default_data_dir
from flowforge.eval.audio import mel_power, resynthesize, source_estimate
from flowforge.eval.clip import MelSettings, _context, read_clip, resynthesize_clip
from flowforge.transforms.source_shift import SourceShift


def seam_figures(y: np.ndarray, x: np.ndarray, length: int) -> tuple[float, float, float]:
    """Frame LSD near the seams, elsewhere, and the step at a seam over the mean step."""
    pa, pb = (np.maximum(mel_power(a.astype(np.float32), 16000), 1e-8) for a in (y, x))
    frames = np.sqrt(((10 * np.log10(pa / pb)) ** 2).mean(0))
    seams = np.arange(length, x.size, length)
    centres = np.arange(frames.size) * 256
    near = (np.abs(centres[:, None] - seams[None]) <= 512).any(1)
    step = np.abs(np.diff(y))
    return (
        float(frames[near].mean()),
        float(frames[~near].mean()),
        float(step[seams - 1].mean() / step.mean()),
    )


class _EstimateOnly(torch.nn.Module):
    """A source-centred vocoder's estimate as a 'flow' that ``resynthesize`` can sample."""

    def __init__(self, flow: Any) -> None:
        super().__init__()
        self.flow = flow

    def sample(self, n: int, context: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        s = torch.from_numpy(source_estimate(self.flow, context))  # (N, T) waveform
        return ((s + 1) / 2)[None, :, None].expand(n, -1, 1, -1).float()  # the levels u


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    flow = ff.load(args.run)
    flow.eval()
    settings = MelSettings(16000, 4096, 40, 256)
    clips = sorted((default_data_dir(None) / "speech" / "wavs").glob("*.wav"))[:8]
    models = {"flow, T = 0.001": flow}
    if any(isinstance(m, SourceShift) for m in flow.modules()):
        models["its estimate alone"] = _EstimateOnly(flow)
    for name, model in models.items():
        rows: dict[str, list[tuple[float, float, float]]] = {"back to back": [], "cross-faded": []}
        for path in clips:
            levels, n = read_clip(path, settings, pad=True)
            x = (levels.reshape(-1)[:n] - 32768) / 32768
            plain = resynthesize(model, _context(levels, settings, flow), 0.001).reshape(-1)[:n]
            faded = resynthesize_clip(model, path, settings, 0.001)
            rows["back to back"].append(seam_figures(plain, x, settings.length))
            rows["cross-faded"].append(seam_figures(faded, x, settings.length))
        for how, values in rows.items():
            near, rest, step = np.mean(values, axis=0)
            print(f"{name} | {how} | {near:.2f} | {rest:.2f} | {step:.2f}")


if __name__ == "__main__":
    main()
