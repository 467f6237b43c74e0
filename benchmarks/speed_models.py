"""The speed benchmark's models: the same flows built in flowforge, zuko, nflows and
normflows (vector flows here, Glow in ``speed_glow``, FFJORD in ``speed_cnf``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import speed_cnf
import torch
from speed_common import (
    BINS,
    BOUND,
    CNF_FLOWS,
    GLOW,
    HIDDEN,
    MISSING,
    NOT_AVAILABLE,
    TRANSFORMS,
    Dim,
    Model,
    _half_masks,
    _IgnoreContext,
    available,
)
from speed_glow import build_nflows_glow, build_normflows_glow
from torch import Tensor, nn


def build_flowforge(flow: str, d: Dim) -> Model:
    import flowforge as ff

    if flow in CNF_FLOWS:
        assert isinstance(d, int)
        c, nfe = speed_cnf.build_flowforge_cnf(d)
        return Model(c, c.log_prob, c.sample, nfe)
    if flow == "Glow":
        assert isinstance(d, tuple)
        g: Any = ff.flows.Glow(
            shape=d, levels=GLOW["levels"], depth=GLOW["steps"], hidden=(GLOW["hidden"],) * 2
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
