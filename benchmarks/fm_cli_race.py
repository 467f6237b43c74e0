"""``flowforge train --objective flow-matching`` against torchcfm's 2-D recipe trained with the run's settings.

Runs the command line (a subprocess, one thread) on 8gaussians with ``--flow ffjord
--objective flow-matching`` and the given batch size, learning rate, steps, schedule, noise
``--fm-sigma``, validation interval and seed, reads the options the run actually used from its
``config.json`` (Adam, the schedule, gradient clipping, validation every ``eval_every`` steps
on ``n_val`` fresh rows, keeping the best validated weights), and trains torchcfm's
``MLP(dim=2, time_varying=True)`` with ``ConditionalFlowMatcher(sigma)`` under the same options
in this process (its validation: the exact NLL on the same number of fresh rows). Both are
scored by :func:`fm_race.test_nll`, one evaluator, on the same 5,000 fresh test rows as
``fm_race.py`` with that seed. Seconds: the CLI's whole process in CPU seconds (start-up,
validation and its final test included) and its own ``seconds`` (training and validation);
torchcfm's CPU seconds of training and validation, and of training alone. ``--ot`` pairs
by mini-batch OT in both (torchcfm: its exact-OT matcher); ``--flow-options`` passes the
CLI's flow options (e.g. ``'{"reverse_time": true}'``). The CLI's validation NLL at every
``--eval-every`` steps is printed too (its own 10,000 validation rows, not torchcfm's).

Run: ``python benchmarks/fm_cli_race.py --steps 1000 --lr 1e-3 --batch-size 256 --fm-sigma 0.1
--schedule constant --eval-every 1000 --seed 0`` (torchcfm's recipe; torchcfm is optional).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import flowforge as ff
from flowforge.data.toy import sample_toy
from flowforge.fit.schedule import LRSchedule

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnf_cli_race import cli_run
from fm_race import Velocity, test_nll


def torchcfm_like_cli(cfg: dict, seed: int) -> tuple[torch.nn.Module, list[dict]]:
    """torchcfm's 2-D recipe trained with the CLI run's options ``cfg``; its validation records."""
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )
    from torchcfm.models.models import MLP

    if cfg["ema_decay"] or cfg["warmup_steps"] or cfg["optimizer"] != "adam":
        raise SystemExit("this script mirrors Adam without EMA or warmup")
    torch.manual_seed(seed)
    net = MLP(dim=2, time_varying=True)
    pairs = ExactOptimalTransportConditionalFlowMatcher if cfg["ot"] else ConditionalFlowMatcher
    matcher = pairs(sigma=cfg["fm_sigma"])
    opt = torch.optim.Adam(net.parameters(), cfg["lr"], weight_decay=cfg["weight_decay"])
    steps = int(cfg["steps"])
    sched = LRSchedule(cfg["schedule"], cfg["lr"], steps, min_lr=cfg["min_lr"])
    g = torch.Generator().manual_seed(seed)
    val = sample_toy(
        "8gaussians", int(cfg["n_val"] or 10_000), torch.Generator().manual_seed(20_000 + seed)
    )
    best, best_state, cpu, train_cpu = math.inf, None, 0.0, 0.0
    records: list[dict] = []
    for i in range(steps):
        x1 = sample_toy("8gaussians", cfg["batch_size"], g)
        start = time.process_time()
        for group in opt.param_groups:
            group["lr"] = sched.lr_at(i)
        opt.zero_grad()
        t, xt, ut = matcher.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
        torch.mean((net(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2).backward()
        if cfg["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["clip_grad"])
        opt.step()
        cpu += time.process_time() - start
        train_cpu += time.process_time() - start
        if (i + 1) % cfg["eval_every"] == 0 or i + 1 == steps:
            start = time.process_time()
            rec = {"step": i + 1, "val_nll": test_nll(velocity(net), val)}
            if rec["val_nll"] < best:
                best, best_state = rec["val_nll"], copy.deepcopy(net.state_dict())
            cpu += time.process_time() - start
            rec["cpu"], rec["train_cpu"] = cpu, train_cpu
            records.append(rec)
            print("torchcfm", rec, flush=True)
    if cfg["restore_best"] and best_state is not None:
        net.load_state_dict(best_state)
    return net, records


def velocity(net: torch.nn.Module) -> Velocity:
    """torchcfm's field in the evaluator's time (data at 0): ``u(s, x) = -v(x, 1 - s)``."""
    return lambda s, x: -net(torch.cat([x, (1 - s)[:, None].to(x)], dim=-1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--fm-sigma", type=float, default=0.1)
    p.add_argument("--schedule", default="constant")
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ot", action="store_true", help="OT pairs (torchcfm: its exact-OT matcher)")
    p.add_argument("--flow-options", default="", help="the CLI's --flow-options (JSON)")
    p.add_argument("--test", type=int, default=5000, help="fresh test rows for both")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    extra = ["--objective", "flow-matching", "--fm-sigma", str(args.fm_sigma)]
    extra += ["--schedule", args.schedule, "--eval-every", str(args.eval_every)]
    extra += ["--ot"] * args.ot + ["--flow-options", args.flow_options] * bool(args.flow_options)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        _, cli_cpu = cli_run(args, out, extra)
        cfg = json.loads((out / "config.json").read_text())["config"]
        cli_results = json.loads((out / "results.json").read_text())
        for line in (out / "metrics.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("val_nll") is not None:  # the run's weights at that step, before the best
                print(f"CLI step {rec['step']} val_nll {rec['val_nll']:.4f}", flush=True)
        flow = ff.runs.load(out)
        cnf = flow.bijection.bijections[-1]  # type: ignore[union-attr,index]
        net, records = torchcfm_like_cli(cfg, args.seed)
    test = sample_toy("8gaussians", args.test, torch.Generator().manual_seed(10_000 + args.seed))
    ours = test_nll(lambda s, x: cnf.velocity(s, x), test)
    theirs = test_nll(velocity(net), test)
    net_ = cnf.net
    print(
        f"CLI dynamics: {type(net_).__name__}, {getattr(net_, 'activation', '?')}, "
        f"reverse_time {getattr(net_, 'reverse_time', '?')}"
    )
    print(
        f"FINAL CLI test NLL {ours:.4f} (its own {cli_results['test']['n']} rows: "
        f"{cli_results['test']['nll']:.4f}), seconds {cli_results['seconds']:.1f}, CPU "
        f"{cli_cpu:.1f} (whole process); torchcfm test NLL {theirs:.4f}, CPU "
        f"{records[-1]['cpu']:.1f} (training and validation; training only "
        f"{records[-1]['train_cpu']:.1f})"
    )


if __name__ == "__main__":
    main()
