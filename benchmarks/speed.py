"""Side-by-side speed benchmark: flowforge against zuko, nflows and normflows.

The *same* architecture is built in every library: ``K = 5`` transforms, MADE / coupling
networks with hidden sizes ``(128, 128)`` (no residual blocks, no batch norm), reverse
orders or permutations between transforms, a standard normal base and float32. For every
flow and dimension the script times, interleaved round-robin across the libraries within
each repetition (so machine noise hits all of them alike), after a warm-up:

* ``train``: ``-log_prob(x).mean()``, backward and an Adam step (batch 512);
* ``log_prob``: the density of a batch of 8192 without gradient;
* ``sample``: 8192 samples without gradient.

``FFJORD`` is the continuous flow, on ``D = 2`` only (it ignores ``--dims``): one CNF with
a ``3 x 64`` dynamics network against zuko's CNF of the same size (see
``benchmarks/speed_cnf.py`` for how the two are matched); ``train`` and ``log_prob`` are
timed, with the batches above, and the function evaluations (NFE) of each call are printed
under the table. nflows and normflows have no continuous flows.

``Glow`` is the image flow: ``--image`` ``(C, H, W)`` (default ``(1, 8, 8)``; it ignores
``--dims``), ``--glow-levels`` levels of ``--glow-steps`` steps (ActNorm, LU 1x1
convolution, channel affine coupling with Glow's ``sigmoid(h + 2)`` scale and a conv net
``3x3 -> 1x1 -> 3x3`` of ``--glow-hidden`` channels), a learned split prior (an affine
coupling of the factored half given the kept half) after each level but the last, a
standard normal base. normflows and nflows build it from their Glow parts (see
:func:`build_normflows_glow`, :func:`build_nflows_glow`); zuko has no image flows. Its own
batches: ``--glow-train-batch`` (64) and ``--glow-batch`` (1024, log_prob and sample), on
standard normal images; each timed measurement lasts at least ``--glow-min-time`` seconds.

It prints medians, parameter counts (they must agree within a few percent, or the
comparison is void) and each peer's time divided by ours (``> 1``: we are faster), as the
median of the per-repetition ratios (the machine's speed drifts between repetitions; the
libraries of one repetition run seconds apart).
Options add peak memory (each library in its own subprocess), the achieved GFLOP/s of
the log_prob pass against a measured float32 matmul of the same shapes, and compiled
(``torch.compile``) timings.

Usage::

    python benchmarks/speed.py                      # full run (about 15-25 min on 2 cores)
    python benchmarks/speed.py --quick              # smoke check, about 1-2 min
    python benchmarks/speed.py --flows MAF NSF --dims 64 --memory --compile --json out.json
    python benchmarks/speed.py --flows Glow --repeats 5     # Glow on (1, 8, 8), about 1 min

Peers come from the ``bench`` extra: ``pip install flowforge[bench]``. A peer that is not
installed, or lacks a flow, is reported as ``n/a``.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import itertools
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


def _sibling(name: str) -> Any:
    """A module next to this file (this script is also loaded by path, not as a package)."""
    path = Path(__file__).resolve().with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"flowforge_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


speed_cnf = _sibling("speed_cnf")

LIBS = ("flowforge", "zuko", "nflows", "normflows")
FLOWS = ("MAF", "NSF", "RealNVP", "NICE")  # vector flows, one run per --dims entry
IMAGE_FLOWS = ("Glow",)  # image flows, one run on --image
CNF_FLOWS: tuple[str, ...] = speed_cnf.CNF_FLOWS  # continuous flows, one run on D = 2
TRANSFORMS = 5
HIDDEN = (128, 128)
BINS = 8
BOUND = 5.0
# Glow's size (set from --glow-levels/--glow-steps/--glow-hidden; passed to memory children).
GLOW = {"levels": 2, "steps": 8, "hidden": 64}
IMAGE = (1, 8, 8)

# A vector flow's dimension D, or an image flow's event shape (C, H, W).
Dim = int | tuple[int, ...]

# Why a peer has no entry for a flow (shown under the table).
NOT_AVAILABLE: dict[tuple[str, str], str] = {}
# Flows a peer lacks whatever is installed.
MISSING: dict[tuple[str, str], str] = {
    ("zuko", "Glow"): "zuko has no image flows (no squeeze, 1x1 convolution, conv coupling "
    "or multiscale factor-out); it models vectors only",
    ("nflows", "FFJORD"): "nflows has no continuous flows",
    ("normflows", "FFJORD"): "normflows has no continuous flows",
}


# --------------------------------------------------------------------------- models
@dataclass
class Model:
    """A flow of one library behind a common interface."""

    module: nn.Module
    log_prob: Callable[[Tensor], Tensor]
    sample: Callable[[int], Tensor]
    # Continuous flows: the function evaluations since the last call (see speed_cnf).
    nfe: Callable[[], int] | None = None


def available(lib: str) -> bool:
    """Whether ``lib`` can be imported."""
    return importlib.util.find_spec(lib) is not None


def _half_masks(features: int) -> tuple[int, int]:
    n_a = (features + 1) // 2
    return n_a, features - n_a


def build_flowforge(flow: str, d: Dim) -> Model:
    import flowforge as ff

    if flow in CNF_FLOWS:
        assert isinstance(d, int)
        c, nfe = speed_cnf.build_flowforge_cnf(d)
        return Model(c, c.log_prob, c.sample, nfe)
    if flow == "Glow":
        assert isinstance(d, tuple)
        g: Any = ff.flows.Glow(
            shape=d, levels=GLOW["levels"], steps=GLOW["steps"], hidden=GLOW["hidden"]
        )
        return Model(g, g.log_prob, g.sample)
    assert isinstance(d, int)
    h = HIDDEN
    if flow == "MAF":
        m: Any = ff.flows.MAF(features=d, transforms=TRANSFORMS, hidden=h)
    elif flow == "NSF":
        m = ff.flows.NSF(features=d, transforms=TRANSFORMS, bins=BINS, hidden=h, bound=BOUND)
    elif flow == "RealNVP":
        m = ff.flows.RealNVP(features=d, transforms=TRANSFORMS, hidden=h)
    elif flow == "NICE":
        m = ff.flows.NICE(features=d, transforms=TRANSFORMS, hidden=h)
    else:
        raise ValueError(flow)
    return Model(m, m.log_prob, m.sample)


def build_zuko(flow: str, d: Dim) -> Model:
    import zuko

    assert isinstance(d, int)
    if flow in CNF_FLOWS:
        c, nfe = speed_cnf.build_zuko_cnf(d)
        return Model(c, lambda x: c().log_prob(x), lambda n: c().sample((n,)), nfe)
    h = HIDDEN
    if flow == "MAF":
        m: Any = zuko.flows.MAF(d, transforms=TRANSFORMS, hidden_features=h)
    elif flow == "NSF":
        m = zuko.flows.NSF(d, bins=BINS, transforms=TRANSFORMS, hidden_features=h)
    elif flow == "RealNVP":
        # Alternating checkered masks play the role of the reverse permutations.
        m = zuko.flows.RealNVP(d, transforms=TRANSFORMS, hidden_features=h)
    elif flow == "NICE":
        # zuko's NICE class is affine; the additive variant is its coupling with a shift.
        from zuko.flows.coupling import GeneralCouplingTransform
        from zuko.transforms import AdditiveTransform

        layers = [
            GeneralCouplingTransform(
                d,
                mask=torch.arange(d) % 2 == i % 2,
                univariate=AdditiveTransform,
                shapes=((),),
                hidden_features=h,
            )
            for i in range(TRANSFORMS)
        ]
        base = zuko.lazy.UnconditionalDistribution(
            zuko.distributions.DiagNormal, torch.zeros(d), torch.ones(d), buffer=True
        )
        m = zuko.lazy.Flow(layers, base)
    else:
        raise ValueError(flow)
    return Model(m, lambda x: m().log_prob(x), lambda n: m().sample((n,)))


class _IgnoreContext(nn.Module):
    """nflows calls coupling networks as ``net(x, context)``; its MLP takes ``x`` only."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.net(x)


def _conv_net(in_channels: int, out_channels: int) -> nn.Module:
    """Glow's coupling network ``3x3 -> ReLU -> 1x1 -> ReLU -> 3x3`` (the peers' own nets
    have other shapes: nflows ships residual conv nets only)."""
    w = GLOW["hidden"]
    net = nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(w, w, 1),
        nn.ReLU(),
        nn.Conv2d(w, out_channels, 3, padding=1),
    )
    return net


def _glow_levels(shape: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """The squeezed shape ``(4C, H/2, W/2)`` at which each level's steps run."""
    c, h, w = shape
    out = []
    for _ in range(GLOW["levels"]):
        c, h, w = 4 * c, h // 2, w // 2
        out.append((c, h, w))
        c = c - c // 2  # the kept channels go on
    return out


def build_nflows_glow(shape: tuple[int, ...]) -> Model:
    """Glow from nflows' parts: per level a ``SqueezeTransform``, ``K`` x [``ActNorm``,
    ``OneByOneConvolution`` (LU), ``AffineCouplingTransform`` (its scale is Glow's
    ``sigmoid(h + 2) + 1e-3``)] and, but for the last level, the split prior as one more
    affine coupling of the factored half given the kept half; ``MultiscaleCompositeTransform``
    factors out the *first* half of the channels (flowforge the last: same cost)."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.base import CompositeTransform, MultiscaleCompositeTransform
    from nflows.transforms.conv import OneByOneConvolution
    from nflows.transforms.coupling import AffineCouplingTransform
    from nflows.transforms.normalization import ActNorm
    from nflows.transforms.reshape import SqueezeTransform

    def net(i: int, o: int) -> nn.Module:
        return _IgnoreContext(_conv_net(i, o))

    levels = _glow_levels(shape)
    ms = MultiscaleCompositeTransform(len(levels), split_dim=1)
    for i, sq in enumerate(levels):
        c = sq[0]
        step_mask = torch.where(torch.arange(c) < c - c // 2, -1, 1)  # > 0: transformed
        layers: list[Any] = [SqueezeTransform()]
        for _ in range(GLOW["steps"]):
            layers += [ActNorm(c), OneByOneConvolution(c), AffineCouplingTransform(step_mask, net)]
        if i < len(levels) - 1:
            prior_mask = torch.where(torch.arange(c) < c // 2, 1, -1)  # the factored half
            layers.append(AffineCouplingTransform(prior_mask, net))
        ms.add_transform(CompositeTransform(layers), sq)
    m = Flow(ms, StandardNormal([math.prod(shape)]))

    def sample(n: int) -> Tensor:
        with warnings.catch_warnings():  # its LU inverse calls torch.triangular_solve
            warnings.filterwarnings("ignore", message=".*triangular_solve is deprecated")
            return m.sample(n)

    return Model(m, m.log_prob, sample)


def build_nflows(flow: str, d: Dim) -> Model:
    if flow == "Glow":
        assert isinstance(d, tuple)
        return build_nflows_glow(d)
    assert isinstance(d, int)
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.nn.nets import MLP
    from nflows.transforms import autoregressive as ar
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import AdditiveCouplingTransform, AffineCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    hid = HIDDEN[0]
    blocks = len(HIDDEN) - 1  # MADE: initial layer + blocks + final layer
    layers: list[Any] = []
    for i in range(TRANSFORMS):
        if i > 0:
            layers.append(ReversePermutation(d))
        if flow == "MAF":
            layers.append(
                ar.MaskedAffineAutoregressiveTransform(
                    d, hid, num_blocks=blocks, use_residual_blocks=False
                )
            )
        elif flow == "NSF":
            layers.append(
                ar.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    d,
                    hid,
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    num_blocks=blocks,
                    use_residual_blocks=False,
                )
            )
        elif flow in ("RealNVP", "NICE"):
            n_a, _ = _half_masks(d)
            mask = torch.where(torch.arange(d) < n_a, -1, 1)  # > 0: transformed

            def net(i_: int, o_: int) -> nn.Module:
                return _IgnoreContext(MLP((i_,), (o_,), list(HIDDEN)))

            cls = AffineCouplingTransform if flow == "RealNVP" else AdditiveCouplingTransform
            layers.append(cls(mask, net))
        else:
            raise ValueError(flow)
    m = Flow(CompositeTransform(layers), StandardNormal([d]))
    return Model(m, m.log_prob, m.sample)


def build_normflows_glow(shape: tuple[int, ...]) -> Model:
    """Glow from normflows' parts, after its multiscale Glow example: ``MultiscaleFlow`` over
    levels of ``K`` x ``GlowBlock`` (ActNorm, LU ``Invertible1x1Conv``, channel
    ``AffineCouplingBlock`` with the ``sigmoid`` scale map and its ``ConvNet2d`` of kernels
    ``(3, 1, 3)``) and a ``Squeeze``, ``Merge`` between levels.

    Two changes to the example, so that it is the same model as ours: its learned bases
    (``GlowBase``, a mean and scale per channel, not conditioned on the kept half) become
    fixed standard normals (``DiagGaussian(trainable=False)``), and the split prior is one
    more ``AffineCouplingBlock`` (``exp`` scale map) of the factored half given the kept half,
    the last layer of each level but the last (in the density direction). normflows'
    levels run coarsest first in ``MultiscaleFlow`` (index 0 is the last level of the
    density direction), each level's flows in the sampling direction.
    """
    import normflows as nf

    w = GLOW["hidden"]
    levels = _glow_levels(shape)
    q0: list[Any] = []
    merges: list[Any] = []
    flows: list[list[Any]] = []
    for lvl in reversed(range(len(levels))):  # coarsest first
        c, h, wd = levels[lvl]
        last = lvl == len(levels) - 1
        fl: list[Any] = []
        if not last:  # the split prior: first in the sampling direction
            net = nf.nets.ConvNet2d([c - c // 2, w, w, 2 * (c // 2)], (3, 1, 3), 0.0, True)
            fl.append(nf.flows.AffineCouplingBlock(net, True, "exp", "channel"))
        fl += [
            nf.flows.GlowBlock(c, w, scale=True, scale_map="sigmoid", split_mode="channel")
            for _ in range(GLOW["steps"])
        ]
        fl.append(nf.flows.Squeeze())
        flows.append(fl)
        factored = (c, h, wd) if last else (c // 2, h, wd)
        q0.append(nf.distributions.DiagGaussian(factored, trainable=False))
        if not last:
            merges.append(nf.flows.Merge())
    m = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    return Model(m, lambda x: m.log_prob(x, None), lambda n: m.sample(n)[0])


def build_normflows(flow: str, d: Dim) -> Model:
    import normflows as nf

    if flow == "Glow":
        assert isinstance(d, tuple)
        return build_normflows_glow(d)
    assert isinstance(d, int)

    class Swap(nf.flows.Flow):
        """normflows' autoregressive layer is one pass when sampling (IAF-like); swapped,
        it is a MAF: one pass for the density, ``D`` to sample, like the other libraries."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, z: Tensor, context: Tensor | None = None) -> Any:
            return self.inner.inverse(z)  # type: ignore[operator]

        def inverse(self, z: Tensor, context: Tensor | None = None) -> Any:
            return self.inner(z)

    hid = HIDDEN[0]
    blocks = len(HIDDEN) - 1
    layers: list[Any] = []
    for i in range(TRANSFORMS):
        if i > 0:
            perm = nf.flows.Permute(d, mode="shuffle")
            perm.perm = torch.arange(d - 1, -1, -1)  # a reverse permutation
            perm.inv_perm = torch.arange(d - 1, -1, -1)
            layers.append(perm)
        if flow == "MAF":
            layers.append(
                Swap(
                    nf.flows.MaskedAffineAutoregressive(
                        d, hid, num_blocks=blocks, use_residual_blocks=False
                    )
                )
            )
        elif flow == "NSF":
            # The wrapper hard-codes residual blocks; swap in the same transform without.
            from normflows.flows.neural_spline.autoregressive import (
                MaskedPiecewiseRationalQuadraticAutoregressive,
            )

            layer = nf.flows.AutoregressiveRationalQuadraticSpline(
                d, blocks, hid, num_bins=BINS, tail_bound=BOUND
            )
            layer.mprqat = MaskedPiecewiseRationalQuadraticAutoregressive(
                d,
                hid,
                num_bins=BINS,
                tails="linear",
                tail_bound=BOUND,
                num_blocks=blocks,
                use_residual_blocks=False,
            )
            layers.append(layer)
        elif flow in ("RealNVP", "NICE"):
            n_a, n_b = _half_masks(d)
            scale = flow == "RealNVP"
            out = n_b * (2 if scale else 1)
            net = nf.nets.MLP([n_a, *HIDDEN, out], init_zeros=True)
            layers.append(nf.flows.AffineCouplingBlock(net, scale=scale, split_mode="channel"))
        else:
            raise ValueError(flow)
    m = nf.NormalizingFlow(nf.distributions.DiagGaussian(d, trainable=False), layers)
    # normflows samples return (x, log_q): the log-density comes with every sample.
    return Model(m, m.log_prob, lambda n: m.sample(n)[0])


BUILDERS: dict[str, Callable[[str, Dim], Model]] = {
    "flowforge": build_flowforge,
    "zuko": build_zuko,
    "nflows": build_nflows,
    "normflows": build_normflows,
}


def build(lib: str, flow: str, d: Dim, seed: int = 0) -> Model | None:
    """The model of ``lib`` for ``flow`` at dimension (or image shape) ``d`` (float32), or
    ``None``."""
    if not available(lib):
        NOT_AVAILABLE[(lib, flow)] = "not installed"
        return None
    if (lib, flow) in MISSING:
        NOT_AVAILABLE[(lib, flow)] = MISSING[(lib, flow)]
    if (lib, flow) in NOT_AVAILABLE:
        return None
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        # normflows' LU 1x1 convolution calls the deprecated torch.lu once per layer.
        warnings.filterwarnings("ignore", message=".*torch.lu is deprecated")
        model = BUILDERS[lib](flow, d)
    model.module.float()
    # Random non-zero last layers, so no library gets a shortcut from zero weights: every
    # all-zero weight matrix, and the zero entries of flat parameter vectors (flowforge's
    # MADE keeps its layers in one, the zero-initialised output layer included).
    with torch.no_grad():
        for p in model.module.parameters():
            if p.dim() > 1 and bool((p == 0).all()):
                p.normal_(0.0, 0.01)
            elif p.dim() == 1 and p.numel() > 4096:
                zero = p == 0
                p[zero] = torch.randn(int(zero.sum())) * 0.01
    return model


def n_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# ------------------------------------------------------------------------ workloads
def event_of(d: Dim) -> tuple[int, ...]:
    """The event shape of dimension ``D`` or image shape ``(C, H, W)``."""
    return (d,) if isinstance(d, int) else tuple(d)


def dim_label(d: Dim) -> str:
    """``D`` as a table cell, an image shape as ``CxHxW``."""
    return str(d) if isinstance(d, int) else "x".join(map(str, d))


def make_ops(
    model: Model, d: Dim, sizes: dict[str, int], compiled: bool = False
) -> dict[str, Callable[[], Any]]:
    """Closures for the timed operations of one model (standard normal inputs)."""
    gen = torch.Generator().manual_seed(1)
    event = event_of(d)
    x_train = torch.randn(sizes["train"], *event, generator=gen, dtype=torch.float32)
    x_lp = torch.randn(sizes["log_prob"], *event, generator=gen, dtype=torch.float32)
    opt = torch.optim.Adam(model.module.parameters(), lr=1e-4)

    def loss_fn(x: Tensor) -> Tensor:
        return -model.log_prob(x).mean()

    def fwd_bwd(x: Tensor) -> Tensor:
        loss = loss_fn(x)
        loss.backward()
        return loss

    lp = model.log_prob
    step_fn = fwd_bwd
    if compiled:
        lp = torch.compile(model.log_prob)
        step_fn = torch.compile(fwd_bwd)

    def train() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = step_fn(x_train)
        opt.step()
        return loss

    def log_prob() -> Tensor:
        with torch.no_grad():
            return lp(x_lp)

    def sample() -> Tensor:
        with torch.no_grad():
            return model.sample(sizes["sample"])

    ops: dict[str, Callable[[], Any]] = {"train": train, "log_prob": log_prob}
    if not compiled:
        ops["sample"] = sample
    return ops


def _timed(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def time_interleaved(
    ops: dict[str, Callable[[], Any]],
    repeats: int,
    min_time: float = 0.05,
    samples: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median seconds per call of each op, interleaved round-robin after a warm-up.

    Each measurement runs enough calls to last at least ``min_time`` seconds; the order
    of the libraries is shuffled in each repetition. ``samples``, if given, receives every
    repetition's time of each op (for paired ratios).
    """
    number = {}
    for name, fn in ops.items():
        fn()  # warm-up (and compilation)
        t = _timed(fn, 1)
        number[name] = max(1, math.ceil(min_time / max(t, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in ops}
    names = list(ops)
    rng = random.Random(0)
    for _ in range(repeats):
        rng.shuffle(names)
        for name in names:
            times[name].append(_timed(ops[name], number[name]))
    if samples is not None:
        samples.update(times)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratio(peer: list[float], ours: list[float]) -> float:
    """Median over repetitions of ``peer / ours`` timed in the same repetition.

    The machine's speed drifts between repetitions (other jobs); within one repetition the
    libraries run seconds apart, so per-repetition ratios cancel most of the drift that a
    ratio of the two medians keeps.
    """
    return statistics.median(p / o for p, o in zip(peer, ours, strict=True))


# ------------------------------------------------------------------ flops and peak
def layer_shapes(flow: str, d: int) -> list[tuple[int, int]]:
    """``(in, out)`` of every linear layer of one transform's network."""
    if flow in ("MAF", "NSF"):
        p = 2 if flow == "MAF" else 3 * BINS - 1
        sizes = [d, *HIDDEN, d * p]
    else:
        n_a, n_b = _half_masks(d)
        p = 2 if flow == "RealNVP" else 1
        sizes = [n_a, *HIDDEN, n_b * p]
    return list(itertools.pairwise(sizes))


def log_prob_flops(flow: str, d: int, batch: int) -> int:
    """Matmul FLOPs of one log_prob pass: ``2 * B * in * out`` per linear layer."""
    return TRANSFORMS * sum(2 * batch * i * o for i, o in layer_shapes(flow, d))


def matmul_seconds(flow: str, d: int, batch: int, repeats: int) -> float:
    """Measured time of float32 ``torch.mm`` of exactly the log_prob pass's shapes."""
    gen = torch.Generator().manual_seed(2)
    mats = [
        (torch.randn(batch, i, generator=gen), torch.randn(i, o, generator=gen))
        for i, o in layer_shapes(flow, d)
    ]

    def run() -> None:
        for a, b in mats:
            torch.mm(a, b)

    return TRANSFORMS * time_interleaved({"mm": run}, repeats)["mm"]


# ----------------------------------------------------------------------- memory
def _rss_kib(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def memory_child(lib: str, flow: str, d: Dim, op: str, sizes: dict[str, int]) -> float:
    """Peak resident memory (MiB) of one op above the resident memory just before it.

    Runs in a fresh process; the kernel's peak counter (VmHWM) is reset just before the
    op, after the model, optimizer state and inputs already exist, one op has run and the
    freed heap has been trimmed (Linux, glibc).
    """
    torch.set_num_threads(1)
    model = build(lib, flow, d)
    if model is None:
        return float("nan")
    ops = make_ops(model, d, sizes)
    ops[op]()  # the first call allocates optimizer state and lazy buffers
    import gc

    gc.collect()
    # Hand freed heap pages back to the kernel, so the op's peak is not hidden by pages that
    # the first call left resident.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _rss_kib("VmRSS")
    ops[op]()
    peak = _rss_kib("VmHWM")
    return (peak - before) / 1024.0


def memory_of(lib: str, flow: str, d: Dim, op: str, sizes: dict[str, int]) -> float:
    """Run :func:`memory_child` in a subprocess, so libraries do not share a heap."""
    spec = {"lib": lib, "flow": flow, "d": d, "op": op, "sizes": sizes, "glow": GLOW}
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------- report
@dataclass
class Results:
    """Everything measured, keyed by ``flow/D``."""

    meta: dict[str, Any] = field(default_factory=dict)
    params: dict[str, dict[str, int]] = field(default_factory=dict)
    times: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # key/op/lib
    compiled: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    # Per-repetition times (key/op/lib), for paired ratios; "compiled/" + key for compiled.
    samples: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    memory: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    flops: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _fmt_t(t: float | None) -> str:
    if t is None or math.isnan(t):
        return "n/a"
    return f"{t * 1e3:.2f}" if t < 10 else f"{t:.1f}s"


def _time_table(
    title: str,
    table: dict[str, dict[str, dict[str, float]]],
    libs: list[str],
    samples: dict[str, dict[str, dict[str, list[float]]]] | None = None,
    prefix: str = "",
) -> str:
    lines = [
        f"### {title} (median ms; ratio = fastest peer / flowforge, > 1 means we are faster;",
        "each peer's ratio is the median of its per-repetition ratios, see `paired_ratio`)",
        "",
        "| flow | D | op | " + " | ".join(libs) + " | fastest peer / ours |",
        "|---|---|---|" + "---|" * len(libs) + "---|",
    ]
    for key, ops in table.items():
        flow, d = key.split("/")
        for op, by_lib in ops.items():
            cells = [_fmt_t(by_lib.get(lib)) for lib in libs]
            reps = (samples or {}).get(prefix + key, {}).get(op, {})
            ratios: dict[str, float] = {}
            for lib in libs[1:]:
                if lib not in by_lib or "flowforge" not in by_lib or math.isnan(by_lib[lib]):
                    continue
                if lib in reps and "flowforge" in reps:
                    ratios[lib] = paired_ratio(reps[lib], reps["flowforge"])
                else:
                    ratios[lib] = by_lib[lib] / by_lib["flowforge"]
            best = f"{min(ratios.values()):.2f}x" if ratios else "n/a"
            peer_ratios = ", ".join(f"{lib} {r:.2f}" for lib, r in ratios.items())
            lines.append(
                f"| {flow} | {d} | {op} | " + " | ".join(cells) + f" | **{best}** ({peer_ratios}) |"
            )
    return "\n".join(lines)


def markdown(res: Results) -> str:
    """The results as markdown tables."""
    libs = [lib for lib in LIBS if lib in res.meta["libs"]]
    out = [
        "## flowforge speed benchmark",
        "",
        "Machine: "
        + ", ".join(
            f"{k}={v}"
            for k, v in res.meta.items()
            if k not in ("libs", "sizes", "image_sizes", "glow")
        ),
        f"Batch sizes: {res.meta['sizes']}. K={TRANSFORMS} transforms, hidden {HIDDEN}, float32.",
    ]
    if res.meta.get("quick"):
        out.insert(1, f"\n**{QUICK_NOTE}**\n")
    if any(key.split("/")[0] in CNF_FLOWS for key in res.params):
        out.append(
            f"FFJORD: D={speed_cnf.CNF_DIM}, one CNF, dynamics hidden {speed_cnf.CNF_HIDDEN}, "
            f"dopri5 rtol=atol={speed_cnf.TOL}, exact trace, batch sizes as above, float32."
        )
    if "glow" in res.meta:
        g = res.meta["glow"]
        out.append(
            f"Glow: image {tuple(g['image'])}, {g['levels']} levels x {g['steps']} steps, conv "
            f"width {g['hidden']}, batch sizes {res.meta['image_sizes']}, float32."
        )
    out += [
        "",
        "### Parameters (must match within a few percent)",
        "",
        "| flow | D | " + " | ".join(libs) + " |",
        "|---|---|" + "---|" * len(libs),
    ]
    for key, by_lib in res.params.items():
        flow, d = key.split("/")
        ref = by_lib.get("flowforge", 0)
        cells = []
        for lib in libs:
            n = by_lib.get(lib)
            if n is None:
                cells.append("n/a")
            else:
                dev = (n - ref) / ref * 100 if ref else 0.0
                flag = "" if abs(dev) < 3 else " (VOID)"
                cells.append(f"{n:,} ({dev:+.1f}%){flag}" if lib != "flowforge" else f"{n:,}")
        out.append(f"| {flow} | {d} | " + " | ".join(cells) + " |")
    out += ["", _time_table("Eager", res.times, libs, res.samples)]
    if res.compiled:
        out += ["", _time_table("torch.compile", res.compiled, libs, res.samples, "compiled/")]
    if res.memory:
        out += [
            "",
            "### Peak memory above baseline (MiB; each library in its own process)",
            "",
            "| flow | D | op | " + " | ".join(libs) + " |",
            "|---|---|---|" + "---|" * len(libs),
        ]
        for key, ops in res.memory.items():
            flow, d = key.split("/")
            for op, mem in ops.items():
                cells = [
                    "n/a" if math.isnan(mem.get(lib, math.nan)) else f"{mem[lib]:.1f}"
                    for lib in libs
                ]
                out.append(f"| {flow} | {d} | {op} | " + " | ".join(cells) + " |")
    if res.flops:
        out += [
            "",
            "### Achieved GFLOP/s (matmul FLOPs only; % of a float32 torch.mm of the same shapes)",
            "",
            "| flow | D | op | GFLOP | mm peak GFLOP/s | " + " | ".join(libs) + " |",
            "|---|---|---|---|---|" + "---|" * len(libs),
        ]
        for key, f in res.flops.items():
            flow, d = key.split("/")
            for op, gkey, pkey, table in (
                ("log_prob", "gflop", "peak", res.times),
                ("train", "train_gflop", "train_peak", res.times),
                ("log_prob (compiled)", "gflop", "peak", res.compiled),
                ("train (compiled)", "train_gflop", "train_peak", res.compiled),
            ):
                if key not in table:
                    continue
                cells = []
                for lib in libs:
                    t = table.get(key, {}).get(op.split(" ")[0], {}).get(lib)
                    if t is None or math.isnan(t):
                        cells.append("n/a")
                    else:
                        g = f[gkey] / t
                        cells.append(f"{g:.1f} ({100 * g / f[pkey]:.0f}%)")
                out.append(
                    f"| {flow} | {d} | {op} | {f[gkey]:.2f} | {f[pkey]:.1f} | "
                    + " | ".join(cells)
                    + " |"
                )
    if res.notes:
        out += ["", "Notes:"] + [f"- {k}: {v}" for k, v in res.notes.items()]
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> Results:
    """Run the benchmark described by ``args``."""
    torch.set_num_threads(args.threads)
    libs = [lib for lib in args.libs if lib == "flowforge" or available(lib)]
    for lib in args.libs:
        if lib not in libs:
            print(f"# {lib} is not installed: skipped", file=sys.stderr)
    sizes = {
        "train": args.train_batch,
        "log_prob": args.batch,
        "sample": args.sample_batch or args.batch,
    }
    image_sizes = {
        "train": args.glow_train_batch,
        "log_prob": args.glow_batch,
        "sample": args.glow_sample_batch or args.glow_batch,
    }
    GLOW.update(levels=args.glow_levels, steps=args.glow_steps, hidden=args.glow_hidden)
    cases: list[tuple[str, Dim]] = [(f, d) for d in args.dims for f in args.flows if f in FLOWS]
    cases += [(f, tuple(args.image)) for f in args.flows if f in IMAGE_FLOWS]
    cases += [(f, speed_cnf.CNF_DIM) for f in args.flows if f in CNF_FLOWS]
    res = Results()
    res.meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "repeats": args.repeats,
        "libs": libs,
        "sizes": sizes,
    }
    if args.quick:
        res.meta["quick"] = True
        print(f"# {QUICK_NOTE}", file=sys.stderr)
    if any(f in IMAGE_FLOWS for f, _ in cases):
        res.meta["image_sizes"] = image_sizes
        res.meta["glow"] = dict(GLOW, image=list(args.image))
    for lib in libs:
        if lib != "flowforge":
            res.meta[lib] = getattr(__import__(lib), "__version__", "?")
    print(f"# threads={torch.get_num_threads()} torch={torch.__version__}", file=sys.stderr)
    vector_sizes = sizes
    for flow, d in cases:
        image = flow in IMAGE_FLOWS
        sizes = image_sizes if image else vector_sizes
        min_time = args.glow_min_time if image else args.min_time
        key = f"{flow}/{dim_label(d)}"
        built = {lib: build(lib, flow, d) for lib in libs}
        models = {k: v for k, v in built.items() if v is not None}
        res.params[key] = {lib: n_params(m.module) for lib, m in models.items()}
        all_ops: dict[str, Callable[[], Any]] = {}
        for lib, m in models.items():
            for op, fn in make_ops(m, d, sizes).items():
                if op not in args.ops or (op == "sample" and args.no_sample):
                    continue
                all_ops[f"{lib}|{op}"] = fn
        t0 = time.perf_counter()
        reps: dict[str, list[float]] = {}
        med = time_interleaved(all_ops, args.repeats, min_time, samples=reps)
        res.times[key] = {}
        res.samples[key] = {}
        for name, t in med.items():
            lib, op = name.split("|")
            res.times[key].setdefault(op, {})[lib] = t
            res.samples[key].setdefault(op, {})[lib] = reps[name]
        print(f"# {key}: {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        cnf = flow in CNF_FLOWS
        if cnf:
            res.notes[f"NFE {flow}"] = _nfe_note(models, all_ops)
        if args.flops and (image or cnf):
            res.notes[f"flops {flow}"] = "--flops counts linear layers: vector flows only"
        elif args.flops:
            assert isinstance(d, int)
            gflop = log_prob_flops(flow, d, args.batch) / 1e9
            peak = gflop / matmul_seconds(flow, d, args.batch, args.repeats)
            # A training step: the forward pass and, per layer, two backward matmuls
            # (input and weight gradients) of the same size.
            train_gflop = 3 * log_prob_flops(flow, d, args.train_batch) / 1e9
            train_peak = (
                log_prob_flops(flow, d, args.train_batch)
                / 1e9
                / matmul_seconds(flow, d, args.train_batch, args.repeats)
            )
            res.flops[key] = {
                "gflop": gflop,
                "peak": peak,
                "train_gflop": train_gflop,
                "train_peak": train_peak,
            }
        if args.compile and cnf:
            res.notes[f"compile {flow}"] = "not compiled: the adaptive solvers branch on values"
        elif args.compile:
            cops: dict[str, Callable[[], Any]] = {}
            for lib in models:
                cm = build(lib, flow, d)
                assert cm is not None
                for op, fn in make_ops(cm, d, sizes, compiled=True).items():
                    cops[f"{lib}|{op}"] = fn
            creps: dict[str, list[float]] = {}
            cmed = time_interleaved(cops, args.repeats, min_time, samples=creps)
            res.compiled[key] = {}
            res.samples["compiled/" + key] = {}
            for name, t in cmed.items():
                lib, op = name.split("|")
                res.compiled[key].setdefault(op, {})[lib] = t
                res.samples["compiled/" + key].setdefault(op, {})[lib] = creps[name]
            torch._dynamo.reset()
        if args.memory:
            res.memory[key] = {
                op: {lib: memory_of(lib, flow, d, op, sizes) for lib in models}
                for op in ("log_prob", "train")
            }
    for (lib, flow), why in NOT_AVAILABLE.items():
        res.notes[f"{lib} {flow}"] = why
    return res


QUICK_NOTE = (
    "--quick: a smoke run at small sizes that checks the machinery, not a comparison; "
    "run without --quick for numbers"
)


def _nfe_note(models: dict[str, Model], ops: dict[str, Callable[[], Any]]) -> str:
    """The function evaluations of one call of each timed op, per library."""
    parts = []
    for name, fn in ops.items():
        lib, op = name.split("|")
        counter = models[lib].nfe
        if counter is not None:
            parts.append(f"{lib} {op} {speed_cnf.measure_nfe(fn, counter)}")
    return "function evaluations per call: " + ", ".join(parts)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--flows",
        nargs="+",
        default=[*FLOWS, *IMAGE_FLOWS, *CNF_FLOWS],
        choices=FLOWS + IMAGE_FLOWS + CNF_FLOWS,
    )
    p.add_argument("--dims", nargs="+", type=int, default=[8, 64])
    p.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    p.add_argument("--repeats", type=int, default=7, help="timed repetitions (median)")
    p.add_argument("--batch", type=int, default=8192, help="log_prob and sample batch")
    p.add_argument("--train-batch", type=int, default=512)
    p.add_argument("--sample-batch", type=int, default=None, help="default: --batch")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is the stable choice on a shared machine)",
    )
    p.add_argument(
        "--min-time", type=float, default=0.05, help="seconds per timed measurement (at least)"
    )
    g = p.add_argument_group("Glow (the image flow; it ignores --dims and the batches above)")
    g.add_argument("--image", nargs=3, type=int, default=list(IMAGE), metavar=("C", "H", "W"))
    g.add_argument("--glow-levels", type=int, default=GLOW["levels"])
    g.add_argument("--glow-steps", type=int, default=GLOW["steps"], help="steps per level K")
    g.add_argument("--glow-hidden", type=int, default=GLOW["hidden"], help="conv net width")
    g.add_argument("--glow-train-batch", type=int, default=64)
    g.add_argument("--glow-batch", type=int, default=1024, help="log_prob and sample batch")
    g.add_argument("--glow-sample-batch", type=int, default=None, help="default: --glow-batch")
    g.add_argument(
        "--glow-min-time",
        type=float,
        default=1.0,
        help="seconds per timed Glow measurement (a Glow call lasts 10-300 ms)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run, not a comparison: D=8, small batches, 3 repeats (Glow: 0.2 s each)",
    )
    p.add_argument("--no-sample", action="store_true", help="skip sampling")
    p.add_argument("--ops", nargs="+", default=["train", "log_prob", "sample"])
    p.add_argument("--memory", action="store_true", help="peak memory, one process each")
    p.add_argument("--flops", action="store_true", help="GFLOP/s against matmul peak")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    p.add_argument("--markdown", metavar="OUT", help="also write the tables to a file")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.dims = [8]
        args.repeats = min(args.repeats, 3)
        args.batch = min(args.batch, 1024)
        args.train_batch = min(args.train_batch, 256)
        args.sample_batch = min(args.sample_batch or args.batch, 256)
        args.glow_batch = min(args.glow_batch, 256)
        args.glow_train_batch = min(args.glow_train_batch, 32)
        args.glow_min_time = min(args.glow_min_time, 0.2)
    return args


def main(argv: list[str] | None = None) -> Results | None:
    """Entry point."""
    args = parse_args(argv)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        GLOW.update(spec["glow"])
        d = spec["d"] if isinstance(spec["d"], int) else tuple(spec["d"])
        print(memory_child(spec["lib"], spec["flow"], d, spec["op"], spec["sizes"]))
        return None
    res = run(args)
    text = markdown(res)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.__dict__, f, indent=1)
    return res


if __name__ == "__main__":
    main()
