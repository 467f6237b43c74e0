"""Flow matching on 8gaussians: flowforge's FlowMatching against torchcfm's 2-D recipe, one evaluator.

The models train side by side on the same fresh batches (their steps interleaved, so machine
load hits them alike), and every ``--every`` steps each is scored by ONE evaluator: its learned
velocity is integrated by torchdiffeq's dopri5 at ``rtol = atol = --tol`` with the exact
divergence (autograd, D = 2) from the data (normalised time 0) to the standard normal (time 1):
``log p(x) = log N(z(1)) + int_0^1 div u(z(s), s) ds``, test NLL on ``--test`` fresh rows
(optimum 2.838). Only training is timed (forward, backward and the Adam step), in wall and in
CPU seconds (``time.process_time``); the equal-seconds pairs use CPU seconds.

Models (separated by ``;``):

- ``cfm`` / ``cfm-ot``: torchcfm's published 2-D recipe: ``MLP(dim=2, time_varying=True)`` (3 x 64
  SELU on ``[x, t]``), ``ConditionalFlowMatcher(sigma)`` or
  ``ExactOptimalTransportConditionalFlowMatcher(sigma)``, noise at ``t = 0`` and data at ``t = 1``
  (the evaluator reverses its time), Adam; torchcfm is optional (skipped with the reason).
- ``ours`` / ``ours-ot``: ``ff.flows.FFJORD(features=2, hidden=(64, 64, 64),
  **ff.flows.ffjord.FLOW_MATCHING)`` (what ``flowforge train --objective flow-matching``
  builds: the plain MLP, GELU, one Fourier time pair; before stop 35 it was
  ``ours:activation='tanh',freqs=0``), or with ``-ot`` ``**FLOW_MATCHING_OT`` (``--ot``'s:
  the plain MLP with tanh on ``1 - t``, ``reverse_time``; ``ours-ot:reverse_time=False`` is
  tanh on ``t``, ``--ot``'s before stop 35b), trained by
  :class:`~flowforge.train.losses.FlowMatching` (``sigma``, ``ot``: POT's ``ot.emd`` when
  installed, as torchcfm's, else scipy).
  Race-only initialisations in the ``:kwargs``: ``rebias=True`` (the first layer starts as
  ``reverse_time``'s function of ``t`` and its time features) and ``outscale=K`` (the output layer's initial weights
  and bias times ``K``; 0: a zero output layer, the identity start of maximum likelihood).
- ``ours-cs`` / ``ours-cs-ot``: the same with the concat-squash dynamics (maximum likelihood's
  default, ``dynamics="concatsquash"``, tanh, ``t`` alone).
- ``run:DIR``: no training: the CNF of a ``flowforge train --objective flow-matching`` run,
  scored by the same evaluator (``DIR/results.json`` has its own seconds).

Every model gets ``--lr`` (no schedule), ``--batch`` and ``--sigma``: the recipe's are lr 1e-3,
batch 256, sigma 0.1 (its README example; 0 is exact straight paths).

Equal CPU seconds: at each test, every model whose training took fewer CPU seconds than the
slowest model's trains on (on the same batches) until it has spent as many, and is tested there
too (``EQUAL CPU`` lines: each model at the slowest one's CPU seconds of that test).

Run: ``python benchmarks/fm_race.py "cfm;ours" --steps 1000 --at 250,500,1000 --seed 0`` (one
CPU thread; the table of benchmarks/results/cnf_issue24.md, stop 35).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import flowforge as ff
from flowforge.data.toy import sample_toy
from flowforge.flows.ffjord import FLOW_MATCHING, FLOW_MATCHING_OT
from flowforge.train.losses import FlowMatching

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnf_race import Checkpoint, _kwargs, equal_seconds

HIDDEN = (64, 64, 64)
#: ``u(s, x)``: the velocity in normalised time, data at ``s = 0``, the standard normal at 1.
Velocity = Callable[[Tensor, Tensor], Tensor]
Step = Callable[[Tensor], None]


def test_nll(velocity: Velocity, x: Tensor, tol: float = 1e-5) -> float:
    """Mean negative log-likelihood of rows ``x`` ``(N, D)`` under the flow of ``velocity``.

    The state ``(z, a)`` starts at ``(x, 0)`` and follows ``dz/ds = u(s, z)``,
    ``da/ds = div u(s, z)`` (exact, one autograd pass per dimension) to ``s = 1``; then
    ``log p(x) = log N(z(1); 0, I) + a(1)``.
    """
    from torchdiffeq import odeint

    def dynamics(s: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            z = state[0].detach().requires_grad_(True)
            u = velocity(s.expand(z.shape[0]), z)
            div = sum(
                torch.autograd.grad(u[:, i].sum(), z, retain_graph=True)[0][:, i]
                for i in range(z.shape[1])
            )
        assert isinstance(div, Tensor)
        return u.detach(), div.detach()

    with torch.no_grad():
        times = torch.tensor([0.0, 1.0], dtype=x.dtype)
        start = (x, x.new_zeros(x.shape[0]))
        z, a = odeint(dynamics, start, times, method="dopri5", rtol=tol, atol=tol)
        base = torch.distributions.Normal(0.0, 1.0).log_prob(z[-1]).sum(-1)
        return -(base + a[-1]).mean().item()


def build(name: str, args: argparse.Namespace) -> tuple[list[torch.nn.Parameter], Step, Velocity]:
    """The model's parameters, its training step (backpropagates the loss) and its velocity."""
    torch.manual_seed(args.seed)
    if name.startswith("run:"):
        flow = ff.runs.load(name[4:])
        cnf = flow.bijection.bijections[-1]  # type: ignore[union-attr,index]
        return [], lambda x: None, lambda s, x: cnf.velocity(s, x)
    if name in ("cfm", "cfm-ot"):
        from torchcfm.conditional_flow_matching import (
            ConditionalFlowMatcher,
            ExactOptimalTransportConditionalFlowMatcher,
        )
        from torchcfm.models.models import MLP

        net = MLP(dim=2, time_varying=True)
        matcher = (
            ExactOptimalTransportConditionalFlowMatcher
            if name == "cfm-ot"
            else ConditionalFlowMatcher
        )(sigma=args.sigma)

        def cfm_step(x1: Tensor) -> None:
            x0 = torch.randn_like(x1)
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
            vt = net(torch.cat([xt, t[:, None]], dim=-1))
            torch.mean((vt - ut) ** 2).backward()

        def cfm_velocity(s: Tensor, x: Tensor) -> Tensor:
            # torchcfm: noise at t = 0, data at t = 1; normalised time s = 1 - t
            return -net(torch.cat([x, (1 - s)[:, None].to(x)], dim=-1))

        return list(net.parameters()), cfm_step, cfm_velocity
    base, _, spec = name.partition(":")
    if base in ("ours", "ours-ot", "ours-cs", "ours-cs-ot"):
        kw = _kwargs(spec)
        rebias = kw.pop("rebias", False)
        outscale = float(kw.pop("outscale", 1.0))
        if base.startswith("ours-cs"):
            kw.setdefault("dynamics", "concatsquash")
        else:
            kw = {**(FLOW_MATCHING_OT if base.endswith("-ot") else FLOW_MATCHING), **kw}
        flow = ff.flows.FFJORD(features=2, **{"hidden": HIDDEN, **kw})
        cnf = flow.bijection.bijections[0]
        if rebias:  # rev's initial function of the input [t, cos(pi k t), sin(pi k t)]
            with torch.no_grad():  # of 1 - t: first bias b + w_t, w_t -> -w_t; the cos and
                (w, b) = cnf.net.layers()[0]  # sin columns times (-1)^k and -(-1)^k
                f = cnf.net.freqs
                b += w[:, 2]
                w[:, 2] *= -1
                for k in range(1, f + 1):
                    w[:, 2 + k] *= (-1) ** k
                    w[:, 2 + f + k] *= -((-1) ** k)
        if outscale != 1.0:  # the output layer's initial weights and bias times outscale (0: zero)
            with torch.no_grad():
                for tensor in cnf.net.layers()[-1]:
                    tensor *= outscale
        objective = FlowMatching(ot=base.endswith("-ot"), sigma=args.sigma)
        if objective.ot:  # imported before the clock runs, as torchcfm imports POT
            import scipy.optimize  # noqa: F401

            with contextlib.suppress(ImportError):
                import ot  # noqa: F401

        def step(x: Tensor) -> None:
            objective(flow, x).value.backward()

        return list(flow.parameters()), step, lambda s, x: cnf.velocity(s, x)
    raise SystemExit(
        "expected a model cfm, cfm-ot, ours, ours-ot, ours-cs, ours-cs-ot (each 'ours' with "
        f"optional ':kwargs' of FFJORD) or run:DIR, got {name!r}"
    )


class Streams:
    """One random stream per model: torch's and numpy's global generators swapped in for its step.

    torchcfm draws its noise and times from torch's global generator (and its OT pairs from
    numpy's), as :class:`FlowMatching` does: with one shared stream a model's draws depend on
    which other models race beside it (the same model and seed moved by up to 0.08 at 500 steps
    when another model joined). Each model starts from ``seed`` and keeps its own state, so its
    rows are reproducible whatever races with it.
    """

    def __init__(self, names: list[str], seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.state = {n: (torch.get_rng_state(), np.random.get_state()) for n in names}

    @contextlib.contextmanager
    def of(self, name: str) -> Iterator[None]:
        """Run the block on ``name``'s stream, then store the stream's state."""
        torch.set_rng_state(self.state[name][0])
        np.random.set_state(self.state[name][1])
        try:
            yield
        finally:
            self.state[name] = (torch.get_rng_state(), np.random.get_state())


def main(argv: list[str] | None = None) -> dict[str, list[Checkpoint]]:
    """Race the models named in ``argv``; every model's checkpoints (NFE: 0, no solve), and
    under ``"NAME=cpu"`` its checkpoints at the slowest model's CPU seconds of each test."""
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("models", help="models separated by ';', e.g. \"cfm;ours\"")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (no schedule)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--every", type=int, default=500, help="test NLL every N steps")
    p.add_argument(
        "--at", default="", help="test NLL at these steps instead, e.g. 250,500,1000 (and the end)"
    )
    p.add_argument("--test", type=int, default=5000, help="fresh test rows")
    p.add_argument("--tol", type=float, default=1e-5, help="the evaluator's rtol = atol")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = args.models.split(";")
    if any(n.startswith("cfm") for n in names):
        try:
            import torchcfm  # noqa: F401
        except ImportError:
            print("torchcfm is not installed: the cfm models are skipped")
            names = [n for n in names if not n.startswith("cfm")]
    models = {n: build(n, args) for n in names}
    opts = {n: torch.optim.Adam(m[0], args.lr) for n, m in models.items() if m[0]}
    log: dict[str, list[Checkpoint]] = {n: [] for n in names}
    log |= {f"{n}=cpu": [] for n in opts}
    clock = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    g = torch.Generator().manual_seed(args.seed)
    test = sample_toy("8gaussians", args.test, torch.Generator().manual_seed(10_000 + args.seed))
    streams = Streams(list(opts), args.seed)
    at = {int(k) for k in args.at.split(",") if k}
    behind: dict[str, list[tuple[int, float]]] = {n: [] for n in opts}  # (test, CPU to reach)
    for n in names:
        if n not in opts:
            c = Checkpoint(0, 0.0, 0.0, test_nll(models[n][2], test, args.tol))
            log[n].append(c)
            print(f"{n}: test NLL {c.nll:.4f}", flush=True)
    i = 0
    while i < args.steps or any(behind.values()):
        i += 1
        x = sample_toy("8gaussians", args.batch, g)
        for n in opts:
            if i > args.steps and not behind[n]:
                continue
            opts[n].zero_grad()
            with streams.of(n):
                start, start_cpu = time.perf_counter(), time.process_time()
                models[n][1](x)
                opts[n].step()
                clock[n] += time.perf_counter() - start
                cpu[n] += time.process_time() - start_cpu
            while behind[n] and cpu[n] >= behind[n][0][1]:
                c = Checkpoint(i, clock[n], 0.0, test_nll(models[n][2], test, args.tol), cpu[n])
                log[f"{n}=cpu"].append(c)
                print(
                    f"EQUAL CPU {behind[n].pop(0)[0]:5d} {n:24s} cpu {c.cpu:7.2f} ({i} steps) "
                    f"test NLL {c.nll:.4f}",
                    flush=True,
                )
        if i <= args.steps and ((i in at if at else i % args.every == 0) or i == args.steps):
            for n in opts:
                nll = test_nll(models[n][2], test, args.tol)
                c = Checkpoint(i, clock[n], 0.0, nll, cpu[n])
                log[n].append(c)
                print(
                    f"step {i:5d} {n:24s} seconds {c.seconds:7.2f} cpu {c.cpu:7.2f} "
                    f"test NLL {c.nll:.4f}",
                    flush=True,
                )
            slowest = max(cpu[n] for n in opts)
            for n in opts:
                if cpu[n] < slowest:
                    behind[n].append((i, slowest))
                else:
                    log[f"{n}=cpu"].append(log[n][-1])
                    print(
                        f"EQUAL CPU {i:5d} {n:24s} cpu {cpu[n]:7.2f} ({i} steps) test NLL "
                        f"{log[n][-1].nll:.4f}",
                        flush=True,
                    )
    for n in opts:  # the model that trained fewer seconds, at its end, gives the peer the extra
        for peer in opts:
            pair = equal_seconds(log[n], log[peer]) if peer != n else None
            if pair is not None:
                a, b = pair
                print(
                    f"EQUAL CPU SECONDS {n} {a.nll:.4f} @ {a.cpu:.1f} s ({a.step} steps) "
                    f"vs {peer} {b.nll:.4f} @ {b.cpu:.1f} s ({b.step} steps)"
                )
    return log


if __name__ == "__main__":
    main()
