"""Continuous flows on 8gaussians: maximum likelihood, RNODE, flow matching and zuko's CNF.

Every model has 3 x 64 hidden dynamics and trains with Adam on fresh batches of 512; test NLL
(nats, exact trace through the ODE) is measured on 4000 fixed test rows, outside the timed
training. Flow matching (the dynamics of ``FLOW_MATCHING`` / ``FLOW_MATCHING_OT``, what
``flowforge train --objective flow-matching`` builds without / with ``--ot``) decays its rate to 0 over ``--fm-steps`` (cosine) and stops once it
reaches the first maximum-likelihood run's test NLL. Prints a table and saves ``docs/cnf_8gaussians.png`` (test NLL against training
seconds). The optimum is the data's entropy, about 2.838 nats.

Run: ``python examples/cnf_8gaussians.py`` (about 10 minutes on one CPU thread; ``--steps``
shortens it).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

import flowforge as ff
from flowforge.data.toy import sample_toy
from flowforge.flows.ffjord import FLOW_MATCHING, FLOW_MATCHING_OT
from flowforge.train.losses import CNFLikelihood, FlowMatching

OPTIMUM = 2.838
HIDDEN = (64, 64, 64)


@dataclass
class Curve:
    name: str
    seconds: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    nfe: list[float] = field(default_factory=list)  # per step, forward + backward solves
    steps: int = 0


def train(
    name: str,
    params: list[torch.nn.Parameter],
    step: Callable[[torch.Tensor], float],
    test_nll: Callable[[], float],
    steps: int,
    eval_every: int,
    lr: float,
    batch: int,
    stop_below: float | None = None,
    cosine: bool = False,
) -> Curve:
    """Train with Adam (``cosine``: its rate decayed to 0 over ``steps``); ``step(x)``
    backpropagates a loss and returns the step's NFE."""
    curve = Curve(name)
    opt = torch.optim.Adam(params, lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
    g = torch.Generator().manual_seed(0)
    elapsed = 0.0
    for i in range(1, steps + 1):
        x = sample_toy("8gaussians", batch, g)
        start = time.perf_counter()
        opt.zero_grad()
        curve.nfe.append(step(x))
        opt.step()
        if sched is not None:
            sched.step()
        elapsed += time.perf_counter() - start
        if i % eval_every == 0 or i == steps:
            curve.seconds.append(elapsed)
            curve.nll.append(test_nll())
            curve.steps = i
            print(f"  {name}: step {i}, {elapsed:.1f} s, test NLL {curve.nll[-1]:.3f}", flush=True)
            if stop_below is not None and curve.nll[-1] <= stop_below:
                break
    return curve


def ours(name: str, objective: object, args: argparse.Namespace, test: torch.Tensor, **kw) -> Curve:
    torch.manual_seed(0)
    flow = ff.flows.FFJORD(features=2, hidden=HIDDEN, **kw)
    cnf = flow.bijection.bijections[0]

    def step(x: torch.Tensor) -> float:
        loss = objective(flow, x)  # type: ignore[operator]
        loss.value.backward()
        if isinstance(objective, FlowMatching):
            return 0.0  # no solve in training (cnf.last_solve is the last evaluation's)
        return float(cnf.nfe_forward + cnf.nfe_backward)

    def test_nll() -> float:
        flow.eval()
        with torch.no_grad():
            nll = -flow.log_prob(test).mean().item()
        flow.train()
        return nll

    fm = isinstance(objective, FlowMatching)
    steps = args.fm_steps if fm else args.steps
    every = args.fm_eval_every if fm else args.eval_every
    stop = args.stop_below if fm else None
    # Flow matching's regression target is noisy: a decaying rate settles it (constant: ~2.9).
    params = list(flow.parameters())
    return train(name, params, step, test_nll, steps, every, args.lr, 512, stop, cosine=fm)


def zuko_cnf(args: argparse.Namespace, test: torch.Tensor) -> Curve:
    import zuko

    torch.manual_seed(0)
    flow = zuko.flows.CNF(2, hidden_features=HIDDEN)
    nfe = [0]

    def count(module: torch.nn.Module, inputs: object) -> None:
        nfe[0] += 1  # one evaluation of the dynamics network

    flow.transform.ode.register_forward_pre_hook(count)

    def step(x: torch.Tensor) -> float:
        nfe[0] = 0
        (-flow().log_prob(x).mean()).backward()
        return float(nfe[0])

    def test_nll() -> float:
        with torch.no_grad():
            return -flow().log_prob(test).mean().item()

    return train(
        "zuko CNF",
        list(flow.parameters()),
        step,
        test_nll,
        args.steps,
        args.eval_every,
        args.lr,
        512,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--fm-steps", type=int, default=3000)
    parser.add_argument("--fm-eval-every", type=int, default=100)
    parser.add_argument("--stop-below", type=float, default=None, help="default: ML's NLL")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--no-zuko", action="store_true")
    parser.add_argument(
        "--models",
        nargs="+",
        default=["ml", "adjoint", "rnode", "fm", "fm-ot", "zuko"],
        help="which runs, in this order: ml adjoint rnode fm fm-ot zuko",
    )
    parser.add_argument("--plot", default="docs/cnf_8gaussians.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = sample_toy("8gaussians", 4000, torch.Generator().manual_seed(123))

    runs: dict[str, Callable[[], Curve]] = {
        "ml": lambda: ours("ML (exact trace)", CNFLikelihood(), args, test),
        "adjoint": lambda: ours("ML, the adjoint", CNFLikelihood(), args, test, adjoint=True),
        "rnode": lambda: ours("ML + RNODE (0.01, 0.01)", CNFLikelihood(0.01, 0.01), args, test),
        "fm": lambda: ours("flow matching", FlowMatching(), args, test, **FLOW_MATCHING),
        "fm-ot": lambda: ours(
            "flow matching (OT pairs)", FlowMatching(ot=True), args, test, **FLOW_MATCHING_OT
        ),
        "zuko": lambda: zuko_cnf(args, test),
    }
    unknown = sorted(set(args.models) - set(runs))
    if unknown:
        parser.error(f"--models: expected names from {sorted(runs)}, got {unknown}")
    curves = []
    for name in runs:
        if name not in args.models or (name == "zuko" and args.no_zuko):
            continue
        curves.append(runs[name]())
        if name == "ml" and args.stop_below is None:
            args.stop_below = curves[-1].nll[-1]  # flow matching stops at ML's NLL
    print()
    print(f"8gaussians, batch 512, hidden {HIDDEN}, lr {args.lr}; optimum NLL {OPTIMUM}")
    print(
        f"{'model':28s} {'steps':>6s} {'test NLL':>9s} {'s/step':>8s} {'train s':>8s} {'NFE/step':>9s}"
    )
    for c in curves:
        per_step = c.seconds[-1] / c.steps
        nfe = sum(c.nfe) / len(c.nfe)
        print(
            f"{c.name:28s} {c.steps:6d} {c.nll[-1]:9.3f} {per_step:8.4f} {c.seconds[-1]:8.1f} {nfe:9.1f}"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        ax.plot(c.seconds, c.nll, marker="o", ms=3, label=c.name)
    ax.axhline(OPTIMUM, color="gray", ls="--", lw=1, label=f"optimum {OPTIMUM}")
    ax.set_xscale("log")
    ax.set_ylim(OPTIMUM - 0.05, 4.0)
    ax.set_xlabel("training seconds (1 CPU thread)")
    ax.set_ylabel("test NLL (nats)")
    ax.set_title("8gaussians: CNFs, 3 x 64 dynamics, batch 512")
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=120)
    print(f"saved {args.plot}")


if __name__ == "__main__":
    main()
