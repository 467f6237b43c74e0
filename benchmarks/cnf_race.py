"""Maximum-likelihood CNFs on 8gaussians, trained side by side: flowforge's FFJORD and zuko's CNF.

Every model has 3 x 64 hidden dynamics, the exact trace and an adaptive dopri5 solver, and
trains with Adam (``--lr``, no schedule) on the same fresh batches of 512; the steps of the
models are interleaved (step i of every model, then step i + 1), so machine load hits them
alike. Every ``--every`` steps it prints each model's training seconds so far (forward,
backward and the Adam step; the evaluation is not timed), its function evaluations (NFE) per
step and its test NLL (exact trace, 5000 fresh rows, optimum 2.838): NLL against steps and
against seconds. Seconds are counted twice: wall (``time.perf_counter``) and CPU
(``time.process_time``, one thread, so the process's CPU time in the model's steps); the
equal-seconds pairs and ``--seconds`` use CPU seconds, which a loaded, shared machine disturbs
far less than the wall clock. With ``--seconds S`` a model stops once its CPU time reaches ``S``.

Models are named on the command line: ``zuko`` (``zuko.flows.CNF`` with its defaults), or
``ours`` with FFJORD keyword arguments after a colon, e.g. ``ours:adjoint=False`` or
``ours:activation='softplus'``; ``rnode=(k, j)`` adds the RNODE weights of
:class:`~flowforge.train.losses.CNFLikelihood`. Models are separated by ``;``.

Run: ``python benchmarks/cnf_race.py "zuko;ours:" --steps 300 --lr 1e-3 --seed 0``
(a few minutes on one free CPU thread). ``main(argv)`` returns every model's checkpoints;
with zuko in the race it also prints, for every other model, the equal-seconds pair: the model
at its end against zuko at its first test with at least as many training seconds.
"""

from __future__ import annotations

import argparse
import ast
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import flowforge as ff
from flowforge.data.toy import sample_toy
from flowforge.train.losses import CNFLikelihood

HIDDEN = (64, 64, 64)
Step = Callable[[torch.Tensor], tuple[float, int]]


def _kwargs(spec: str) -> dict[str, Any]:
    call = ast.parse(f"f({spec})", mode="eval").body
    assert isinstance(call, ast.Call)
    return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}


def build(name: str, seed: int) -> tuple[torch.nn.Module, Step, Callable[[torch.Tensor], float]]:
    """The model, its training step (returns the NLL and the NFE) and its test NLL."""
    torch.manual_seed(seed)
    if name == "zuko":
        import zuko

        z = zuko.flows.CNF(2, hidden_features=HIDDEN)
        count = [0]
        z.transform.ode.register_forward_pre_hook(lambda m, i: count.__setitem__(0, count[0] + 1))

        def zstep(x: torch.Tensor) -> tuple[float, int]:
            count[0] = 0
            loss = -z().log_prob(x).mean()
            loss.backward()
            return loss.item(), count[0]

        def ztest(x: torch.Tensor) -> float:
            with torch.no_grad():
                return -z().log_prob(x).mean().item()

        return z, zstep, ztest
    lib, _, spec = name.partition(":")
    if lib != "ours":
        raise SystemExit(f"expected a model 'zuko' or 'ours[:kwargs]', got {name!r}")
    kw = _kwargs(spec)
    objective = CNFLikelihood(*kw.pop("rnode", (0.0, 0.0)))
    flow = ff.flows.FFJORD(features=2, hidden=HIDDEN, **kw)
    cnf = flow.bijection.bijections[0]

    def step(x: torch.Tensor) -> tuple[float, int]:
        loss = objective(flow, x)
        loss.value.backward()
        return loss.terms["nll"].item(), cnf.nfe_forward + cnf.nfe_backward

    def test(x: torch.Tensor) -> float:
        flow.eval()
        with torch.no_grad():
            nll = -flow.log_prob(x).mean().item()
        flow.train()
        return nll

    return flow, step, test


@dataclass(frozen=True)
class Checkpoint:
    """One model's state at a test: steps, training wall seconds, NFE per step, test NLL, CPU seconds.

    ``cpu`` is the process CPU time (``time.process_time``) spent in the model's training steps:
    under a shared, loaded machine it is steadier than the wall clock, which also counts the time
    the process waited for a core.
    """

    step: int
    seconds: float
    nfe: float
    nll: float
    cpu: float = 0.0


def equal_seconds(
    ours: list[Checkpoint], peer: list[Checkpoint], clock: str = "cpu"
) -> tuple[Checkpoint, Checkpoint] | None:
    """``ours`` at its last test against ``peer``'s first test with at least as many seconds.

    ``clock`` is the checkpoint field compared: ``"cpu"`` (CPU seconds) or ``"seconds"`` (wall).
    The peer gets the extra time; ``None`` when the peer never trained that long.
    """
    end = ours[-1]
    later = [c for c in peer if getattr(c, clock) >= getattr(end, clock)]
    return (end, later[0]) if later else None


def main(argv: list[str] | None = None) -> dict[str, list[Checkpoint]]:
    """Race the models named in ``argv``; every model's checkpoints (its end included)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("models", help="models separated by ';', e.g. \"zuko;ours:\"")
    p.add_argument("--steps", type=int, default=300, help="most steps of each model")
    p.add_argument("--seconds", type=float, default=0.0, help="stop a model at this training time")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam's learning rate (no schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=50, help="test NLL every N steps")
    p.add_argument("--test", type=int, default=5000, help="fresh test rows")
    p.add_argument("--batch", type=int, default=512, help="fresh training rows per step")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.models.split(";")
    models = {n: build(n, args.seed) for n in names}
    opts = {n: torch.optim.Adam(m[0].parameters(), args.lr) for n, m in models.items()}
    steps: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    log: dict[str, list[Checkpoint]] = {n: [] for n in names}
    clock = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    g = torch.Generator().manual_seed(args.seed)
    test = sample_toy("8gaussians", args.test, torch.Generator().manual_seed(10_000 + args.seed))

    def checkpoint(n: str) -> Checkpoint:
        w = steps[n][-args.every :]
        nfe = sum(v[1] for v in w) / len(w)
        c = Checkpoint(len(steps[n]), clock[n], nfe, models[n][2](test), cpu[n])
        log[n].append(c)
        return c

    for i in range(1, args.steps + 1):
        x = sample_toy("8gaussians", args.batch, g)
        running = [n for n in names if not args.seconds or cpu[n] < args.seconds]
        if not running:
            break
        for n in running:
            opts[n].zero_grad()
            start, start_cpu = time.perf_counter(), time.process_time()
            nll, nfe = models[n][1](x)
            opts[n].step()
            clock[n] += time.perf_counter() - start
            cpu[n] += time.process_time() - start_cpu
            steps[n].append((nll, nfe))
        if i % args.every == 0:
            for n in running:
                c = checkpoint(n)
                print(
                    f"step {i:4d} {n:40s} seconds {c.seconds:8.1f} cpu {c.cpu:8.1f} "
                    f"NFE/step {c.nfe:6.1f} test NLL {c.nll:.4f}",
                    flush=True,
                )
    for n in names:
        k = len(steps[n])
        if not log[n] or log[n][-1].step != k:
            checkpoint(n)
        mean_nfe = sum(v[1] for v in steps[n]) / k
        print(
            f"FINAL {n:40s} steps {k} seconds {clock[n]:.1f} cpu {cpu[n]:.1f} "
            f"cpu s/step {cpu[n] / k:.3f} NFE/step {mean_nfe:.1f} test NLL {log[n][-1].nll:.4f}"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"PEAK RSS of the process (every model, tests included): {peak:.0f} MiB")
    if "zuko" in log:
        for n in names:
            pair = equal_seconds(log[n], log["zuko"]) if n != "zuko" else None
            if pair is not None:
                a, b = pair
                print(
                    f"EQUAL CPU SECONDS {n} {a.nll:.4f} @ {a.cpu:.0f} s ({a.step} steps) "
                    f"vs zuko {b.nll:.4f} @ {b.cpu:.0f} s ({b.step} steps)"
                )
    return log


if __name__ == "__main__":
    main()
