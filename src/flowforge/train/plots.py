"""PNG plots of a run: loss curves, the learned 2-D density, image samples, spectrograms.

matplotlib (the ``cli`` extra) is imported lazily, and only its object-oriented API with the
Agg canvas is used: no pyplot, no global backend switch, no windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from flowforge.runs.figures import new_figure, write_png
from flowforge.train.batches import model_input

if TYPE_CHECKING:
    from flowforge.data import Dataset
    from flowforge.runs.recipe import ModelSpec

__all__ = [
    "image_grid",
    "image_samples_figure",
    "new_figure",
    "plot_density_2d",
    "plot_losses",
    "scatter",
    "score_histogram",
    "spectrogram_figure",
    "write_audio_samples",
    "write_png",
    "write_run_plots",
]


def plot_losses(
    records: Sequence[dict[str, Any]], path: str | Path, likelihood: bool = True
) -> Path:
    """Training loss and validation NLL against the step, from step 0.

    Args:
        records: the run's metrics records (``step``, ``train_loss``, ``val_nll``).
        path: the PNG to write.
        likelihood: the training loss is an NLL in nats (one axis); else (flow matching) a
            squared error, drawn on its own axis beside the validation NLL's.
    """
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(6, 4)
    ax = fig.add_subplot()
    steps = [int(r["step"]) for r in records]
    single = len(set(steps)) <= 1  # one evaluation: big markers, the point mid-axis
    train_ax = ax if likelihood else ax.twinx()
    train_label = "train loss (NLL)" if likelihood else "train loss (flow matching, squared error)"
    style = {"marker": "o", "markersize": 7} if single else {"marker": "."}
    a = train_ax.plot(steps, [r["train_loss"] for r in records], "C0-", label=train_label, **style)
    b = ax.plot(steps, [r["val_nll"] for r in records], "C1-", label="validation NLL", **style)
    ax.set_xlabel("step")
    ax.set_ylabel("nats" if likelihood else "validation NLL (nats)")
    if not likelihood:
        train_ax.set_ylabel("squared error")
    last = max(max(steps, default=1), 1)
    if single:  # the one evaluation in the middle (from step 0 unless it is step 0)
        ax.set_xlim(steps[0] - last if steps else 0, steps[0] + last if steps else 2)
    else:
        ax.set_xlim(0, last * 1.05)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("training loss and validation NLL")
    ax.legend(a + b, [str(line.get_label()) for line in a + b])
    ax.grid(alpha=0.3)
    return write_png(fig, path)


@torch.no_grad()
def plot_density_2d(
    flow: torch.nn.Module, data: Tensor, path: str | Path, n_samples: int = 2000, grid: int = 200
) -> Path:
    """Three panels: data, learned density ``exp(log p)`` on a grid, and flow samples.

    Args:
        flow: a flow over 2-D points.
        data: ``(N, 2)`` reference points (the test split).
        path: the PNG file.
        n_samples: samples to draw from the flow.
        grid: grid points per axis for the density.
    """
    device = next(iter(flow.parameters()), data).device
    data = data[:n_samples].cpu()
    lo, hi = data.min(0).values, data.max(0).values
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs = torch.linspace(float(lo[0]), float(hi[0]), grid)
    ys = torch.linspace(float(lo[1]), float(hi[1]), grid)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # (grid*grid, 2)
    flow.eval()
    logp = torch.cat([flow.log_prob(p.to(device)).cpu() for p in points.split(8192)])  # type: ignore[operator]
    density = torch.nan_to_num(logp.exp(), nan=0.0, posinf=0.0).reshape(grid, grid)
    samples = flow.sample(n_samples).cpu()  # type: ignore[operator]
    fig = new_figure(12, 4)
    axes = fig.subplots(1, 3, sharex=True, sharey=True)
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    axes[0].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5)
    axes[0].set_title("data")
    axes[1].imshow(density.numpy(), origin="lower", extent=extent, aspect="auto", cmap="magma")
    axes[1].set_title("learned density")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="C1")
    axes[2].set_title("flow samples")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    return write_png(fig, path)


def image_grid(images: Tensor, path: str | Path, title: str | None = None) -> Path:
    """Save ``(N, C, H, W)`` images with values in ``[0, 1]`` as one grid PNG."""
    n = images.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = new_figure(0.6 * cols + 0.4, 0.6 * rows + (0.7 if title else 0.4))
    ax = fig.add_subplot()
    ax.imshow(_canvas(images, cols), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return write_png(fig, path)


def scatter(points: Tensor, path: str | Path, title: str | None = None) -> Path:
    """Save a scatter plot of ``(N, 2)`` points."""
    fig = new_figure(5, 5)
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    if title:
        ax.set_title(title)
    return write_png(fig, path)


def _quantized(u: Tensor, levels: int) -> Tensor:
    """Dequantized values ``u`` in ``[0, 1)`` back to their levels, scaled to ``[0, 1]``."""
    return (u * levels).floor().clamp(0, levels - 1) / max(levels - 1, 1)


@torch.no_grad()
def image_samples_figure(
    flow: torch.nn.Module,
    real: Tensor,
    levels: int,
    path: str | Path,
    temperatures: Sequence[float] = (1.0, 0.8, 0.6),
    n: int = 64,
    seed: int = 0,
    context: Tensor | None = None,
) -> Path:
    """Real images next to flow samples at a few temperatures, one grid per panel.

    Args:
        flow: an image flow (``sample(n, temperature=T)`` returns ``(n, C, H, W)`` in
            ``[0, 1)``).
        real: ``(N, C, H, W)`` real images as levels ``0 .. K-1`` (the test split).
        levels: ``K``.
        path: the PNG file.
        temperatures: sampling temperatures; only 1 when the base cannot be tempered.
        n: images per panel.
        seed: seed of the samples.
        context: ``(N, K)`` the real images' classes (a class-conditional flow): sample ``i``
            is drawn given real image ``i``'s class.
    """
    base = getattr(flow, "base", None)
    if not getattr(base, "tempered_by_scaling", False):
        temperatures = [1.0]
    panels = [("test data", real[:n].cpu() / max(levels - 1, 1))]
    was_training = flow.training
    flow.eval()
    try:
        for t in temperatures:
            torch.manual_seed(seed)
            if context is None:
                u = flow.sample(n, temperature=t).cpu()  # type: ignore[operator]
            else:  # one sample per real image's class: (1, n, C, H, W) -> (n, C, H, W)
                c = context[:n].to(next(flow.parameters()))
                u = flow.sample(1, c, temperature=t)[0].cpu()  # type: ignore[operator]
            panels.append((f"samples, T = {t:g}", _quantized(u, levels)))
    finally:
        flow.train(was_training)
    cols = math.ceil(math.sqrt(n))
    fig = new_figure(2.6 * len(panels), 2.9)
    axes = fig.subplots(1, len(panels))
    for ax, (title, images) in zip(axes, panels, strict=True):
        ax.imshow(_canvas(images, cols), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    return write_png(fig, path)


def _canvas(images: Tensor, cols: int) -> Any:
    """``(N, C, H, W)`` images in ``[0, 1]`` tiled into one ``(rows, cols)`` picture (numpy)."""
    n = images.shape[0]
    rows = math.ceil(n / cols)
    c, h, w = images.shape[1:]
    canvas = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i in range(n):
        r, k = divmod(i, cols)
        canvas[:, r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = images[i]
    pixels = canvas.clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    return pixels[..., 0] if c == 1 else pixels


def write_run_plots(
    out: Path,
    flow: torch.nn.Module,
    spec: ModelSpec,
    ds: Dataset,
    records: Sequence[dict[str, Any]],
    likelihood: bool = True,
    temperature: float | None = None,
    mel_gain: int = 0,
) -> list[Path]:
    """The plots of a finished run (``likelihood``: whether the training loss is an NLL, see
    :func:`plot_losses`): ``loss.png``, plus ``density.png`` (2-D data) or
    ``samples.png`` (images: test images next to samples at temperatures 1, 0.8, 0.6), or
    audio's WAV files and ``spectrograms.png`` (:func:`write_audio_samples`, at
    ``temperature`` when given, a vocoder's resynthesis with ``mel_gain`` rounds of its mel
    gain)."""
    written = []
    if records:
        written.append(plot_losses(records, out / "loss.png", likelihood))
    if spec.features == 2 and spec.kind != "image":
        test = model_input(ds, ds.test, None)  # (N, 2) in the data's own units
        written.append(plot_density_2d(flow, test, out / "density.png"))
    elif spec.kind == "image":
        levels = int(spec.levels or 2)
        written.append(
            image_samples_figure(
                flow, ds.test, levels, out / "samples.png", context=ds.context_of("test")
            )
        )
    elif spec.kind == "audio" and ds.sample_rate:
        written += write_audio_samples(
            flow, ds.test, ds.sample_rate, out, temperature or 0.6, ds.context_of("test"), mel_gain
        )
    return written


def spectrogram_figure(waves: dict[str, Any], rate: int, path: str | Path) -> Path:
    """Mel spectrograms (dB, 80 bands, librosa) of named waveforms ``(T,)``, one row each, on
    one colour scale (the loudest minus 80 dB to the loudest)."""
    from flowforge.eval.audio import mel_power

    specs = {k: 10 * np.log10(np.maximum(mel_power(v, rate), 1e-10)) for k, v in waves.items()}
    top = max(float(v.max()) for v in specs.values())
    fig = new_figure(7.0, 1.9 * len(specs) + 0.4)
    axes = fig.subplots(len(specs), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, spec) in zip(axes, specs.items()):
        seconds = len(np.asarray(waves[name])) / rate
        im = ax.imshow(
            spec,
            origin="lower",
            aspect="auto",
            vmin=top - 80,
            vmax=top,
            cmap="magma",
            extent=(0.0, seconds, 0, spec.shape[0]),
        )
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("mel band")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(im, ax=list(axes), label="dB")
    return write_png(fig, path)


def write_audio_samples(
    flow: torch.nn.Module,
    test: Tensor,
    rate: int,
    out: Path,
    temperature: float = 0.6,
    context: Tensor | None = None,
    mel_gain: int = 0,
) -> list[Path]:
    """An audio run's outputs as 16-bit WAV files, and ``spectrograms.png`` of the first of
    each kind: three test segments ``test{i}.wav`` and three samples ``sample{i}.wav`` (at
    ``temperature``); for a vocoder (``context``: the test segments' mel frames) instead of
    the samples, each test segment's resynthesis from its mel ``test{i}_resynthesis.wav``,
    Griffin-Lim's from the same mel ``test{i}_griffin_lim.wav`` and, for a vocoder centred on a
    source, the source's estimate alone ``test{i}_estimate.wav``.

    Args:
        flow: the run's flow over dequantized levels ``u`` in ``[0, 1)``, shape ``(1, T)``.
        test: ``(N, 1, T)`` test levels ``0 .. 65535``.
        rate: the sample rate in Hz.
        out: the run directory.
        temperature: the base's standard deviation for the samples.
        context: ``(N, C)`` the test segments' mel frames (a vocoder), or ``None``.
        mel_gain: a vocoder's rounds of its mel gain after the draw.
    """
    import soundfile as sf

    from flowforge.data.audio import MEL_HOP, mel_magnitude, waveform
    from flowforge.eval.audio import griffin_lim, resynthesize, source_estimate

    originals = ((test[:3, 0].double() - 32768) / 32768).numpy()
    outputs: dict[str, Any] = {"": originals}
    if context is None:
        with torch.no_grad():
            drawn = flow.sample(3, temperature=temperature)  # type: ignore[operator]
        samples = waveform(drawn[:, 0].clamp(0, 1)).double().numpy()  # (3, T) in [-1, 1]
        outputs["sample"] = samples
        waves = {"test segment": originals[0], f"sample (temperature {temperature})": samples[0]}
    else:
        mel = context[: len(originals)]
        outputs["_resynthesis"] = resynthesize(flow, mel, temperature, mel_gain=mel_gain, rate=rate)
        outputs["_griffin_lim"] = griffin_lim(mel_magnitude(mel), rate, test.shape[-1], hop=MEL_HOP)
        waves = {
            "test segment": originals[0],
            f"resynthesis from its mel (temperature {temperature}, mel gain {mel_gain})": outputs[
                "_resynthesis"
            ][0],
        }
        estimate = source_estimate(flow, mel)
        if estimate is not None:
            outputs["_estimate"] = estimate
            waves["the vocoder's source estimate alone"] = estimate[0]
        waves["Griffin-Lim (librosa) from the same mel"] = outputs["_griffin_lim"][0]
    written = []
    for suffix, group in outputs.items():
        for i, wave in enumerate(group):
            name = f"sample{i}.wav" if suffix == "sample" else f"test{i}{suffix}.wav"
            sf.write(out / name, np.clip(wave, -1, 1), rate, subtype="PCM_16")
            written.append(out / name)
    written.append(spectrogram_figure(waves, rate, out / "spectrograms.png"))
    return written


def score_histogram(
    log_prob: np.ndarray,
    is_anomaly: np.ndarray | None,
    path: str | Path,
    threshold: float | None = None,
    bins: int = 40,
) -> Path:
    """A PNG histogram of log-likelihoods: normal against anomalous rows when labels are given.

    The range is the 1st percentile to the largest finite score (one far anomaly would
    otherwise squash every bar into one); the legend counts the rows left of it and the
    non-finite ones.

    Args:
        log_prob: ``(N,)`` log-likelihoods.
        is_anomaly: ``(N,)`` booleans, or ``None`` for one histogram of every row.
        path: the ``.png`` file.
        threshold: drawn as a vertical line (rows left of it are flagged).
        bins: bars over the range.
    """
    lp = np.asarray(log_prob, dtype=np.float64)
    finite = np.isfinite(lp)
    if not finite.any():
        raise ValueError("no finite score to plot")
    lo, hi = float(np.percentile(lp[finite], 1.0)), float(lp[finite].max())
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    fig = new_figure(6.4, 4.0)
    ax = fig.add_subplot()
    groups = [("all rows", np.ones(lp.size, dtype=bool), "tab:blue")]
    if is_anomaly is not None:
        flags = np.asarray(is_anomaly, dtype=bool)
        groups = [("normal", ~flags, "tab:blue"), ("anomaly", flags, "tab:red")]
    for name, rows, colour in groups:
        v = lp[rows & finite]
        shown = v[v >= lo]
        label = f"{name} ({rows.sum()} rows"
        if shown.size < v.size:
            label += f"; {v.size - shown.size} below the range"
        if (rows & ~finite).any():
            label += f"; {(rows & ~finite).sum()} non-finite"
        ax.hist(
            shown, bins=edges.tolist(), color=colour, alpha=0.5, label=label + ")", density=True
        )
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("log p(x) (nats); low is anomalous")
    ax.set_ylabel("density of rows")
    ax.legend(fontsize="small")
    return write_png(fig, path)
