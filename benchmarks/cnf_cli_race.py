"""``flowforge train --flow ffjord`` against zuko's CNF trained with the CLI's own settings.

Runs the command line (a subprocess, one thread) on 8gaussians with the given batch size,
learning rate, steps and seed, then reads the options the run actually used from its
``config.json`` (Adam, the schedule, gradient clipping, validation every ``eval_every`` steps
on ``n_val`` fresh rows (10,000 by default for toy data), keeping the best validated weights) and trains
``zuko.flows.CNF(2, hidden_features=(64, 64, 64))`` with the same options in this process.
Both end with their best validated weights and are scored on the same 5000 fresh test rows
(exact trace); the CLI's own test NLL (its ``n_test`` rows) is printed too. Seconds are the
CLI's definition (``metrics.jsonl``: training and validation); zuko's training-only seconds
are printed beside them.

Run: ``python benchmarks/cnf_cli_race.py --steps 100 --lr 1e-3 --batch-size 512 --seed 0``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import flowforge as ff
from flowforge.data.toy import sample_toy
from flowforge.fit.schedule import LRSchedule

HIDDEN = (64, 64, 64)


def cli_run(args: argparse.Namespace, out: Path, extra: Sequence[str] = ()) -> tuple[float, float]:
    """Train with the command line into ``out`` (``extra``: more of its flags); the
    subprocess's wall and CPU seconds.

    CPU seconds (user + system, ``resource.getrusage`` of the children) include the
    interpreter's start and imports and the final test, which the CLI's own seconds do not.
    """
    cmd = [sys.executable, "-m", "flowforge", "train", "--data", "8gaussians", "--flow", "ffjord"]
    cmd += ["--batch-size", str(args.batch_size), "--lr", str(args.lr), "--steps", str(args.steps)]
    cmd += ["--seed", str(args.seed), "--threads", "1", "--quiet", "--no-plots", "--out", str(out)]
    cmd += list(extra)
    print("$ python", " ".join(cmd[1:]), flush=True)
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - start, cpu


def zuko_like_cli(cfg: dict, seed: int) -> tuple[torch.nn.Module, list[dict]]:
    """zuko's CNF trained with the CLI run's options ``cfg``; its validation records."""
    import zuko

    if cfg["ema_decay"] or cfg["warmup_steps"] or cfg["optimizer"] != "adam":
        raise SystemExit("this script mirrors Adam without EMA or warmup (the CLI's defaults)")
    torch.manual_seed(seed)
    z = zuko.flows.CNF(2, hidden_features=HIDDEN)
    opt = torch.optim.Adam(z.parameters(), cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = int(cfg["steps"])
    sched = LRSchedule(cfg["schedule"], cfg["lr"], steps, min_lr=cfg["min_lr"])
    g = torch.Generator().manual_seed(seed)
    val = sample_toy(
        "8gaussians", int(cfg["n_val"] or 10_000), torch.Generator().manual_seed(20_000 + seed)
    )
    best, best_state, clock, train_clock, cpu = math.inf, None, 0.0, 0.0, 0.0
    records: list[dict] = []
    for i in range(steps):
        x = sample_toy("8gaussians", cfg["batch_size"], g)
        start, start_cpu = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = sched.lr_at(i)
        opt.zero_grad()
        (-z().log_prob(x).mean()).backward()
        if cfg["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(z.parameters(), cfg["clip_grad"])
        opt.step()
        train_clock += time.perf_counter() - start
        clock += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        if (i + 1) % cfg["eval_every"] == 0 or i + 1 == steps:
            # seconds as the CLI's metrics count them: training and the earlier validations
            rec = {"step": i + 1, "seconds": clock, "train_seconds": train_clock}
            start, start_cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                rec["val_nll"] = -z().log_prob(val).mean().item()
            if rec["val_nll"] < best:
                best, best_state = rec["val_nll"], copy.deepcopy(z.state_dict())
            clock += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            rec["cpu"] = cpu
            records.append(rec)
            print("zuko", rec, flush=True)
    records[-1]["end_seconds"] = clock  # with the last validation, as the CLI's results.json
    if cfg["restore_best"] and best_state is not None:
        z.load_state_dict(best_state)
    return z, records


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="the CLI's run directory (default: a temporary one)")
    p.add_argument("--test", type=int, default=5000, help="fresh test rows for both")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "run")
        wall, cli_cpu = cli_run(args, out)
        cfg = json.loads((out / "config.json").read_text())["config"]
        cli_results = json.loads((out / "results.json").read_text())
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        flow = ff.runs.load(out)
        z, records = zuko_like_cli(cfg, args.seed)
        test = sample_toy(
            "8gaussians", args.test, torch.Generator().manual_seed(10_000 + args.seed)
        )
        with torch.no_grad():
            ours = -flow.log_prob(test).mean().item()
            theirs = -z().log_prob(test).mean().item()
    keys = ("schedule", "min_lr", "clip_grad", "eval_every", "n_val", "restore_best", "ema_decay")
    print("CLI settings:", {k: cfg[k] for k in keys})
    print("| step | CLI val NLL | CLI seconds | zuko val NLL | zuko seconds (training only) |")
    print("|---|---|---|---|---|")
    for m, r in zip((m for m in metrics if "val_nll" in m), records, strict=False):
        print(
            f"| {m['step']} | {m['val_nll']:.4f} | {m['seconds']:.1f} | {r['val_nll']:.4f} | "
            f"{r['seconds']:.1f} ({r['train_seconds']:.1f}) |"
        )
    print(
        f"FINAL CLI test NLL {ours:.4f} (its own {cli_results['test']['n']} rows: "
        f"{cli_results['test']['nll']:.4f}), seconds {cli_results['seconds']:.1f}, "
        f"wall {wall:.1f}, CPU {cli_cpu:.1f} (whole process); zuko test NLL {theirs:.4f}, "
        f"seconds {records[-1]['end_seconds']:.1f}, CPU {records[-1]['cpu']:.1f} (training "
        "and validation)"
    )


if __name__ == "__main__":
    main()
