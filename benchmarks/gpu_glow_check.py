"""Glow on CIFAR-10-shaped random data: a training step in float32 and in bf16 autocast.

The issue's GPU check: ``ff.flows.Glow(shape=(3, 32, 32), levels=3, steps=32, hidden=512)``
behind a ``Logit`` pre-transform, on uniformly dequantized random 8-bit images. For each
precision it runs ``--warmup`` untimed and ``--steps`` timed training steps (forward, backward,
Adam step), and prints the median step time, the peak accelerator memory of that precision
(``torch.cuda.max_memory_allocated``, reset between them; the process's peak RSS on a CPU),
the bits/dim of the batch and the relative difference of bf16's loss from float32's at the
same weights. Both precisions start from the same weights (ActNorm initialised once, in
float32, before either), so their losses compare.

Run on a GPU machine: ``python benchmarks/gpu_glow_check.py`` (about a minute on one H200;
``--json`` for one JSON line). ``--tiny`` shrinks it (shape (3, 8, 8), 2 steps per level,
width 8, batch 4) so that it runs on a CPU in seconds (tests/test_gpu_glow_check.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

import flowforge as ff


def build(shape: tuple[int, int, int], levels: int, steps: int, hidden: int) -> ff.Flow:
    """``Logit(0.05)`` then Glow: a density of ``u`` in ``[0, 1)^(C, H, W)``."""
    glow = ff.flows.Glow(shape=shape, levels=levels, depth=steps, hidden=(hidden, hidden))
    return ff.Flow(ff.Compose([ff.transforms.Logit(0.05, shape), glow.bijection]), glow.base)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_precision(
    flow: ff.Flow, batch: torch.Tensor, precision: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Train a copy of ``flow`` for warmup + steps steps; times, memory, the first loss."""
    device = batch.device
    model = copy.deepcopy(flow)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    dim = batch[0].numel()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
            loss = -model.log_prob(batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(float(loss.detach()))
    if not all(math.isfinite(v) for v in losses):
        raise FloatingPointError(f"{precision}: a non-finite loss in {losses}")
    bpd = (losses[0] + dim * math.log(256)) / (dim * math.log(2))
    return {
        "precision": precision,
        "step_ms": 1e3 * statistics.median(times),
        "peak_mib": _peak_mib(device),
        "first_loss": losses[0],
        "first_bpd": bpd,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a CPU-sized model (for tests)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--flow-steps", type=int, default=32, help="steps of flow per level")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per precision")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    shape = (3, 32, 32)
    if args.tiny:
        shape, args.flow_steps, args.hidden, args.batch = (3, 8, 8), 2, 8, 4
        args.warmup, args.steps = 1, 2
    name = args.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    torch.manual_seed(0)
    flow = build(shape, args.levels, args.flow_steps, args.hidden).to(device)
    levels = torch.randint(0, 256, (args.batch, *shape), device=device).float()
    batch = (levels + torch.rand_like(levels)) / 256  # uniformly dequantized 8-bit images
    with torch.no_grad():
        flow.log_prob(batch)  # ActNorm's data initialisation, once, in float32
    params = sum(p.numel() for p in flow.parameters())
    rows = [run_precision(flow, batch, p, args) for p in ("float32", "bf16")]
    rel = abs(rows[1]["first_loss"] - rows[0]["first_loss"]) / abs(rows[0]["first_loss"])
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shape": list(shape),
        "levels": args.levels,
        "steps": args.flow_steps,
        "hidden": args.hidden,
        "batch": args.batch,
        "params": params,
        "bf16_loss_rel_diff": rel,
        "torch": torch.__version__,
    }
    if args.json:
        print(json.dumps({**info, "rows": rows}))
    else:
        print(" ".join(f"{k}={v}" for k, v in info.items()))
        print("| precision | step ms | peak MiB | bits/dim (first batch) |")
        print("|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['precision']} | {r['step_ms']:.1f} | {r['peak_mib']:.0f} | "
                f"{r['first_bpd']:.4f} |"
            )
        print(f"bf16 / float32 step time: {rows[1]['step_ms'] / rows[0]['step_ms']:.3f}")
    sys.stdout.flush()
    return [{**info, **r} for r in rows]


if __name__ == "__main__":
    main()
