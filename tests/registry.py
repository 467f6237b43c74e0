"""The registry of every bijection: one line per bijection, checked by test_contract.py.

Each entry builds a bijection with random non-zero parameters (a zero-initialised last
layer would make round trips pass trivially) and says how to draw valid inputs. The
contract tests run every entry and its ``.inv``.

To cover a new bijection, add one line to ``REGISTRY``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

import flowforge as ff
from flowforge.core.bijection import Bijection

BOTH = frozenset({"forward", "inverse"})


@dataclass
class Case:
    """A bijection under test and the inputs it accepts.

    ``directions`` says which of ``forward`` (data -> latent) and ``inverse`` (latent -> data)
    the bijection has; the contract checks the missing one raises ``NotImplementedError``.
    ``latent`` draws valid inverse inputs when there is no forward to map data to latents.
    ``init`` runs after :func:`randomize` to put parameters in a branch worth covering.
    """

    bijection: Bijection
    context: int = 0
    sample: Callable[[int], Tensor] | None = None  # draws valid forward inputs, (n, *event)
    directions: frozenset[str] = BOTH
    latent: Callable[[int], Tensor] | None = None  # draws valid inverse inputs, (n, *latent)
    init: Callable[[Bijection], None] | None = None

    def draw(self, n: int) -> Tensor:
        if self.sample is not None:
            return self.sample(n)
        return torch.randn(n, *self.bijection.event_shape)

    def draw_latent(self, n: int) -> Tensor:
        if self.latent is not None:
            return self.latent(n)
        b = self.bijection
        return torch.randn(n, *b.forward_shape(b.event_shape))


def randomize(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Give every parameter random non-zero values, and flag data-initialised layers done."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, scale)
        for m in module.modules():
            if isinstance(m, ff.transforms.ActNorm):
                m.mark_initialized()
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.5)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return module


D = 5
C = 3
H = (16, 16)
T = ff.transforms


def _coupling(t: T.Transformer, mask: list[bool], context: int = 0) -> Bijection:
    na, nb = sum(mask), len(mask) - sum(mask)
    return T.Coupling(mask, t, ff.nn.MLP(na + context, nb * t.params_per_dim, H), context=context)


def _ma(t: T.Transformer, context: int = 0, order: list[int] | None = None) -> Bijection:
    return T.MaskedAutoregressive(
        t, ff.nn.MADE(D, t.params_per_dim, H, context=context, order=order)
    )


def _residual_coupling(t: T.Transformer, context: int = 0) -> Bijection:
    """A coupling whose network is a residual MLP (2 blocks of 2 tanh layers, dropout)."""
    net = ff.nn.ResidualMLP(3 + context, 2 * t.params_per_dim, H, 2, "tanh", dropout=0.2)
    return T.Coupling([True, False, True, False, True], t, net, context=context)


def _residual_ma(t: T.Transformer, context: int = 0, order: list[int] | None = None) -> Bijection:
    """An autoregressive layer on a masked residual MADE (2 blocks of 1 ELU layer, dropout)."""
    made = ff.nn.ResidualMADE(
        D,
        t.params_per_dim,
        (16,),
        2,
        context=context,
        order=order,
        activation="elu",
        dropout=0.2,
        save_order=True,
    )
    return T.MaskedAutoregressive(t, made)


#: Every conditioner option of the vector presets at once (dropout is off: cases are in eval).
OPTIONS = {"activation": "silu", "dropout": 0.2, "residual_blocks": 1, "permutation": "random"}


def _unit(n: int, shape: tuple[int, ...] = (D,)) -> Tensor:
    return torch.rand(n, *shape) * 0.98 + 0.01


def _bounds() -> Bijection:
    """Every kind of coordinate: a half-line each way, an interval, the line, a shifted one."""
    inf = float("inf")
    return T.Bounds(
        torch.tensor([0.0, -1.0, -inf, -inf, 2.0]), torch.tensor([inf, 1.0, 3.0, inf, inf])
    )


def _inside_bounds(n: int) -> Tensor:
    return _bounds().inverse(torch.randn(n, D) * 1.5)[0]


IMG = (2, 4, 4)


def _channel(
    t: T.Transformer, shape: tuple[int, int, int] = IMG, context: int = 0, flip: bool = False
) -> Bijection:
    c = shape[0]
    a = c - c // 2 if not flip else c // 2
    net = ff.nn.ConvNet(a + context, (c - a) * t.params_per_dim, hidden=(8, 8))
    return T.ChannelCoupling(shape, t, net, context=context, flip=flip)


def _checker(t: T.Transformer, context: int = 0, parity: int = 0) -> Bijection:
    net = ff.nn.ConvNet(IMG[0] + context, IMG[0] * t.params_per_dim, hidden=(8, 8))
    return T.CheckerboardCoupling(IMG, t, net, context=context, parity=parity)


def _spatial(kind: str) -> Bijection:
    """A coupling on IMG whose context is 2 feature maps of IMG's pixels (2 * 16 values)."""
    c = IMG[0]
    if kind == "channel":
        net = ff.nn.ConvNet(c - c // 2 + 2, (c // 2) * 2, hidden=(8, 8))
        return T.ChannelCoupling(IMG, T.Affine(), net, context=2 * 16, spatial=True)
    net = ff.nn.ConvNet(c + 2, c * 2, hidden=(8, 8))
    return T.CheckerboardCoupling(IMG, T.Affine(), net, context=2 * 16, parity=1, spatial=True)


def _multiscale(context: int = 0) -> Bijection:
    """Two levels on (1, 4, 4): squeeze, steps, split prior; squeeze, steps."""
    level0 = ff.Compose(
        [
            T.Squeeze((1, 4, 4)),
            T.ActNorm((4, 2, 2)),
            T.LUConv1x1((4, 2, 2)),
            _channel(T.SigmoidAffine(), (4, 2, 2), context),
            _channel(T.Affine(), (4, 2, 2), context),  # the split prior: factored | kept
        ]
    )
    level1 = ff.Compose(
        [T.Squeeze((2, 2, 2)), T.Conv1x1((8, 1, 1)), _channel(T.Additive(), (8, 1, 1), context)]
    )
    return T.Multiscale([level0, level1])


SEQ = (4, 8)  # a sequence event (C, T): a waveform squeezed into groups of 4 samples


def _wavenet(context: int = 0) -> Bijection:
    """WaveGlow's coupling on SEQ; with a context, ``context`` features per time step."""
    net = ff.nn.WaveNet(2, 2 * 2, hidden=6, layers=2, cond_channels=context)
    return T.ChannelCoupling(SEQ, T.Affine(), net, context=context * SEQ[1], spatial=bool(context))


def _frames() -> Bijection:
    """A coupling on SEQ seeing 3 frames of 2 features upsampled to (2 * 4, 8) (T = 24)."""
    up = ff.nn.FrameUpsample(features=2, frames=3, length=24, factor=3)
    inner = ff.Compose([T.Squeeze1d((1, 24), 3), T.ActNorm((3, 8))])
    net = ff.nn.WaveNet(2, 2, hidden=6, layers=2, cond_channels=2 * 3)
    coupling = T.ChannelCoupling((3, 8), T.Affine(), net, context=2 * 3 * 8, spatial=True)
    return T.EmbedContext(ff.Compose([inner, coupling]), up, context=2 * 3)


class _Estimate(torch.nn.Module):
    """A context's estimate of a SEQ event and its per-step features (random linear maps)."""

    def __init__(self) -> None:
        super().__init__()
        self.map = torch.nn.Linear(C, SEQ[0] * SEQ[1])
        self.embed = torch.nn.Linear(C, C * SEQ[1])

    def forward(self, c: Tensor) -> tuple[Tensor, Tensor]:
        return self.map(c).reshape(*c.shape[:-1], *SEQ), self.embed(c)


def _source_shift() -> Bijection:
    """WaveGlow's coupling on SEQ modelling the residual from a context's estimate."""
    return T.SourceShift(_wavenet(C), _Estimate(), context=C)


def _multiscale_1d() -> Bijection:
    """WaveGlow's early outputs on (1, 16): squeeze to (4, 4), a step, 1 channel out, a step."""
    level0 = ff.Compose([T.Squeeze1d((1, 16), 4), T.LUConv1x1((4, 4)), _wavenet_on((4, 4))])
    level1 = ff.Compose([T.Conv1x1((3, 4)), _wavenet_on((3, 4))])
    return T.Multiscale([level0, level1], split=[1])


def _wavenet_on(shape: tuple[int, int]) -> Bijection:
    c = shape[0]
    net = ff.nn.WaveNet(c - c // 2, 2 * (c // 2), hidden=4, layers=2)
    return T.ChannelCoupling(shape, T.Affine(), net)


class SamplingOnly(Bijection):
    """A bijection with its sampling direction only (the contract's direction-only case)."""

    def __init__(self, inner: Bijection) -> None:
        super().__init__(inner.event_shape)
        self.inner = inner

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.inner.inverse(z, context)


def _tarflow_layer(
    shape: tuple[int, ...], patch: int, context: int = 0, reverse: bool = False, shift: int = 0
) -> Bijection:
    tokens, size = T.transformer_autoregressive.token_layout(shape, patch)
    net = ff.nn.CausalTransformer(
        size, 2 * size, tokens, width=8, heads=2, layers=2, context=context
    )
    return T.TransformerAutoregressive(shape, net, patch, reverse, shift=shift)


def _planar(layer: T.Planar) -> Case:
    """A planar layer with inputs on both sides of its hyperplane: ``w.x + b`` alternates in
    sign, which is the sign of ``w.z + b`` too (every branch of the activation, both ways)."""

    def draw(n: int) -> Tensor:
        with torch.no_grad():
            p = layer.params()
            w, b = p["w"], p["b"]
            x = torch.randn(n, D, dtype=w.dtype)
            side = torch.tensor([(-1.0) ** i for i in range(n)], dtype=w.dtype)
            t = (0.2 + 2 * torch.rand(n, dtype=w.dtype)) * side  # w.x + b, |t| >= 0.2
            return x - ((x @ w) + b - t).unsqueeze(-1) * w / (w @ w)

    return Case(layer, sample=draw)


def _radial_beta(fraction: float) -> Callable[[Bijection], None]:
    """Set a radial layer's ``beta = fraction * alpha`` (> 0 expands, < 0 contracts)."""

    def init(b: Bijection) -> None:
        assert isinstance(b, T.Radial)
        p = b.params
        alpha = torch.nn.functional.softplus(p.raw[p.slot("alpha")])
        p.raw[p.slot("beta")] = torch.log(torch.expm1(alpha * (1 + fraction)))

    return init


REGISTRY: dict[str, Callable[[], Case]] = {
    "coupling-additive": lambda: Case(_coupling(T.Additive(), [True, True, True, False, False])),
    "coupling-affine": lambda: Case(_coupling(T.Affine(), [True, False, True, False, True])),
    "coupling-affine-context": lambda: Case(
        _coupling(T.Affine(), [False, True, False, True, True], C), C
    ),
    "coupling-spline": lambda: Case(
        _coupling(T.RationalQuadraticSpline(6, 3.0), [True, True, False, False, False])
    ),
    "coupling-spline-context": lambda: Case(
        _coupling(T.RationalQuadraticSpline(4, 2.0), [False, True, True, False, True], C), C
    ),
    "ar-additive": lambda: Case(_ma(T.Additive())),
    "ar-affine": lambda: Case(_ma(T.Affine())),
    "ar-affine-context-order": lambda: Case(_ma(T.Affine(), C, [3, 1, 5, 2, 4]), C),
    "ar-spline": lambda: Case(_ma(T.RationalQuadraticSpline(5, 2.0))),
    "ar-spline-context": lambda: Case(_ma(T.RationalQuadraticSpline(8, 3.0), C), C),
    "coupling-residual-affine-context": lambda: Case(_residual_coupling(T.Affine(), C), C),
    "coupling-residual-spline": lambda: Case(_residual_coupling(T.RationalQuadraticSpline(4, 3.0))),
    "ar-residual-affine-context-order": lambda: Case(
        _residual_ma(T.Affine(), C, [2, 5, 1, 4, 3]), C
    ),
    "ar-residual-spline": lambda: Case(_residual_ma(T.RationalQuadraticSpline(5, 2.0))),
    "reverse-permutation": lambda: Case(T.ReversePermutation(D)),
    "random-permutation": lambda: Case(T.RandomPermutation(D)),
    "lu-linear": lambda: Case(T.LULinear(D)),
    "actnorm": lambda: Case(T.ActNorm(D)),
    "actnorm-image": lambda: Case(T.ActNorm((2, 3, 4))),
    "batchnorm": lambda: Case(T.BatchNorm(D)),
    "batchnorm-image": lambda: Case(T.BatchNorm((3, 2, 2))),
    "logit": lambda: Case(T.Logit(0.05, D), sample=_unit),
    "bounds": lambda: Case(_bounds(), sample=_inside_bounds),
    "logit-image": lambda: Case(T.Logit(1e-6, (1, 3, 3)), sample=lambda n: _unit(n, (1, 3, 3))),
    "standardize": lambda: Case(T.Standardize(torch.randn(D), torch.rand(D) + 0.5)),
    "whiten": lambda: Case(
        T.Whiten(torch.tril(torch.randn(D, D), -1) * 0.5 + torch.diag(torch.rand(D) + 0.5))
    ),
    "compose": lambda: Case(ff.Compose([T.LULinear(D), _ma(T.Affine()), T.ReversePermutation(D)])),
    "reshape": lambda: Case(T.Reshape((2, 3, 2), (3, 4))),
    "squeeze": lambda: Case(T.Squeeze(IMG)),
    "squeeze-3": lambda: Case(T.Squeeze((1, 3, 6), factor=3)),
    "conv1x1": lambda: Case(T.Conv1x1((3, 2, 2))),
    "lu-conv1x1": lambda: Case(T.LUConv1x1((3, 2, 2))),
    "squeeze1d": lambda: Case(T.Squeeze1d((2, 6), factor=3)),
    "conv1x1-1d": lambda: Case(T.Conv1x1(SEQ)),
    "lu-conv1x1-1d": lambda: Case(T.LUConv1x1(SEQ)),
    "channel-wavenet-1d": lambda: Case(_wavenet()),
    "channel-wavenet-sequence-context": lambda: Case(_wavenet(C), C * SEQ[1]),
    "embed-context-frames": lambda: Case(_frames(), 2 * 3),
    "multiscale-1d": lambda: Case(_multiscale_1d()),
    "preset-waveglow": lambda: Case(
        ff.flows.WaveGlow((1, 16), group=4, depth=3, early_every=2, hidden=4, layers=2).bijection
    ),
    "preset-waveglow-vocoder-plain-conv": lambda: Case(
        ff.flows.WaveGlow(
            (1, 16), context=2 * 4, group=4, depth=2, hidden=4, layers=2, lu=False, frame_features=2
        ).bijection,
        2 * 4,
    ),
    "preset-waveglow-vocoder-anchored": lambda: Case(
        ff.flows.WaveGlow(
            (1, 16),
            context=2 * 4,
            group=4,
            depth=2,
            hidden=4,
            layers=2,
            frame_features=2,
            offsets=False,
            anchored=True,
        ).bijection,
        2 * 4,
    ),
    "source-shift": lambda: Case(_source_shift(), C),
    "preset-waveglow-vocoder-griffin-lim": lambda: Case(
        ff.flows.WaveGlow(
            (1, 64),
            context=4 * 2,
            frame_features=4,
            group=4,
            depth=2,
            hidden=4,
            layers=2,
            source="griffin-lim",
            sample_rate=8000,
            source_iters=2,
            source_refine=2,  # a learned refinement of the magnitudes (random in the tests)
        ).bijection,
        4 * 2,
    ),
    "channel-affine": lambda: Case(_channel(T.Affine())),
    "channel-sigmoid-affine-flip": lambda: Case(_channel(T.SigmoidAffine(), flip=True)),
    "channel-additive-odd": lambda: Case(_channel(T.Additive(), (3, 2, 2))),
    "channel-spline-context": lambda: Case(
        _channel(T.RationalQuadraticSpline(4, 3.0), context=C), C
    ),
    "checkerboard-affine": lambda: Case(_checker(T.Affine())),
    "checkerboard-sigmoid-context": lambda: Case(_checker(T.SigmoidAffine(), C, parity=1), C),
    "channel-spatial-context": lambda: Case(_spatial("channel"), 2 * 16),
    "checkerboard-spatial-context": lambda: Case(_spatial("checkerboard"), 2 * 16),
    "multiscale": lambda: Case(_multiscale()),
    "multiscale-context": lambda: Case(_multiscale(C), C),
    "compose-reshaping": lambda: Case(
        ff.Compose(
            [
                T.ActNorm((2, 3, 2)),
                T.Reshape((2, 3, 2), (12,)),
                T.LULinear(12),
                T.Reshape((12,), (3, 4)),
                T.ActNorm((3, 4)),
            ]
        )
    ),
    "preset-nice": lambda: Case(ff.flows.NICE(D, context=C, transforms=2, hidden=H).bijection, C),
    "preset-realnvp": lambda: Case(
        ff.flows.RealNVP(D, context=C, transforms=2, hidden=H).bijection, C
    ),
    "preset-maf": lambda: Case(ff.flows.MAF(D, context=C, transforms=2, hidden=H).bijection, C),
    "preset-iaf": lambda: Case(ff.flows.IAF(D, context=C, transforms=2, hidden=H).bijection, C),
    "preset-nsf": lambda: Case(
        ff.flows.NSF(D, context=C, transforms=2, bins=4, hidden=H).bijection, C
    ),
    "preset-glow": lambda: Case(
        ff.flows.Glow((1, 4, 4), context=C, levels=2, depth=1, hidden=(4, 4)).bijection, C
    ),
    "preset-glow-plain-conv": lambda: Case(
        ff.flows.Glow((2, 4, 4), levels=1, depth=2, hidden=(4, 4), lu=False).bijection
    ),
    "preset-multiscale-realnvp": lambda: Case(
        ff.flows.MultiscaleRealNVP(
            (1, 4, 4), context=C, levels=2, depth=1, hidden=(4, 4)
        ).bijection,
        C,
    ),
    "preset-tarflow": lambda: Case(
        ff.flows.TarFlow((1, 4, 4), context=C, blocks=2, layers=1, width=8, heads=2).bijection, C
    ),
    "preset-tarflow-local": lambda: Case(
        ff.flows.TarFlow(
            (1, 4, 6), context=C, blocks=2, layers=1, width=8, heads=2, shifted=True, local=True
        ).bijection,
        C,
    ),
    "preset-tarflow-vector-local": lambda: Case(
        ff.flows.TarFlow(
            features=6, patch=2, blocks=2, layers=1, width=8, heads=2, local=True
        ).bijection
    ),
    "preset-tarflow-relative": lambda: Case(
        ff.flows.TarFlow(
            (1, 4, 6), context=C, blocks=2, layers=1, width=8, heads=2, relative=True
        ).bijection,
        C,
    ),
    "preset-tarflow-vector": lambda: Case(
        ff.flows.TarFlow(features=6, patch=3, blocks=3, layers=1, width=8, heads=2).bijection
    ),
    "preset-nsf-coupling": lambda: Case(
        ff.flows.NSF(D, transforms=2, bins=4, hidden=H, coupling=True).bijection
    ),
    "preset-nice-options": lambda: Case(
        ff.flows.NICE(D, context=C, transforms=2, hidden=H, **OPTIONS).bijection, C
    ),
    "preset-realnvp-options": lambda: Case(
        ff.flows.RealNVP(D, context=C, transforms=3, hidden=H, **OPTIONS).bijection, C
    ),
    "preset-maf-options": lambda: Case(
        ff.flows.MAF(D, context=C, transforms=2, hidden=H, **OPTIONS).bijection, C
    ),
    "preset-iaf-options": lambda: Case(
        ff.flows.IAF(D, transforms=2, hidden=H, **OPTIONS).bijection
    ),
    "preset-nsf-options": lambda: Case(
        ff.flows.NSF(D, context=C, transforms=2, bins=4, hidden=H, **OPTIONS).bijection, C
    ),
    "preset-nsf-coupling-options": lambda: Case(
        ff.flows.NSF(D, transforms=3, bins=4, hidden=H, coupling=True, **OPTIONS).bijection
    ),
    "planar-tanh": lambda: _planar(T.Planar(D)),
    "planar-leaky-relu": lambda: _planar(T.Planar(D, activation="leaky_relu", slope=0.3)),
    "planar-context": lambda: Case(T.Planar(D, context=C, hidden=(8,)), C),
    "radial-expanding": lambda: Case(T.Radial(D), init=_radial_beta(1.5)),
    "radial-contracting": lambda: Case(T.Radial(D), init=_radial_beta(-0.8)),
    "radial-context": lambda: Case(T.Radial(D, context=C, hidden=(8,)), C),
    "sylvester-orthogonal": lambda: Case(T.Sylvester(D, "orthogonal", rank=3)),
    "sylvester-householder": lambda: Case(T.Sylvester(D, "householder", reflections=3)),
    "sylvester-triangular-flip": lambda: Case(T.Sylvester(D, "triangular", flip=True)),
    "sylvester-leaky-relu": lambda: Case(
        T.Sylvester(D, "triangular", activation="leaky_relu"),
        sample=lambda n: 2 * torch.randn(n, D),
    ),
    "sylvester-context": lambda: Case(T.Sylvester(D, rank=2, context=C, hidden=(8,)), C),
    "sampling-only": lambda: Case(SamplingOnly(T.Planar(D)), directions=frozenset({"inverse"})),
    "preset-planar": lambda: Case(
        ff.flows.Planar(D, context=C, transforms=2, hidden=H).bijection, C
    ),
    "preset-radial": lambda: Case(ff.flows.Radial(D, transforms=2).bijection),
    "preset-sylvester": lambda: Case(
        ff.flows.Sylvester(D, context=C, transforms=2, kind="householder", hidden=H).bijection, C
    ),
    "transformer-autoregressive-image": lambda: Case(_tarflow_layer((2, 4, 4), 2, C), C),
    "transformer-autoregressive-image-reverse": lambda: Case(
        _tarflow_layer((1, 4, 6), 2, reverse=True, shift=1)  # the preset's shifted layer
    ),
    "transformer-autoregressive-vector": lambda: Case(_tarflow_layer((6,), 2, C, True), C),
    "transformer-autoregressive-vector-1": lambda: Case(_tarflow_layer((D,), 1)),
    "cnf": lambda: Case(tight_cnf(ff.nn.ODENet(D, (8,)), D, time=0.5, rtol=1e-12, atol=1e-12)),
    "cnf-mlp-dynamics": lambda: Case(
        tight_cnf(
            ff.nn.TimeMLP(D, (8,), context=C), D, context=C, time=0.5, rtol=1e-12, atol=1e-12
        ),
        C,
    ),
    "cnf-context-learned-time": lambda: Case(
        tight_cnf(
            ff.nn.ODENet(D, (8,), context=C, activation="tanh"),
            D,
            context=C,
            time=0.5,
            learn_time=True,
            rtol=1e-12,
            atol=1e-12,
        ),
        C,
    ),
}


@contextmanager
def float64_default() -> Iterator[None]:
    """torch's default dtype float64 within the block (restored after)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def tight_cnf(*args: Any, **kwargs: Any) -> T.CNF:
    """A CNF with tolerances below float32's ``32 eps`` (3.8e-6): built under a float64 default
    dtype, since a CNF refuses tolerances its own dtype cannot resolve."""
    with float64_default():
        return T.CNF(*args, **kwargs)


def build(name: str, dtype: torch.dtype = torch.float64) -> Case:
    """Build a registry entry with random parameters, in eval mode, in ``dtype``."""
    case = REGISTRY[name]()
    randomize(case.bijection)
    if case.init is not None:
        with torch.no_grad():
            case.init(case.bijection)
    with warnings.catch_warnings():  # a tight CNF cast to float32 says it runs at the floor
        warnings.filterwarnings("ignore", "CNF: rtol=.* are below", UserWarning)
        case.bijection.to(dtype).eval()
    sample = case.sample
    case.sample = lambda n: (
        sample(n) if sample else torch.randn(n, *case.bijection.event_shape)
    ).to(dtype)
    latent, b = case.latent, case.bijection
    case.latent = lambda n: (
        latent(n) if latent else torch.randn(n, *b.forward_shape(b.event_shape))
    ).to(dtype)
    return case
