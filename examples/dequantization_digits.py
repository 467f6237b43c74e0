"""Uniform against variational dequantization on scikit-learn's 8x8 digits, over seeds.

Each seed trains the command line's default digits Glow (``flowforge train --data digits
--flow glow``: 2 levels of 4 steps, 64 channels, 150 epochs, warmup, weight average, the best
validation weights kept) twice, on the same split, from the same initialisation and for the
same number of steps: once on uniformly dequantized digits, once jointly with a learned noise
flow ``q(e | v)`` (``--dequantization variational``; Flow++'s variational dequantization).
Both are then scored with ``flowforge eval --samples S``: the test bits/dim of the
dequantization bound and of its importance-sampled estimate (``S`` noises per image), two
standard errors over the test images each. Lower is better; a uniform model scores
``log2(17) = 4.09``. The last lines give the paired difference (variational minus uniform) per
seed and its mean, and the variational runs' extra training time.

The two runs of a seed train at the same time (``--jobs 2``), so they share the machine's load
and their times compare. The split, the initialisation and the batches follow the seed.

Run: ``python examples/dequantization_digits.py`` (3 seeds; about 10 minutes on 2 CPU cores).
``--options`` sets the noise flow (``--dequantizer-options`` of ``flowforge train``).

References:
    Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative Models
    with Variational Dequantization and Architecture Design. arXiv:1902.00275.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

METHODS = ("uniform", "variational")


def flowforge(*args: str) -> str:
    """Run ``flowforge ARGS`` in a fresh interpreter with one thread; returns its stdout."""
    cmd = [sys.executable, "-m", "flowforge", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def one_run(out: Path, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run and evaluate it; returns eval's JSON plus the training record."""
    run = out / f"{method}-{seed}"
    train = ["train", "--data", "digits", "--flow", "glow", "--seed", str(seed), "--threads", "1"]
    train += ["--out", str(run), "--no-plots", "--quiet", *args.train_args]
    if method == "variational":
        train += ["--dequantization", "variational"]
        if args.options:
            train += ["--dequantizer-options", args.options]
    flowforge(*train)
    result = json.loads(flowforge("eval", str(run), "--json", "--samples", str(args.samples)))
    record = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    result.update(seconds=record["seconds"], steps=record["steps"], deq=config.get("dequantizer"))
    return result


def parameter_counts(options: dict[str, Any]) -> tuple[int, int]:
    """Parameters of the default digits Glow and of the noise flow ``options`` build."""
    import flowforge as ff
    from flowforge.data import VariationalDequantizer
    from flowforge.train.model import DEQUANTIZER_SIZE, PRESET_SIZES

    glow = ff.flows.Glow(shape=(1, 8, 8), **PRESET_SIZES["glow"])
    opts = {**DEQUANTIZER_SIZE, **options}
    deq = VariationalDequantizer(
        (1, 8, 8), 17, noise=opts["noise"], transforms=opts["transforms"], hidden=opts["hidden"]
    )
    return sum(p.numel() for p in glow.parameters()), sum(p.numel() for p in deq.parameters())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--samples", type=int, default=32, help="importance samples per image")
    parser.add_argument("--options", default="", help="--dequantizer-options (JSON)")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at the same time")
    parser.add_argument("--out", default="", help="folder of the runs (default: a temporary one)")
    parser.add_argument("train_args", nargs="*", help="extra flowforge train arguments (after --)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="dequantization-"))
    jobs = [(m, s) for s in seeds for m in METHODS]  # a seed's two runs side by side
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda j: one_run(out, j[0], j[1], args), jobs))
    by = {job: r for job, r in zip(jobs, results, strict=True)}
    n_flow, n_deq = parameter_counts(json.loads(args.options) if args.options else {})

    print(f"runs in {out}; flow {n_flow} parameters, noise flow {n_deq}")
    print(f"noise flow: {by[('variational', seeds[0])]['deq']}")
    print(f"test bits/dim, {args.samples} importance samples, 2 standard errors over images\n")
    head = "| seed | method | steps | train s | bound bpd | IS bpd |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for s in seeds:
        for m in METHODS:
            r = by[(m, s)]
            print(
                f"| {s} | {m} | {r['steps']} | {r['seconds']:.0f} | "
                f"{r['bound_bpd']:.3f} ± {r['bound_bpd_err']:.3f} | "
                f"{r['importance_bpd']:.3f} ± {r['importance_bpd_err']:.3f} |"
            )
    print()
    for key in ("bound_bpd", "importance_bpd"):
        gaps = [by[("variational", s)][key] - by[("uniform", s)][key] for s in seeds]
        sd = statistics.stdev(gaps) if len(gaps) > 1 else math.nan
        wins = sum(g < 0 for g in gaps)
        print(
            f"{key}: variational - uniform per seed {', '.join(f'{g:+.3f}' for g in gaps)}; "
            f"mean {statistics.mean(gaps):+.3f} (sd {sd:.3f}); variational lower in "
            f"{wins}/{len(gaps)}"
        )
    cost = [by[("variational", s)]["seconds"] / by[("uniform", s)]["seconds"] for s in seeds]
    print(f"training time variational / uniform: {', '.join(f'{c:.2f}' for c in cost)}")


if __name__ == "__main__":
    main()
