"""The speed benchmark's measurements: the timed operations, interleaved timing and paired
ratios, matmul FLOPs against a measured ``torch.mm``, and peak memory of one op."""

from __future__ import annotations

import ctypes
import itertools
import math
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from speed_common import BINS, HIDDEN, TRANSFORMS, Dim, Model, _half_masks, event_of
from speed_models import build
from torch import Tensor


# ------------------------------------------------------------------------ workloads
def make_ops(
    model: Model, d: Dim, sizes: dict[str, int], compiled: bool = False
) -> dict[str, Callable[[], Any]]:
    """Closures for the timed operations of one model (standard normal inputs)."""
    gen = torch.Generator().manual_seed(1)
    event = event_of(d)
    x_train = torch.randn(sizes["train"], *event, generator=gen, dtype=torch.float32)
    x_lp = torch.randn(sizes["log_prob"], *event, generator=gen, dtype=torch.float32)
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-4)

    def loss_fn(x: Tensor) -> Tensor:
        return -model.log_prob(x).mean()

    def fwd_bwd(x: Tensor) -> Tensor:
        loss = loss_fn(x)
        loss.backward()
        return loss

    lp = model.log_prob
    step_fn = fwd_bwd
    if compiled:
        lp = torch.compile(model.log_prob)
        step_fn = torch.compile(fwd_bwd)

    def train() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = step_fn(x_train)
        opt.step()
        return loss

    def log_prob() -> Tensor:
        with torch.no_grad():
            return lp(x_lp)

    def sample() -> Tensor:
        with torch.no_grad():
            return model.sample(sizes["sample"])

    ops: dict[str, Callable[[], Any]] = {"train": train, "log_prob": log_prob}
    if not compiled:
        ops["sample"] = sample
    return ops


def _timed(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def time_interleaved(
    ops: dict[str, Callable[[], Any]],
    repeats: int,
    min_time: float = 0.05,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each op, interleaved round-robin after a warm-up.

    Each measurement runs enough calls to last at least ``min_time`` seconds; the order
    of the libraries is shuffled in each repetition. ``samples``, if given, receives every
    repetition's time of each op (for paired ratios).
    """
    number = {}
    for name, fn in ops.items():
        fn()  # warm-up (and compilation)
        t = _timed(fn, 1)
        number[name] = max(1, math.ceil(min_time / max(t, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            times[name].append(_timed(ops[name], number[name]))
    if samples is not None:
        samples.update(times)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratio(peer: list[float], ours: list[float]) -> float:
    """Median over repetitions of ``peer / ours`` timed in the same repetition.

    The machine's speed drifts between repetitions (other jobs); within one repetition the
    libraries run seconds apart, so per-repetition ratios cancel most of the drift that a
    ratio of the two medians keeps.
    """
    return statistics.median(p / o for p, o in zip(peer, ours, strict=True))


# ------------------------------------------------------------------ flops and peak
def layer_shapes(flow: str, d: int) -> list[tuple[int, int]]:
    """``(in, out)`` of every linear layer of one transform's network."""
    if flow in ("MAF", "NSF"):
        p = 2 if flow == "MAF" else 3 * BINS - 1
        sizes = [d, *HIDDEN, d * p]
    else:
        n_a, n_b = _half_masks(d)
        p = 2 if flow == "RealNVP" else 1
        sizes = [n_a, *HIDDEN, n_b * p]
    return list(itertools.pairwise(sizes))


def log_prob_flops(flow: str, d: int, batch: int) -> int:
    """Matmul FLOPs of one log_prob pass: ``2 * B * in * out`` per linear layer."""
    return TRANSFORMS * sum(2 * batch * i * o for i, o in layer_shapes(flow, d))


def matmul_seconds(flow: str, d: int, batch: int, repeats: int) -> float:
    """Measured time of float32 ``torch.mm`` of exactly the log_prob pass's shapes."""
    gen = torch.Generator().manual_seed(2)
    mats = [
        (torch.randn(batch, i, generator=gen), torch.randn(i, o, generator=gen))
        for i, o in layer_shapes(flow, d)
    ]

    def run() -> None:
        for a, b in mats:
            torch.mm(a, b)

    return TRANSFORMS * time_interleaved({"mm": run}, repeats)["mm"]


# ----------------------------------------------------------------------- memory
def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def memory_child(lib: str, flow: str, d: Dim, op: str, sizes: dict[str, int]) -> float:
    """Peak resident memory (MiB) of one op above the resident memory just before it.

    Runs in a fresh process; the kernel's peak counter (VmHWM) is reset just before the
    op, after the model, optimizer state and inputs already exist, one op has run and the
    freed heap has been trimmed (Linux, glibc).
    """
    torch.set_num_threads(1)
    model = build(lib, flow, d)
    if model is None:
        return float("nan")
    ops = make_ops(model, d, sizes)
    ops[op]()  # the first call allocates optimizer state and lazy buffers
    import gc

    gc.collect()
    # Hand freed heap pages back to the kernel, so the op's peak is not hidden by pages that
    # the first call left resident.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    ops[op]()
    peak = _rss_kib("VmHWM")
    return (peak - before) / 1024.0
