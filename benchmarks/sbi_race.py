"""Neural posterior estimation, flowforge against ``sbi``, on the sbibm tasks with references.

For each task (Gaussian linear 10-D, two moons, SLCP; :mod:`flowforge.sbi.tasks`) and each
simulation budget, ONE set of simulations (prior + simulator, seed = budget) trains every
method:

- ``ff_npe``: ``ff.sbi.NPE(prior).fit(theta, x, seed=0)`` with flowforge's defaults (NSF);
- ``sbi_npe``: ``sbi.inference.NPE(prior, density_estimator="nsf")``, ``.train()`` with
  sbi's defaults (batch 200, lr 5e-4, 10% validation, stop after 20 epochs without
  improvement); NSF as in sbibm's NPE and the issue's reference measurement (sbi 0.27's own
  default estimator is MAF: ``sbi_maf``);
- ``ff_fmpe``: ``ff.sbi.FMPE(prior).fit(theta, x, seed=0)``.

Methods of one task and budget are trained one after the other in this process (fit time is
wall-clock seconds of the fit call, one torch thread). Then, at each of the task's first
``--observations`` fixed observations, ``--c2st-samples`` posterior samples are compared with
as many reference samples by :func:`flowforge.eval.c2st.c2st` (sbibm's classifier, its Adam
epochs capped at ``--c2st-max-iter``; 0.5 is perfect). Reference samples are cached under ``--cache-dir``.

Every finished (task, budget, method) is appended to ``--jsonl`` and skipped when the command
runs again, so a long run can be stopped and resumed; the markdown table (``--out``) is
rewritten from all rows after each one.

Run (the numbers of benchmarks/results/sbi.md)::

    nice -n 10 python benchmarks/sbi_race.py --budgets 1000 --tasks two_moons gaussian_linear slcp
    nice -n 10 python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons gaussian_linear
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.distributions import Distribution, Independent, MultivariateNormal, Uniform

from flowforge.eval.c2st import c2st
from flowforge.sbi.tasks import TASKS, Task, get_task

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ff_npe", "sbi_npe", "ff_fmpe", "sbi_maf")

Sampler = Callable[[int, torch.Tensor], torch.Tensor]


def float32_prior(prior: Distribution) -> Distribution:
    """The task's float64 prior in float32 (what both libraries train in)."""
    if isinstance(prior, Independent) and isinstance(prior.base_dist, Uniform):
        low, high = prior.base_dist.low.float(), prior.base_dist.high.float()
        return Independent(Uniform(low, high, validate_args=False), 1)
    if isinstance(prior, MultivariateNormal):
        return MultivariateNormal(prior.loc.float(), prior.covariance_matrix.float())
    raise TypeError(f"no float32 version of {type(prior).__name__}")


def fit(
    method: str, prior: Distribution, theta: torch.Tensor, x: torch.Tensor, args: Any
) -> tuple[Sampler, float]:
    """Train ``method`` on the pairs; returns ``sample(n, x_o) -> (n, D)`` and fit seconds
    (wall clock)."""
    torch.manual_seed(0)
    if method in ("ff_npe", "ff_fmpe"):
        import flowforge as ff

        kwargs: dict[str, Any] = {"seed": 0}
        if args.ff_max_steps is not None:
            kwargs["max_steps"] = args.ff_max_steps
        estimator = ff.sbi.NPE(prior) if method == "ff_npe" else ff.sbi.FMPE(prior)
        start = time.perf_counter()
        posterior = estimator.fit(theta, x, **kwargs)
        seconds = time.perf_counter() - start

        def ff_sample(n: int, x_o: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return posterior.sample(n, x_o)

        return ff_sample, seconds
    from sbi.inference import NPE

    inference = NPE(
        prior=prior,
        density_estimator="maf" if method == "sbi_maf" else "nsf",
        show_progress_bars=False,
    )
    inference.append_simulations(theta, x)
    train: dict[str, Any] = {}
    if args.sbi_max_epochs is not None:
        train["max_num_epochs"] = args.sbi_max_epochs
    start = time.perf_counter()
    estimator = inference.train(**train)
    seconds = time.perf_counter() - start
    sbi_posterior = inference.build_posterior(estimator)

    def sbi_sample(n: int, x_o: torch.Tensor) -> torch.Tensor:
        return sbi_posterior.sample((n,), x=x_o, show_progress_bars=False)

    return sbi_sample, seconds


def outside_prior(task: Task, samples: torch.Tensor) -> int:
    """How many samples have zero prior density."""
    lp = task.prior.log_prob(samples.double())
    return int((~torch.isfinite(lp)).sum())


def run_one(task: Task, budget: int, method: str, args: Any) -> dict[str, Any]:
    theta, x = task.sample_joint(budget, seed=budget)  # the same pairs for every method
    prior = float32_prior(task.prior)
    load = os.getloadavg()[0]
    cpu = time.process_time()
    sample, fit_s = fit(method, prior, theta.float(), x.float(), args)
    fit_cpu_s = time.process_time() - cpu  # one thread: the CPU time the fit got
    scores, leaks, sample_s = [], 0, 0.0
    for i in range(args.observations):
        _, x_o = task.observation(i)
        reference = task.reference_posterior_samples(
            x_o, args.c2st_samples, seed=i, cache_dir=args.cache_dir
        )
        start = time.perf_counter()
        samples = sample(args.c2st_samples, x_o.float()).detach()
        sample_s += time.perf_counter() - start
        leaks += outside_prior(task, samples)
        scores.append(c2st(reference, samples, seed=0, max_iter=args.c2st_max_iter))
    return {
        "task": task.name,
        "budget": budget,
        "method": method,
        "fit_s": round(fit_s, 2),
        "fit_cpu_s": round(fit_cpu_s, 2),
        "sample_s": round(sample_s, 2),
        "c2st": [round(s, 4) for s in scores],
        "c2st_mean": round(sum(scores) / len(scores), 4),
        "outside_prior": leaks,
        "c2st_samples": args.c2st_samples,
        "c2st_max_iter": args.c2st_max_iter,
        "load_at_start": round(load, 2),
    }


def table(rows: list[dict[str, Any]], command: str) -> str:
    """The markdown report of every row, with fit-time ratios to ``sbi_npe``."""
    lines = [
        "# NPE on sbibm tasks: flowforge against sbi",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
        f"torch {torch.__version__}, one thread; C2ST with {rows[0]['c2st_samples'] if rows else '?'}"
        " posterior and as many reference samples per observation (sbibm: 10,000), the classifier's"
        f" Adam epochs capped at {rows[0]['c2st_max_iter'] if rows else '?'} (sbibm: 10,000; a"
        " 10-D C2ST at 10,000 epochs took 3 minutes here).",
        "",
        "Fit s is wall-clock; fit CPU s is the process time of the (one-thread) fit, the fairer"
        " measure on a machine whose load changes between runs; ratios use CPU time when both"
        " rows have it.",
        "",
        "| task | simulations | method | C2ST per observation | mean C2ST | fit s | fit CPU s | fit time / sbi's | samples outside prior | load at start |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    peer = {(r["task"], r["budget"]): r for r in rows if r["method"] == "sbi_npe"}
    for r in sorted(rows, key=lambda r: (r["task"], r["budget"], METHODS.index(r["method"]))):
        ref = peer.get((r["task"], r["budget"]))
        key = "fit_cpu_s" if ref and "fit_cpu_s" in r and "fit_cpu_s" in ref else "fit_s"
        ratio = f"{r[key] / ref[key]:.2f}" if ref else "-"
        per = ", ".join(f"{s:.3f}" for s in r["c2st"])
        cpu = f"{r['fit_cpu_s']:.1f}" if "fit_cpu_s" in r else "-"
        lines.append(
            f"| {r['task']} | {r['budget']} | {r['method']} | {per} | {r['c2st_mean']:.3f} | "
            f"{r['fit_s']:.1f} | {cpu} | {ratio} | {r['outside_prior']} | {r['load_at_start']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000])
    parser.add_argument("--methods", nargs="+", default=["ff_npe", "sbi_npe"], choices=METHODS)
    parser.add_argument("--observations", type=int, default=3)
    parser.add_argument("--c2st-samples", type=int, default=2000)
    parser.add_argument("--c2st-max-iter", type=int, default=500)
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache" / "sbi"))
    parser.add_argument("--jsonl", default=str(ROOT / "benchmarks" / "results" / "sbi.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sbi.md"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="rewrite --out from --jsonl")
    parser.add_argument("--ff-max-steps", type=int, default=None, help="smoke runs only")
    parser.add_argument("--sbi-max-epochs", type=int, default=None, help="smoke runs only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/sbi_race.py " + " ".join(sys.argv[1:] if argv is None else argv)
    jsonl = Path(args.jsonl)
    rows = (
        [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
        if jsonl.exists()
        else []
    )
    done = {(r["task"], r["budget"], r["method"]) for r in rows}
    if args.table_only:
        Path(args.out).write_text(table(rows, command))
        return rows
    for budget in args.budgets:
        for name in args.tasks:
            task = get_task(name)
            for method in args.methods:
                if (name, budget, method) in done:
                    continue
                row = run_one(task, budget, method, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                with jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                Path(args.out).write_text(table(rows, command))
    return rows


if __name__ == "__main__":
    main()
