"""Neural posterior estimation, flowforge against ``sbi``, on the sbibm tasks with references.

For each task (Gaussian linear 10-D, two moons, SLCP; :mod:`flowforge.sbi.tasks`) and each
simulation budget, ONE set of simulations (prior + simulator, seed = budget) trains every
method:

- ``ff_npe``: ``ff.sbi.NPE(prior).fit(theta, x, seed=0)`` with flowforge's defaults (NSF);
- ``sbi_npe``: ``sbi.inference.NPE(prior, density_estimator="nsf")``, ``.train()`` with
  sbi's defaults (batch 200, lr 5e-4, 10% validation, stop after 20 epochs without
  improvement); NSF as in sbibm's NPE and the issue's reference measurement (sbi 0.27's own
  default estimator is MAF: ``sbi_maf``);
- ``ff_fmpe``: ``ff.sbi.FMPE(prior).fit(theta, x, seed=0)``;
- ``sbi_fmpe``: ``sbi.inference.FMPE(prior).train()`` with sbi's defaults.

Each piece of a (task, budget, method) run is timed in CPU seconds of this process
(``time.process_time``; torch, OpenMP and BLAS run one thread, so on a shared machine this is
the work done, whatever share of a core the process got) and in wall seconds, and each is
bounded in CPU seconds (``--fit-cpu-limit``, ``--sample-cpu-limit``, ``--c2st-cpu-limit``; a
``SIGPROF`` interval timer): a piece over its bound ends the row with ``status`` naming it
instead of hanging the run. The pieces:

- ``fit``: the library's training call;
- ``sample``: ``--c2st-samples`` posterior samples at each observation (``sbi`` rejects
  samples outside a box prior and loops until it has enough: its ``leak`` column is the
  share of its flow's raw samples outside the box, drawn without rejection);
- ``c2st``: :func:`flowforge.eval.c2st.c2st` against as many reference samples (sbibm's
  classifier, its Adam epochs capped at ``--c2st-max-iter``; 0.5 is perfect). Reference
  samples are cached under ``--cache-dir``.

Every finished (task, budget, method, seed) is appended to ``--jsonl`` and skipped when the command
runs again, so a long run can be stopped and resumed, and several processes can share one
file (one per core); the markdown table (``--out``) is rewritten from the file's rows after
each one.

Run (the numbers of benchmarks/results/sbi.md): see :data:`COMMANDS`.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"  # before torch / numpy load their thread pools

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from torch.distributions import Distribution, Independent, MultivariateNormal, Uniform  # noqa: E402

from flowforge.eval.c2st import c2st  # noqa: E402
from flowforge.sbi.tasks import TASKS, Task, get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("ff_npe", "sbi_npe", "ff_fmpe", "sbi_fmpe", "sbi_maf")
PEER = {"ff_npe": "sbi_npe", "ff_fmpe": "sbi_fmpe"}
#: The runs of benchmarks/results/sbi.md: one process each, niced, sharing the JSONL file.
COMMANDS = (
    "python benchmarks/sbi_race.py --budgets 1000 --methods sbi_npe --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 1000 --methods ff_npe --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 1000 --methods ff_fmpe --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 1000 --methods sbi_fmpe --c2st-max-iter 100"
    " --fit-cpu-limit 300",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods sbi_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100 --ff-patience 20 --jsonl benchmarks/results/sbi_patience20.jsonl"
    " --out /tmp/p20.md",
    "python benchmarks/sbi_race.py --budgets 1000 --methods ff_npe --c2st-max-iter 100"
    " --ff-plateau-patience 4 --jsonl benchmarks/results/sbi_plateau.jsonl --out /tmp/pl.md",
    "python benchmarks/sbi_race.py --budgets 1000 --tasks two_moons gaussian_linear"
    " --methods ff_npe --c2st-max-iter 100 --ff-plateau-patience 1"
    " --jsonl benchmarks/results/sbi_plateau1.jsonl --out /tmp/pl1.md",
    "# the same two with --budgets 10000 --tasks two_moons",
    "# NPE's budget-dependent schedule (150-epoch cosine, patience train // 300 over 3,000"
    " pairs): earlier ff_npe rows in sbi_fixed_horizon.jsonl and sbi_horizon2000.jsonl",
    "python benchmarks/sbi_race.py --budgets 1000 --methods ff_npe --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear --methods ff_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks slcp --methods ff_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear slcp"
    " --methods sbi_npe --c2st-max-iter 100 --fit-cpu-limit 600",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100 --ff-lr 2e-3 --jsonl benchmarks/results/sbi_lr2e-3.jsonl"
    " --out /tmp/lr.md",
    "# Stop 32: SLCP 10k for sbi; Gaussian linear 10k screens (rows in sbi_gl_screens.jsonl)",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks slcp --methods sbi_npe"
    " --c2st-max-iter 100 --c2st-draws 3 --fit-cpu-limit 1500",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear --methods ff_npe"
    " --c2st-max-iter 100 --c2st-draws 3 --ff-flow maf --jsonl /tmp/gl_maf.jsonl",
    "# the same with --ff-flow maf --ff-lr 5e-4 --ff-patience 10 and --ff-flow nsf"
    " --ff-lr 5e-4 --ff-patience 10",
    "# Stop 33: NSF screened against MAF over 3,000 pairs (the default); the replaced Stop 32"
    " rows in sbi_stop32_rows.jsonl, other seeds (--ff-seed, --sbi-seed) in sbi_seeds.jsonl",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear --methods ff_npe"
    " --c2st-max-iter 100 --c2st-draws 3",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons slcp --methods ff_npe"
    " --c2st-max-iter 100",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear --methods sbi_npe"
    " --c2st-max-iter 100 --c2st-draws 3",
    "# SLCP 1k with 3 transforms: --ff-flow-options '{\"transforms\": 3}' --ff-seed 0/1/2"
    " (sbi_slcp1k_t3.jsonl)",
    "# Stop 34: MAF with the linear shift (sbi_shift.jsonl, --ff-seed 0/1/2, one process each);"
    " the replaced Stop 33 row in sbi_stop33_rows.jsonl",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks gaussian_linear --methods ff_npe"
    " --c2st-max-iter 100 --c2st-draws 3 --ff-seed 0 --jsonl benchmarks/results/sbi_shift.jsonl",
    "# two moons 10k side by side (two processes started together), 10 observations:"
    " sbi_side_by_side.jsonl",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods sbi_npe"
    " --c2st-max-iter 100 --observations 10 --jsonl benchmarks/results/sbi_side_by_side.jsonl",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100 --observations 10 --ff-seed 2"
    " --jsonl benchmarks/results/sbi_side_by_side.jsonl",
    "# ten observations (sbi_10obs.jsonl): --observations 10 --ff-seed 0 / 1 on two moons,"
    " and --tasks gaussian_linear --methods sbi_npe / ff_npe (started together)",
    "# cuts (sbi_tm10k_cuts.jsonl): --ff-batch-size 300 / 400, --ff-epochs 100",
    "# the default batch 200 * train / 4,500 in [200, 400] (sbi_batch_rule.jsonl: one --jsonl"
    " file per run, then concatenated); two moons --ff-seed 0 beside sbi_npe (started"
    " together), then --ff-seed 1 / 2, --tasks gaussian_linear (--ff-seed 0), --tasks slcp (--ff-seed 0 beside"
    " sbi_npe, then --ff-batch-size 200)",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100 --observations 10 --ff-seed 0 --jsonl /tmp/tm_ff0.jsonl",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks two_moons --methods sbi_npe"
    " --c2st-max-iter 100 --observations 10 --jsonl /tmp/tm_sbi0.jsonl",
    "# Stop 35: two moons 1k screens, ten observations, --ff-seed 0 / 1, one --jsonl per"
    " setting (concatenated, each row's `screen` naming it, in sbi_tm1k_screens.jsonl), e.g.",
    "python benchmarks/sbi_race.py --budgets 1000 --tasks two_moons --methods ff_npe"
    " --c2st-max-iter 100 --observations 10 --heldout 5000 --ff-seed 0"
    " --ff-attr small_budget_average=0.99 --ff-patience 10 --ff-lr 2e-3 --jsonl /tmp/s.jsonl",
    "# the new small-budget default (moving average, lr 2e-3, at most 150 epochs), seeds 0-2"
    " on all three tasks, sbi's seeds beside (sbi_1k_average.jsonl, one process per method)",
    "python benchmarks/sbi_race.py --budgets 1000 --tasks two_moons gaussian_linear slcp"
    " --methods ff_npe --c2st-max-iter 100 --observations 10 --heldout 5000 --ff-seed 0"
    " --jsonl benchmarks/results/sbi_1k_average.jsonl",
    "python benchmarks/sbi_race.py --budgets 1000 --tasks two_moons gaussian_linear slcp"
    " --methods sbi_npe --c2st-max-iter 100 --observations 10 --sbi-seed 1"
    " --jsonl benchmarks/results/sbi_1k_average.jsonl",
    "# Stop 35, second pass: 10,000 simulations, seeds 1-2 of each side (one --jsonl per run,"
    " concatenated in sbi_10k_seeds.jsonl; TASK slcp / gaussian_linear / two_moons, S 1 / 2)",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks TASK --methods ff_npe"
    " --c2st-max-iter 100 --observations 10 --ff-seed S --jsonl /tmp/ff.jsonl --out /tmp/ff.md",
    "python benchmarks/sbi_race.py --budgets 10000 --tasks TASK --methods sbi_npe"
    " --c2st-max-iter 100 --observations 10 --sbi-seed S --jsonl /tmp/sbi.jsonl --out /tmp/s.md",
    "python benchmarks/sbi_race.py --table-only",
)

Sampler = Callable[[int, torch.Tensor], torch.Tensor]


class OverBudget(Exception):
    """A piece of a run used more CPU seconds than its bound."""


@contextlib.contextmanager
def timed(times: dict[str, float], piece: str, cpu_limit: float | None) -> Iterator[None]:
    """Add the block's CPU and wall seconds to ``times[piece + "_cpu_s"]`` and
    ``times[piece + "_s"]``; raise :class:`OverBudget` once the block has used ``cpu_limit``
    CPU seconds (``None``: no bound)."""

    def expire(signum: int, frame: Any) -> None:
        raise OverBudget(f"{piece} over {cpu_limit:g} CPU s")

    bounded = cpu_limit is not None and hasattr(signal, "setitimer")
    if bounded:
        previous = signal.signal(signal.SIGPROF, expire)
        signal.setitimer(signal.ITIMER_PROF, float(cpu_limit))  # type: ignore[arg-type]
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield
    finally:
        if bounded:
            signal.setitimer(signal.ITIMER_PROF, 0.0)
            signal.signal(signal.SIGPROF, previous)
        times[f"{piece}_cpu_s"] = times.get(f"{piece}_cpu_s", 0.0) + time.process_time() - cpu
        times[f"{piece}_s"] = times.get(f"{piece}_s", 0.0) + time.perf_counter() - wall


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
) -> tuple[Sampler, dict[str, Any]]:
    """Train ``method`` on the pairs; returns ``sample(n, x_o) -> (n, D)`` and what the
    training reports (steps or epochs, the best one)."""
    torch.manual_seed(0 if method in ("ff_npe", "ff_fmpe") else args.sbi_seed)
    if method in ("ff_npe", "ff_fmpe"):
        import flowforge as ff

        kwargs: dict[str, Any] = {"seed": args.ff_seed}
        if args.ff_max_steps is not None:
            kwargs["max_steps"] = args.ff_max_steps
        if args.ff_patience is not None:
            kwargs["patience"] = args.ff_patience
        if args.ff_lr is not None:
            kwargs["lr"] = args.ff_lr
        if args.ff_batch_size is not None:
            kwargs["batch_size"] = args.ff_batch_size
        if args.ff_validation_fraction is not None:
            kwargs["validation_fraction"] = args.ff_validation_fraction
        options = json.loads(args.ff_flow_options) if args.ff_flow_options else None
        estimator = (
            ff.sbi.NPE(prior, flow=args.ff_flow, flow_options=options, z_score=args.ff_z_score)
            if method == "ff_npe"
            else ff.sbi.FMPE(prior, flow_options=options)
        )
        if args.ff_plateau_patience is not None:
            estimator.plateau_patience = args.ff_plateau_patience
        if args.ff_epochs is not None:
            estimator.default_epochs = args.ff_epochs
        for setting in args.ff_attr:  # screens of class defaults: NAME=JSON
            name, value = setting.split("=", 1)
            setattr(estimator, name, json.loads(value))
        posterior = estimator.fit(theta, x, **kwargs)

        def ff_sample(n: int, x_o: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return posterior.sample(n, x_o)

        info = {
            "steps": posterior.info["steps"],
            "best_step": posterior.info["best_step"],
            "seed": args.ff_seed,
            "flow": posterior.spec["flow"],
            "candidates": posterior.info.get("candidates"),
            "lr": args.ff_lr,
            "patience": args.ff_patience,
            "epochs_default": args.ff_epochs,
            "batch_size": posterior.info["batch_size"],
            "validation_fraction": args.ff_validation_fraction,
            "z_score": args.ff_z_score,
            "attrs": args.ff_attr or None,
        }
        if args.heldout:  # a proper score beside C2ST: -log q(theta | x) on fresh pairs
            theta_h, x_h = args.heldout_pairs
            with torch.no_grad():
                info["heldout_nll"] = round(
                    -float(posterior.log_prob(theta_h.float()[None], x_h.float()).mean()), 4
                )
        return ff_sample, info
    from sbi.inference import FMPE, NPE

    if method == "sbi_fmpe":
        inference: Any = FMPE(prior=prior, show_progress_bars=False)
    else:
        inference = NPE(
            prior=prior,
            density_estimator="maf" if method == "sbi_maf" else "nsf",
            show_progress_bars=False,
        )
    inference.append_simulations(theta, x)
    train: dict[str, Any] = {}
    if args.sbi_max_epochs is not None:
        train["max_num_epochs"] = args.sbi_max_epochs
    estimator = inference.train(**train)
    sbi_posterior = inference.build_posterior(estimator)
    losses = list(inference._summary["validation_loss"])
    info = {
        "epochs": int(inference._summary["epochs_trained"][-1]),
        "best_epoch": 1 + min(range(len(losses)), key=losses.__getitem__) if losses else 0,
        "seed": args.sbi_seed,
    }

    def sbi_sample(n: int, x_o: torch.Tensor) -> torch.Tensor:
        return sbi_posterior.sample((n,), x=x_o, show_progress_bars=False)

    def sbi_raw(n: int, x_o: torch.Tensor) -> torch.Tensor:  # no rejection: leakage
        return sbi_posterior.sample(
            (n,), x=x_o, show_progress_bars=False, reject_outside_prior=False
        )

    sbi_sample.raw = sbi_raw  # type: ignore[attr-defined]
    return sbi_sample, info


def outside_prior(task: Task, samples: torch.Tensor) -> int:
    """How many samples have zero prior density."""
    lp = task.prior.log_prob(samples.double())
    return int((~torch.isfinite(lp)).sum())


def run_one(task: Task, budget: int, method: str, args: Any) -> dict[str, Any]:
    """Fit, sample and score one method; every piece timed and bounded (see the module)."""
    theta, x = task.sample_joint(budget, seed=budget)  # the same pairs for every method
    prior = float32_prior(task.prior)
    times: dict[str, float] = {}
    row: dict[str, Any] = {
        "task": task.name,
        "budget": budget,
        "method": method,
        "status": "ok",
        "c2st": [],
        "outside_prior": 0,
        "leak": [],
        "c2st_samples": args.c2st_samples,
        "c2st_max_iter": args.c2st_max_iter,
        "c2st_draws": [],
        "load_at_start": round(os.getloadavg()[0], 2),
    }
    if getattr(args, "heldout", 0):
        args.heldout_pairs = task.sample_joint(args.heldout, seed=10**6 + budget)
    try:
        with timed(times, "fit", args.fit_cpu_limit):
            sample, info = fit(method, prior, theta.float(), x.float(), args)
        row.update(info)
        for i in range(args.observations):
            _, x_o = task.observation(i)
            with timed(times, "sample", args.sample_cpu_limit):
                raw = getattr(sample, "raw", None)
                if raw is not None:
                    draw = raw(args.c2st_samples, x_o.float()).detach()
                    row["leak"].append(round(outside_prior(task, draw) / len(draw), 4))
            draws: list[float] = []
            for d in range(args.c2st_draws):  # draw 0: the single draw of earlier rows
                reference = task.reference_posterior_samples(
                    x_o, args.c2st_samples, seed=i + 1000 * d, cache_dir=args.cache_dir
                )
                with timed(times, "sample", args.sample_cpu_limit):
                    samples = sample(args.c2st_samples, x_o.float()).detach()
                row["outside_prior"] += outside_prior(task, samples)
                with timed(times, "c2st", args.c2st_cpu_limit):
                    draws.append(
                        round(c2st(reference, samples, seed=d, max_iter=args.c2st_max_iter), 4)
                    )
            row["c2st_draws"].append(draws)
            row["c2st"].append(round(sum(draws) / len(draws), 4))
    except OverBudget as over:
        row["status"] = str(over)
    scores = row["c2st"]
    row["c2st_mean"] = round(sum(scores) / len(scores), 4) if scores else None
    # four decimals: a tiny smoke run's sampling takes a few milliseconds on a quiet machine
    row.update({k: round(v, 4) for k, v in times.items()})
    return row


def read_rows(jsonl: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (none when it does not exist)."""
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


def _num(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.1f}" if row.get(key) is not None else "-"


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """Side by side: each flowforge estimator against its sbi peer, mean C2ST and fit CPU s."""
    by_key = {(r["task"], r["budget"], r["method"]): r for r in rows}
    lines = [
        "| task | simulations | estimator | flowforge C2ST | sbi C2ST | flowforge fit CPU s"
        " | sbi fit CPU s | CPU ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ours_of = {peer: ours for ours, peer in PEER.items()}
    keys = {(t, b, m if m in PEER else ours_of[m]) for t, b, m in by_key if m != "sbi_maf"}
    for task, budget, method in sorted(keys):
        ours, peer = by_key.get((task, budget, method)), by_key.get((task, budget, PEER[method]))

        def c(r: dict[str, Any] | None) -> str:
            return f"{r['c2st_mean']:.3f}" if r and r.get("c2st_mean") is not None else "-"

        ratio = "-"
        if ours and peer and ours.get("fit_cpu_s") and peer.get("fit_cpu_s"):
            ratio = f"{ours['fit_cpu_s'] / peer['fit_cpu_s']:.2f}"
        lines.append(
            f"| {task} | {budget} | {method[3:].upper()} | {c(ours)} | {c(peer)} "
            f"| {_num(ours or {}, 'fit_cpu_s')} | {_num(peer or {}, 'fit_cpu_s')} | {ratio} |"
        )
    return lines


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown report of every row, with CPU-time ratios to the ``sbi`` peer."""
    first = rows[0] if rows else {}
    lines = [
        "# NPE and FMPE on sbibm tasks: flowforge against sbi",
        "",
        "Commands (each a separate process under `nice -n 10`, all appending to"
        " `benchmarks/results/sbi.jsonl`; this file is rewritten from it):",
        "",
        "```bash",
        *COMMANDS,
        "```",
        "",
        *summary(rows),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores shared with other jobs; "
        f"torch {torch.__version__}, one thread per process; C2ST with "
        f"{first.get('c2st_samples', '?')} posterior and as many reference samples per"
        " observation (sbibm: 10,000), the classifier's Adam epochs capped at"
        f" {first.get('c2st_max_iter', '?')} (sbibm: 10,000).",
        "",
        "CPU s is the process time of a piece (one thread): the work done, whatever share of a"
        " core the process got (a loaded machine still inflates it a little through shared"
        " caches); wall s depends on the load. `fit CPU / peer` divides by the sbi row of"
        " the same task, budget and estimator family (NPE or FMPE). `leak` is the share of the"
        " sbi flow's raw samples outside the box prior, which its rejection sampler throws away"
        " (flowforge's posteriors cannot leave the box).",
        "",
        "All rows:",
        "",
        "| task | simulations | method | status | C2ST per observation | mean C2ST | fit CPU s"
        " | fit wall s | fit CPU / peer | epochs or steps (best) | sample CPU s | C2ST CPU s"
        " | outside prior | leak | load at start |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_key = {(r["task"], r["budget"], r["method"]): r for r in rows}
    for r in sorted(rows, key=lambda r: (r["task"], r["budget"], METHODS.index(r["method"]))):
        peer = by_key.get((r["task"], r["budget"], PEER.get(r["method"], "")))
        ratio = "-"
        if peer and r.get("fit_cpu_s") and peer.get("fit_cpu_s"):
            ratio = f"{r['fit_cpu_s'] / peer['fit_cpu_s']:.2f}"
        per = ", ".join(f"{s:.3f}" for s in r["c2st"]) or "-"
        mean = f"{r['c2st_mean']:.3f}" if r.get("c2st_mean") is not None else "-"
        if "epochs" in r:
            trained = f"{r['epochs']} epochs ({r['best_epoch']})"
        elif "steps" in r:
            trained = f"{r['steps']} steps ({r['best_step']})"
        else:
            trained = "-"
        leak = ", ".join(f"{v:.3f}" for v in r.get("leak", [])) or "-"
        lines.append(
            f"| {r['task']} | {r['budget']} | {r['method']} | {r.get('status', 'ok')} | {per} "
            f"| {mean} | {_num(r, 'fit_cpu_s')} | {_num(r, 'fit_s')} | {ratio} | {trained} "
            f"| {_num(r, 'sample_cpu_s')} | {_num(r, 'c2st_cpu_s')} | {r['outside_prior']} "
            f"| {leak} | {r['load_at_start']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite ``out`` from the rows, keeping the hand-written part from ``## Notes`` on."""
    notes = ""
    if out.exists():
        old = out.read_text()
        notes = old[old.index("## Notes") :] if "## Notes" in old else ""
    out.write_text(table(rows) + ("\n" + notes if notes else ""))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--budgets", nargs="+", type=int, default=[1000])
    parser.add_argument("--methods", nargs="+", default=["ff_npe", "sbi_npe"], choices=METHODS)
    parser.add_argument("--observations", type=int, default=3)
    parser.add_argument("--c2st-samples", type=int, default=2000)
    parser.add_argument("--c2st-max-iter", type=int, default=500)
    parser.add_argument(
        "--c2st-draws", type=int, default=1, help="C2ST draws per observation, averaged"
    )
    parser.add_argument("--fit-cpu-limit", type=float, default=3600.0, help="CPU s per fit")
    parser.add_argument("--sample-cpu-limit", type=float, default=600.0, help="CPU s, all obs")
    parser.add_argument("--c2st-cpu-limit", type=float, default=900.0, help="CPU s, all obs")
    parser.add_argument("--cache-dir", default=str(ROOT / "benchmarks" / ".cache" / "sbi"))
    parser.add_argument("--jsonl", default=str(ROOT / "benchmarks" / "results" / "sbi.jsonl"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sbi.md"))
    parser.add_argument("--table-only", action="store_true", help="rewrite --out from --jsonl")
    parser.add_argument("--ff-max-steps", type=int, default=None, help="smoke runs only")
    parser.add_argument("--ff-patience", type=int, default=None, help="default: the class's")
    parser.add_argument("--ff-lr", type=float, default=None, help="default: the class's")
    parser.add_argument("--ff-flow", default=None, help="NPE's preset (default: the class's)")
    parser.add_argument("--ff-flow-options", default=None, help="JSON flow_options")
    parser.add_argument("--ff-seed", type=int, default=0, help="the training seed")
    parser.add_argument("--ff-batch-size", type=int, default=None, help="NPE.fit's batch_size")
    parser.add_argument(
        "--ff-epochs", type=int, default=None, help="NPE's default_epochs (default: the class's)"
    )
    parser.add_argument(
        "--ff-plateau-patience", type=int, default=None, help="halve lr after this + 1 bad vals"
    )
    parser.add_argument(
        "--ff-validation-fraction", type=float, default=None, help="NPE.fit's (default 0.1)"
    )
    parser.add_argument(
        "--ff-attr", nargs="*", default=[], help="NPE attributes set before the fit: NAME=JSON"
    )
    parser.add_argument("--ff-z-score", default="independent", help="NPE's z_score")
    parser.add_argument(
        "--heldout", type=int, default=0, help="ff: mean -log q on this many fresh pairs"
    )
    parser.add_argument("--sbi-max-epochs", type=int, default=None, help="smoke runs only")
    parser.add_argument(
        "--sbi-seed", type=int, default=0, help="torch's seed before sbi's training"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only before any inter-op work
        torch.set_num_interop_threads(1)
    jsonl, out = Path(args.jsonl), Path(args.out)
    if args.table_only:
        write_report(out, read_rows(jsonl))
        return read_rows(jsonl)
    rows: list[dict[str, Any]] = []
    for budget in args.budgets:
        for name in args.tasks:
            task = get_task(name)
            for method in args.methods:
                seed = args.ff_seed if method.startswith("ff_") else args.sbi_seed
                done = {
                    (r["task"], r["budget"], r["method"], r.get("seed", 0)): r
                    for r in read_rows(jsonl)
                }
                if (name, budget, method, seed) in done:  # another process may have written it
                    rows.append(done[(name, budget, method, seed)])
                    continue
                row = run_one(task, budget, method, args)
                print(json.dumps(row), flush=True)
                rows.append(row)
                jsonl.parent.mkdir(parents=True, exist_ok=True)
                with jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                write_report(out, read_rows(jsonl))
    return rows


if __name__ == "__main__":
    main()
