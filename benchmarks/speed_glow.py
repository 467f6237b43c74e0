"""The speed benchmark's image flow: Glow from the parts of nflows and normflows (zuko has
no image flows; flowforge's is ``ff.flows.Glow``, built in ``speed_models``)."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from speed_common import GLOW, Model, _IgnoreContext
from torch import Tensor, nn


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
