"""Before/after speed of two flowforge checkouts, in one process, paired call by call.

A change that must not slow flowforge down is measured here: both versions are imported side
by side (each from its own ``src/``), every case alternates old and new call by call (the order
flipped every repetition), and the result is the median of the per-call ratios new / old with
its interquartile range, so the machine's drift hits both alike.

Usage::

    git worktree add /tmp/before <commit>
    python benchmarks/ab.py --old /tmp/before --new . --reps 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from types import ModuleType

import torch


def load(root: str) -> ModuleType:
    """Import the flowforge of checkout ``root`` under a private name."""
    sys.path.insert(0, f"{root}/src")
    try:
        for k in [k for k in sys.modules if k == "flowforge" or k.startswith("flowforge.")]:
            del sys.modules[k]
        import flowforge

        return flowforge
    finally:
        sys.path.pop(0)
        for k in [k for k in sys.modules if k == "flowforge" or k.startswith("flowforge.")]:
            del sys.modules[k]


def cases(ff: ModuleType, dims: list[int], flows: list[str]) -> dict[str, Callable[[], object]]:
    """The timed calls of one version: train step, log_prob, sample, per preset and D."""
    out: dict[str, Callable[[], object]] = {}
    for d in dims:
        x_train, x_eval = torch.randn(512, d), torch.randn(4096, d)
        for name in flows:
            torch.manual_seed(0)
            flow = getattr(ff.flows, name)(features=d, transforms=5, hidden=(128, 128))
            with torch.no_grad():
                for p in flow.parameters():
                    p.normal_(0.0, 0.05)
            opt = torch.optim.Adam(flow.parameters(), 1e-6)

            def train(flow=flow, opt=opt, x=x_train) -> None:
                opt.zero_grad()
                (-flow.log_prob(x).mean()).backward()
                opt.step()

            def log_prob(flow=flow, x=x_eval) -> None:
                with torch.no_grad():
                    flow.log_prob(x)

            def sample(flow=flow) -> None:
                flow.sample(1024)

            out[f"{name:8s} D={d:<3d} train"] = train
            out[f"{name:8s} D={d:<3d} log_prob"] = log_prob
            out[f"{name:8s} D={d:<3d} sample"] = sample
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--old", required=True, help="checkout before the change")
    p.add_argument("--new", required=True, help="checkout after the change")
    p.add_argument("--reps", type=int, default=30, help="paired calls per case")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 64])
    p.add_argument("--flows", nargs="+", default=["MAF", "NSF", "RealNVP", "NICE"])
    args = p.parse_args()
    torch.set_num_threads(1)
    old = cases(load(args.old), args.dims, args.flows)
    new = cases(load(args.new), args.dims, args.flows)
    print(f"{'case':28s} new/old  IQR            (median of {args.reps} paired calls)")
    for name in old:
        a, b = old[name], new[name]
        for _ in range(3):
            a()
            b()
        ratios = []
        for r in range(args.reps):
            t = {}
            for tag, f in (("old", a), ("new", b)) if r % 2 else (("new", b), ("old", a)):
                start = time.perf_counter()
                f()
                t[tag] = time.perf_counter() - start
            ratios.append(t["new"] / t["old"])
        q = statistics.quantiles(ratios, n=4)
        print(f"{name:28s} {statistics.median(ratios):.3f}    {q[0]:.3f}-{q[2]:.3f}", flush=True)


if __name__ == "__main__":
    main()
