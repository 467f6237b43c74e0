"""Fitting a vocoder's learned source estimate before its flow trains.

A ``waveglow`` vocoder with ``source="griffin-lim"`` and ``source_refine > 0`` centres its flow
on Griffin-Lim's waveform from magnitudes that a small network refines
(:class:`~flowforge.nn.MelGriffinLim`). The network is fitted here, on the training segments,
by its spectral loss (:meth:`~flowforge.nn.MelGriffinLim.spectral_loss`: the squared log-mel
error of the refined magnitudes against each segment's own), before the flow's first step; the
likelihood gives it no gradient, so it stays fixed while the flow trains and ``p(x | mel)``
stays an exact density. Measured on the speech set (seed 0, 16 validation / test segments,
32 rounds of Griffin-Lim from the refined magnitudes against librosa's 64 from its own): 200
steps of 32 segments take about 13 s of one thread and bring the estimate from 4.61 / 4.70 dB
(the accelerated least squares alone) to 3.94 / 4.15 dB, against librosa's 4.58 / 4.68.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from flowforge.core.flow import Flow
from flowforge.data.audio import AUDIO_LEVELS
from flowforge.data.base import Dataset
from flowforge.nn.griffin_lim import MelGriffinLim

__all__ = ["SOURCE_FIT", "fit_source"]

#: Steps, segments per step and learning rate (Adam) of the source's spectral fit.
SOURCE_FIT: dict[str, Any] = {"steps": 200, "batch_size": 32, "lr": 2e-3}


def fit_source(
    flow: Flow, ds: Dataset, seed: int, fit: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Fit the learned refinement of a vocoder's Griffin-Lim source to ``ds``'s training
    segments; ``None`` (nothing done) for a flow without one.

    Args:
        flow: the run's flow (a ``waveglow`` vocoder), on its device.
        ds: the audio dataset with its mel context (:func:`~flowforge.data.audio.mel_context`).
        seed: of the segments drawn.
        fit: ``steps``, ``batch_size`` and ``lr``; default :data:`SOURCE_FIT`.

    Returns:
        ``steps``, ``seconds`` and ``rms_db`` (the root of the last 20 steps' mean loss), or
        ``None``.
    """
    sources = [m for m in flow.modules() if isinstance(m, MelGriffinLim) and m.refiner]
    context = ds.context_of("train")
    if not sources or context is None or ds.train is None:
        return None
    (source,) = sources
    refiner = source.refiner
    assert refiner is not None
    opts = {**SOURCE_FIT, **(fit or {})}
    batch = min(int(opts["batch_size"]), int(ds.train.shape[0]))  # no more than the set has
    device = next(refiner.parameters()).device
    x = ((ds.train[:, 0].double() - AUDIO_LEVELS // 2) / (AUDIO_LEVELS // 2)).float()  # (N, T)
    base = torch.cat(  # the least squares, once per segment: the fit trains what follows it
        [source.least_squares(context[i : i + 64].to(device)) for i in range(0, len(x), 64)]
    )
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(refiner.parameters(), lr=float(opts["lr"]))
    losses: list[float] = []
    start = time.perf_counter()
    with torch.enable_grad():
        for _ in range(int(opts["steps"])):
            idx = torch.randint(0, x.shape[0], (batch,), generator=gen)
            loss = source.spectral_loss(context[idx].to(device), x[idx].to(device), base[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    for p in refiner.parameters():
        p.grad = None
    tail = losses[-20:]
    return {
        "steps": len(losses),
        "seconds": round(time.perf_counter() - start, 3),
        "rms_db": math.sqrt(sum(tail) / len(tail)) if tail else None,
    }
