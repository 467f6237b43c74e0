"""TarFlow's speed: the density pass, KV-cached sampling against the uncached reference, and
Glow of about the same parameter count, timed side by side in one process.

Usage:
    python benchmarks/speed_tarflow.py                    # digits size (1, 8, 8)
    python benchmarks/speed_tarflow.py --patch 1 --repeats 7 --json out.json

Each repetition times every operation once, round-robin (the machine's speed drifts between
repetitions; the ratios are medians of per-repetition ratios). Float32, no gradient, one
thread by default; ``log_prob`` on ``--batch`` images, ``sample`` of ``--sample-batch``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import flowforge as ff
from flowforge.transforms import TransformerAutoregressive


def params(flow: torch.nn.Module) -> int:
    return sum(p.numel() for p in flow.parameters())


def randomized(flow: ff.Flow) -> ff.Flow:
    """Non-zero output layers (a zero layer would be computed on zeros) and ActNorm marked done."""
    with torch.no_grad():
        for m in flow.modules():
            if isinstance(m, ff.nn.CausalTransformer):
                m.out.weight.normal_(0, 0.01)
            if isinstance(m, ff.transforms.ActNorm):
                m.mark_initialized()
            if isinstance(m, ff.nn.ConvNet):
                m.layers[-1].weight.normal_(0, 0.01)
    return flow.eval()


def uncached(flow: ff.Flow, n: int) -> torch.Tensor:
    """``flow.sample(n)`` with every TarFlow layer's reference inverse (T full passes)."""
    layers = [m for m in flow.modules() if isinstance(m, TransformerAutoregressive)]
    for m in layers:
        m.__dict__["inverse"] = m.inverse_uncached
    try:
        return flow.sample(n)
    finally:
        for m in layers:
            m.__dict__.pop("inverse")


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(1, 8, 8))
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--glow-hidden", type=int, default=None, help="default: match parameters")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--sample-batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shape = tuple(args.shape)
    tar = ff.flows.TarFlow(
        shape=shape, patch=args.patch, blocks=args.blocks, layers=args.layers, width=args.width
    )
    hidden = args.glow_hidden
    if hidden is None:  # the Glow (2 levels x 4 steps) whose parameter count is closest
        hidden = min(
            range(16, 513, 8),
            key=lambda h: abs(params(ff.flows.Glow(shape, depth=4, hidden=(h, h))) - params(tar)),
        )
    glow = ff.flows.Glow(shape, depth=4, hidden=(hidden, hidden))
    randomized(tar), randomized(glow)
    x = torch.rand(args.batch, *shape)
    ops: dict[str, Callable[[], object]] = {
        "TarFlow log_prob": lambda: tar.log_prob(x),
        "Glow log_prob": lambda: glow.log_prob(x),
        "TarFlow sample (KV cache)": lambda: tar.sample(args.sample_batch),
        "TarFlow sample (uncached)": lambda: uncached(tar, args.sample_batch),
        "Glow sample": lambda: glow.sample(args.sample_batch),
    }
    with torch.no_grad():
        for fn in ops.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {k: [] for k in ops}
        for _ in range(args.repeats):
            for k, fn in ops.items():
                times[k].append(seconds(fn))

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    result: dict[str, object] = {
        "parameters": {"TarFlow": params(tar), "Glow": params(glow), "glow_hidden": hidden},
        "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "ratios": {
            "uncached / cached sampling": ratio(
                "TarFlow sample (uncached)", "TarFlow sample (KV cache)"
            ),
            "TarFlow / Glow log_prob": ratio("TarFlow log_prob", "Glow log_prob"),
            "TarFlow / Glow sample": ratio("TarFlow sample (KV cache)", "Glow sample"),
        },
    }
    p = result["parameters"]
    print(f"parameters: TarFlow {p['TarFlow']:,}, Glow {p['Glow']:,} (hidden {hidden})")  # type: ignore[index]
    print("| operation | median ms |\n|---|---|")
    for k, v in result["median_ms"].items():  # type: ignore[attr-defined]
        print(f"| {k} | {v:.1f} |")
    for k, v in result["ratios"].items():  # type: ignore[attr-defined]
        print(f"{k}: {v:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
