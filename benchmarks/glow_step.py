"""The digits Glow's training step on the CPU: Adam variants and LUConv1x1's output layout.

The command line's digits Glow (``Logit(1e-3)``, Glow levels 2, steps 4, width 64; batch 64,
one thread). Every variant is a copy of the same model; one round runs each variant's step
once on the same batch, in a rotating order, and the reported ratio is the median over rounds
of the per-round ratio (interleaved, so load on the machine hits every variant alike).

- ``adam``: ``torch.optim.Adam`` as the training loop builds it (the per-tensor loop on a
  CPU), with ``foreach=True`` and with ``fused=True``; first the parameters after 20 steps
  of identical gradients against the current optimizer, then step and ``opt.step()`` times.
- ``layout``: LUConv1x1 as it is (a channels-last view), with a ``.contiguous()`` NCHW copy,
  and as ``conv2d`` with the assembled weight.

Run: ``python benchmarks/glow_step.py --what both --rounds 60``; results in
``benchmarks/results/glow_step.md``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F

import flowforge as ff
from flowforge.core.bijection import batch_shape_of
from flowforge.data import dequantize
from flowforge.data.sklearn_sets import load_sklearn_dataset

SHAPE = (1, 8, 8)


def digits_glow() -> ff.Flow:
    torch.manual_seed(0)
    glow = ff.flows.Glow(shape=SHAPE, levels=2, depth=4, hidden=(64, 64))
    return ff.Flow(ff.Compose([ff.transforms.Logit(1e-3, SHAPE), glow.bijection]), glow.base)


def interleave(
    models: dict[str, ff.Flow],
    make_opt: Callable[[str, ff.Flow], torch.optim.Optimizer],
    rounds: int,
) -> dict[str, tuple[list[float], list[float]]]:
    """Per variant, (step times, opt.step times) over ``rounds`` rounds after 5 warmup ones."""
    data = load_sklearn_dataset("digits", 0).train
    opts = {k: make_opt(k, m) for k, m in models.items()}
    keys = list(models)
    out: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in keys}
    gen = torch.Generator().manual_seed(2)
    for r in range(rounds + 5):
        batch = dequantize(data[torch.randint(0, data.shape[0], (64,), generator=gen)], 17)
        for k in keys[r % len(keys) :] + keys[: r % len(keys)]:
            t0 = time.perf_counter()
            loss = -models[k].log_prob(batch).mean()
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            t1 = time.perf_counter()
            opts[k].step()
            t2 = time.perf_counter()
            if r >= 5:
                out[k][0].append(t2 - t0)
                out[k][1].append(t2 - t1)
    return out


def report(times: dict[str, tuple[list[float], list[float]]], ref: str) -> None:
    for k, (step, opt) in times.items():
        ratio = statistics.median(a / b for a, b in zip(step, times[ref][0], strict=True))
        print(
            f"| {k} | {1e3 * statistics.median(step):.1f} | {1e3 * statistics.median(opt):.2f} "
            f"| {ratio:.3f} |"
        )


def adam(rounds: int) -> None:
    flow = digits_glow()
    variants: dict[str, dict[str, bool]] = {"current": {}, "foreach": {"foreach": True}}
    variants["fused"] = {"fused": True}
    params = [p for p in flow.parameters() if p.requires_grad]
    print(f"Adam: {len(params)} tensors, {sum(p.numel() for p in params)} parameters")
    models = {k: copy.deepcopy(flow) for k in variants}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-3, **variants[k]) for k, m in models.items()}
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=gen) for p in params]
        for k, m in models.items():
            for p, g in zip(m.parameters(), grads, strict=True):
                p.grad = g.clone()
            opts[k].step()
    for k in ("foreach", "fused"):
        pairs = zip(models["current"].parameters(), models[k].parameters(), strict=True)
        diff = max(float((a - b).detach().abs().max()) for a, b in pairs)
        print(f"{k}: max |parameter - current's| after 20 steps: {diff:.3g}")
    times = interleave(
        {k: copy.deepcopy(flow) for k in variants},
        lambda k, m: torch.optim.Adam(m.parameters(), lr=1e-3, **variants[k]),
        rounds,
    )
    print("| Adam | step ms | opt.step ms | step / current |\n|---|---|---|---|")
    report(times, "current")


def _contiguous(self, x, fn):  # type: ignore[no-untyped-def]
    batch = batch_shape_of(x, self.event_shape)
    y, ladj = getattr(self.linear, fn)(x.movedim(-3, -1))
    return y.movedim(-1, -3).contiguous(), ladj.flatten(len(batch)).sum(-1)


def _conv2d(self, x, context=None):  # type: ignore[no-untyped-def]
    batch = batch_shape_of(x, self.event_shape)
    c, h, w = self.event_shape
    lin = self.linear
    z = F.conv2d(x.reshape(-1, c, h, w), lin.weight()[:, :, None, None], lin.bias)
    return z.reshape(x.shape), (lin.log_diag.sum() * (h * w)).expand(batch).to(x.dtype)


def layout(rounds: int) -> None:
    flow = digits_glow()
    models = {}
    for name, patch in (("channels-last", None), ("contiguous", ("_pixels", _contiguous))):
        models[name] = copy.deepcopy(flow)
        for mod in models[name].modules():
            if isinstance(mod, ff.transforms.LUConv1x1) and patch is not None:
                setattr(mod, patch[0], types.MethodType(patch[1], mod))
    models["conv2d"] = copy.deepcopy(flow)
    for mod in models["conv2d"].modules():
        if isinstance(mod, ff.transforms.LUConv1x1):
            mod.forward = types.MethodType(_conv2d, mod)  # type: ignore[method-assign]
    x = dequantize(load_sklearn_dataset("digits", 0).train[:64], 17)
    ref = models["channels-last"].log_prob(x)
    for k, m in models.items():
        print(
            f"{k}: max |log_prob - channels-last's| {float((m.log_prob(x) - ref).abs().max()):.3g}"
        )
    times = interleave(
        models, lambda k, m: torch.optim.Adam(m.parameters(), lr=1e-3, fused=True), rounds
    )
    print("| LUConv1x1 output | step ms | opt.step ms | step / channels-last |\n|---|---|---|---|")
    report(times, "channels-last")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--what", choices=("adam", "layout", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what in ("adam", "both"):
        adam(args.rounds)
    if args.what in ("layout", "both"):
        layout(args.rounds)


if __name__ == "__main__":
    main()
