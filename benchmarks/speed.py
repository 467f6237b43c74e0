"""Side-by-side speed benchmark: flowforge against zuko, nflows and normflows.

The *same* architecture is built in every library: ``K = 5`` transforms, MADE / coupling
networks with hidden sizes ``(128, 128)`` (no residual blocks, no batch norm), reverse
orders or permutations between transforms, a standard normal base and float32. For every
flow and dimension the script times, interleaved round-robin across the libraries within
each repetition (so machine noise hits all of them alike), after a warm-up:

* ``train``: ``-log_prob(x).mean()``, backward and an Adam step (batch 512);
* ``log_prob``: the density of a batch of 8192 without gradient;
* ``sample``: 8192 samples without gradient.

``FFJORD`` is the continuous flow, on ``D = 2`` only (it ignores ``--dims``): one CNF with
a ``3 x 64`` dynamics network against zuko's CNF of the same size (see
``benchmarks/speed_cnf.py`` for how the two are matched); ``train`` and ``log_prob`` are
timed, with the batches above, and the function evaluations (NFE) of each call are printed
under the table. nflows and normflows have no continuous flows.

``Glow`` is the image flow: ``--image`` ``(C, H, W)`` (default ``(1, 8, 8)``; it ignores
``--dims``), ``--glow-levels`` levels of ``--glow-steps`` steps (ActNorm, LU 1x1
convolution, channel affine coupling with Glow's ``sigmoid(h + 2)`` scale and a conv net
``3x3 -> 1x1 -> 3x3`` of ``--glow-hidden`` channels), a learned split prior (an affine
coupling of the factored half given the kept half) after each level but the last, a
standard normal base. normflows and nflows build it from their Glow parts (see
:func:`build_normflows_glow`, :func:`build_nflows_glow`); zuko has no image flows. Its own
batches: ``--glow-train-batch`` (64) and ``--glow-batch`` (1024, log_prob and sample), on
standard normal images; each timed measurement lasts at least ``--glow-min-time`` seconds.

It prints medians, parameter counts (they must agree within a few percent, or the
comparison is void) and each peer's time divided by ours (``> 1``: we are faster), as the
median of the per-repetition ratios (the machine's speed drifts between repetitions; the
libraries of one repetition run seconds apart).
Options add peak memory (each library in its own subprocess), the achieved GFLOP/s of
the log_prob pass against a measured float32 matmul of the same shapes, and compiled
(``torch.compile``) timings.

Usage::

    python benchmarks/speed.py                      # full run (about 15-25 min on 2 cores)
    python benchmarks/speed.py --quick              # smoke check, about 1-2 min
    python benchmarks/speed.py --flows MAF NSF --dims 64 --memory --compile --json out.json
    python benchmarks/speed.py --flows Glow --repeats 5     # Glow on (1, 8, 8), about 1 min

Peers come from the ``bench`` extra: ``pip install flowforge[bench]``. A peer that is not
installed, or lacks a flow, is reported as ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The pieces live in sibling modules (speed_common, speed_models, speed_glow, speed_cnf,
# speed_timing, speed_report); this script is also loaded by path, not as a package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import speed_cnf
from speed_common import (
    CNF_FLOWS,
    FLOWS,
    GLOW,
    IMAGE,
    IMAGE_FLOWS,
    LIBS,
    NOT_AVAILABLE,
    QUICK_NOTE,
    Dim,
    Model,
    available,
    dim_label,
    n_params,
)
from speed_models import build
from speed_report import Results, markdown
from speed_timing import (
    log_prob_flops,
    make_ops,
    matmul_seconds,
    memory_child,
    paired_ratio,
    time_interleaved,
)

# What tests and other scripts reach through this module (speed.build, speed.GLOW, ...).
__all__ = [
    "FLOWS",
    "GLOW",
    "build",
    "log_prob_flops",
    "main",
    "make_ops",
    "memory_of",
    "n_params",
    "paired_ratio",
]


def memory_of(lib: str, flow: str, d: Dim, op: str, sizes: dict[str, int]) -> float:
    """Run :func:`memory_child` in a subprocess, so libraries do not share a heap."""
    spec = {"lib": lib, "flow": flow, "d": d, "op": op, "sizes": sizes, "glow": GLOW}
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> Results:
    """Run the benchmark described by ``args``."""
    torch.set_num_threads(args.threads)
    libs = [lib for lib in args.libs if lib == "flowforge" or available(lib)]
    for lib in args.libs:
        if lib not in libs:
            print(f"# {lib} is not installed: skipped", file=sys.stderr)
    sizes = {
        "train": args.train_batch,
        "log_prob": args.batch,
        "sample": args.sample_batch or args.batch,
    }
    image_sizes = {
        "train": args.glow_train_batch,
        "log_prob": args.glow_batch,
        "sample": args.glow_sample_batch or args.glow_batch,
    }
    GLOW.update(levels=args.glow_levels, steps=args.glow_steps, hidden=args.glow_hidden)
    cases: list[tuple[str, Dim]] = [(f, d) for d in args.dims for f in args.flows if f in FLOWS]
    cases += [(f, tuple(args.image)) for f in args.flows if f in IMAGE_FLOWS]
    cases += [(f, speed_cnf.CNF_DIM) for f in args.flows if f in CNF_FLOWS]
    res = Results()
    res.meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "libs": libs,
        "sizes": sizes,
    }
    if args.quick:
        res.meta["quick"] = True
        print(f"# {QUICK_NOTE}", file=sys.stderr)
    if any(f in IMAGE_FLOWS for f, _ in cases):
        res.meta["image_sizes"] = image_sizes
        res.meta["glow"] = dict(GLOW, image=list(args.image))
    for lib in libs:
        if lib != "flowforge":
            res.meta[lib] = getattr(__import__(lib), "__version__", "?")
    print(f"# threads={torch.get_num_threads()} torch={torch.__version__}", file=sys.stderr)
    vector_sizes = sizes
    for flow, d in cases:
        image = flow in IMAGE_FLOWS
        sizes = image_sizes if image else vector_sizes
        min_time = args.glow_min_time if image else args.min_time
        key = f"{flow}/{dim_label(d)}"
        built = {lib: build(lib, flow, d) for lib in libs}
        models = {k: v for k, v in built.items() if v is not None}
        res.params[key] = {lib: n_params(m.module) for lib, m in models.items()}
        all_ops: dict[str, Callable[[], Any]] = {}
        for lib, m in models.items():
            for op, fn in make_ops(m, d, sizes).items():
                if op not in args.ops or (op == "sample" and args.no_sample):
                    continue
                all_ops[f"{lib}|{op}"] = fn
        t0 = time.perf_counter()
        reps: dict[str, list[float]] = {}
        med = time_interleaved(all_ops, args.repeats, min_time, samples=reps)
        res.times[key] = {}
        res.samples[key] = {}
        for name, t in med.items():
            lib, op = name.split("|")
            res.times[key].setdefault(op, {})[lib] = t
            res.samples[key].setdefault(op, {})[lib] = reps[name]
        print(f"# {key}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        cnf = flow in CNF_FLOWS
        if cnf:
            res.notes[f"NFE {flow}"] = _nfe_note(models, all_ops)
        if args.flops and (image or cnf):
            res.notes[f"flops {flow}"] = "--flops counts linear layers: vector flows only"
        elif args.flops:
            assert isinstance(d, int)
            gflop = log_prob_flops(flow, d, args.batch) / 1e9
            peak = gflop / matmul_seconds(flow, d, args.batch, args.repeats)
            # A training step: the forward pass and, per layer, two backward matmuls
            # (input and weight gradients) of the same size.
            train_gflop = 3 * log_prob_flops(flow, d, args.train_batch) / 1e9
            train_peak = (
                log_prob_flops(flow, d, args.train_batch)
                / 1e9
                / matmul_seconds(flow, d, args.train_batch, args.repeats)
            )
            res.flops[key] = {
                "gflop": gflop,
                "peak": peak,
                "train_gflop": train_gflop,
                "train_peak": train_peak,
            }
        if args.compile and cnf:
            res.notes[f"compile {flow}"] = "not compiled: the adaptive solvers branch on values"
        elif args.compile:
            cops: dict[str, Callable[[], Any]] = {}
            for lib in models:
                cm = build(lib, flow, d)
                assert cm is not None
                for op, fn in make_ops(cm, d, sizes, compiled=True).items():
                    cops[f"{lib}|{op}"] = fn
            creps: dict[str, list[float]] = {}
            cmed = time_interleaved(cops, args.repeats, min_time, samples=creps)
            res.compiled[key] = {}
            res.samples["compiled/" + key] = {}
            for name, t in cmed.items():
                lib, op = name.split("|")
                res.compiled[key].setdefault(op, {})[lib] = t
                res.samples["compiled/" + key].setdefault(op, {})[lib] = creps[name]
            torch._dynamo.reset()
        if args.memory:
            res.memory[key] = {
                op: {lib: memory_of(lib, flow, d, op, sizes) for lib in models}
                for op in ("log_prob", "train")
            }
    for (lib, flow), why in NOT_AVAILABLE.items():
        res.notes[f"{lib} {flow}"] = why
    return res


def _nfe_note(models: dict[str, Model], ops: dict[str, Callable[[], Any]]) -> str:
    """The function evaluations of one call of each timed op, per library."""
    parts = []
    for name, fn in ops.items():
        lib, op = name.split("|")
        counter = models[lib].nfe
        if counter is not None:
            parts.append(f"{lib} {op} {speed_cnf.measure_nfe(fn, counter)}")
    return "function evaluations per call: " + ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--flows",
        nargs="+",
        default=[*FLOWS, *IMAGE_FLOWS, *CNF_FLOWS],
        choices=FLOWS + IMAGE_FLOWS + CNF_FLOWS,
    )
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions (median)")
    p.add_argument("--batch", type=int, default=8192, help="log_prob and sample batch")
    p.add_argument("--train-batch", type=int, default=512)
    p.add_argument("--sample-batch", type=int, default=None, help="default: --batch")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is the stable choice on a shared machine)",
    )
    p.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per timed measurement (at least)"
    )
    g = p.add_argument_group("Glow (the image flow; it ignores --dims and the batches above)")
    g.add_argument("--image", nargs=3, type=int, default=list(IMAGE), metavar=("C", "H", "W"))
    g.add_argument("--glow-levels", type=int, default=GLOW["levels"])
    g.add_argument("--glow-steps", type=int, default=GLOW["steps"], help="steps per level K")
    g.add_argument("--glow-hidden", type=int, default=GLOW["hidden"], help="conv net width")
    g.add_argument("--glow-train-batch", type=int, default=64)
    g.add_argument("--glow-batch", type=int, default=1024, help="log_prob and sample batch")
    g.add_argument("--glow-sample-batch", type=int, default=None, help="default: --glow-batch")
    g.add_argument(
        "--glow-min-time",
        type=float,
        default=1.0,
        help="seconds per timed Glow measurement (a Glow call lasts 10-300 ms)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run, not a comparison: D=8, small batches, 3 repeats (Glow: 0.2 s each)",
    )
    p.add_argument("--no-sample", action="store_true", help="skip sampling")
    p.add_argument("--ops", nargs="+", default=["train", "log_prob", "sample"])
    p.add_argument("--memory", action="store_true", help="peak memory, one process each")
    p.add_argument("--flops", action="store_true", help="GFLOP/s against matmul peak")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--markdown", metavar="OUT", help="also write the tables to a file")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.dims = [8]
        args.repeats = min(args.repeats, 3)
        args.batch = min(args.batch, 1024)
        args.train_batch = min(args.train_batch, 256)
        args.sample_batch = min(args.sample_batch or args.batch, 256)
        args.glow_batch = min(args.glow_batch, 256)
        args.glow_train_batch = min(args.glow_train_batch, 32)
        args.glow_min_time = min(args.glow_min_time, 0.2)
    return args


def main(argv: list[str] | None = None) -> Results | None:
    """Entry point."""
    args = parse_args(argv)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        GLOW.update(spec["glow"])
        d = spec["d"] if isinstance(spec["d"], int) else tuple(spec["d"])
        print(memory_child(spec["lib"], spec["flow"], d, spec["op"], spec["sizes"]))
        return None
    res = run(args)
    text = markdown(res)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.__dict__, f, indent=1)
    return res


if __name__ == "__main__":
    main()
