"""WaveGlow: a waveform squeezed into groups, 1x1 convolutions and WaveNet-like couplings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowforge.core.bijection import Bijection, Compose
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows.arguments import conv_width, renamed_steps
from flowforge.nn.griffin_lim import MelGriffinLim
from flowforge.nn.wavenet import AnchoredOutput, CentredOutput, FrameUpsample, WaveNet
from flowforge.transforms.affine import Affine
from flowforge.transforms.conv1x1 import Conv1x1, LUConv1x1
from flowforge.transforms.embed_context import EmbedContext
from flowforge.transforms.image_coupling import ChannelCoupling
from flowforge.transforms.multiscale import Multiscale
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.reshape import Squeeze1d
from flowforge.transforms.source_shift import SourceShift

#: The deterministic estimates a vocoder's flow can be centred on (``source=``).
SOURCES = ("none", "griffin-lim")


def _check(
    shape: Sequence[int],
    context: int,
    group: int,
    steps: int,
    every: int,
    early: int,
    frame_features: int,
    source: str,
    sample_rate: int,
) -> tuple[int, int]:
    dims = tuple(int(s) for s in shape)
    if len(dims) != 2:
        raise ValueError(f"WaveGlow: expected shape=(C, T), got {tuple(shape)!r}")
    c, t = dims
    if group < 2 or t % group:
        raise ValueError(f"WaveGlow: expected group >= 2 dividing the length {t}, got {group}")
    outs = (steps - 1) // every if every > 0 else 0
    if every < 1 or early < 0 or c * group - outs * early < 2:  # a coupling needs 2 channels
        raise ValueError(
            f"WaveGlow: {outs} early outputs of {early} channels leave fewer than 2 of the "
            f"{c * group} squeezed channels; lower early_size or raise group"
        )
    frames = context // frame_features if frame_features > 0 else 0
    if source not in SOURCES or (source != "none" and (not context or sample_rate < 1)):
        raise ValueError(
            f"WaveGlow: source is one of {SOURCES}, an estimate from the mel frames that needs "
            f"context > 0 and sample_rate > 0; got source={source!r}, context={context}, "
            f"sample_rate={sample_rate}"
        )
    if context and (frame_features < 1 or context % frame_features or t % frames):
        raise ValueError(
            f"WaveGlow: a context of {context} values is frame_features={frame_features} "
            f"features per frame times a number of frames that divides the length {t}"
        )
    return c, t


class _Estimate(nn.Module):
    """Mel frames to Griffin-Lim's waveform ``(*, C, T)`` and the couplings' per-step context:
    the upsampled frames and the waveform's squeezed samples, flattened channel-major. With
    ``envelope > 0`` also the scale of the residual: the estimate's local RMS (a Hann window
    of ``2 hop + 1`` samples) plus ``envelope``."""

    window: Tensor

    def __init__(
        self, source: nn.Module, up: FrameUpsample, squeeze: Squeeze1d, envelope: float, hop: int
    ) -> None:
        super().__init__()
        self.source, self.up, self.squeeze = source, up, squeeze
        self.envelope = float(envelope)
        w = torch.hann_window(2 * hop + 3)[1:-1]  # 2 hop + 1 taps, none zero
        self.register_buffer("window", (w / w.sum()).reshape(1, 1, -1), persistent=False)

    def scale(self, s: Tensor) -> Tensor:
        """The residual's scale ``(*, C, T)`` of estimates ``s``: local RMS plus the floor."""
        flat = s.reshape(-1, 1, s.shape[-1])
        power = torch.nn.functional.conv1d(
            flat * flat, self.window.to(s.dtype), padding=self.window.shape[-1] // 2
        )
        return (power.clamp_min(0).sqrt() + self.envelope).reshape(s.shape)

    def forward(self, c: Tensor) -> tuple[Tensor, ...]:
        s = self.source(c)  # (*, C, T)
        grouped = self.squeeze.forward_value(s).flatten(-2)  # (*, C g T / g)
        e = torch.cat([self.up(c), grouped.to(c.dtype)], dim=-1)
        return (s, e) if self.envelope <= 0 else (s, e, self.scale(s))


class _ScaleNorm(ActNorm):
    """ActNorm whose ``loc`` stays 0 (no gradient, not set from data): only a per-channel
    scale, so the flow adds no per-channel offset to a residual known to have mean 0."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__(shape)
        self.loc.requires_grad_(False)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        super()._initialize(x)
        self.loc.zero_()


def _conv(shape: tuple[int, int], lu: bool, offsets: bool) -> Bijection:
    """The step's 1x1 convolution; without ``offsets`` the LU one's bias stays 0."""
    if not lu:
        return Conv1x1(shape)
    conv = LUConv1x1(shape)
    if not offsets:
        conv.linear.bias.requires_grad_(False)
    return conv


class WaveGlow(Preset):
    """WaveGlow for sequences ``(C, T)`` (a mono waveform: ``(1, T)``), optionally a vocoder.

    The waveform is squeezed into groups of ``group`` samples (``(C g, T / g)``), then
    ``depth`` steps of flow, each an ActNorm (Glow's; not in WaveGlow, it makes a short CPU
    run start at unit scale), an invertible 1x1 convolution over the groups (LU-decomposed
    unless ``lu=False``: a free weight whose log-determinant is a float64 ``slogdet``) and an
    affine coupling whose network is a :class:`~flowforge.nn.WaveNet` (dilated convolutions,
    gated tanh-sigmoid units, residual and skip connections, zero-initialised output). After
    every ``early_every`` steps, ``early_size`` channels leave for the latent (WaveGlow's early
    outputs, :class:`~flowforge.transforms.Multiscale`). The latent is a vector of ``C T``
    values, the base a standard normal (sample at a temperature ``sigma < 1`` for audio).

    Conditioned (``context > 0``), the context is a flattened sequence of feature frames
    ``(F, frames)`` (a mel spectrogram, ``F = frame_features``), upsampled to the sample rate
    (:class:`~flowforge.nn.FrameUpsample`, ``T / frames`` samples per frame) and fed to every
    layer of every WaveNet through its own 1x1 convolution.

    With ``source="griffin-lim"`` the vocoder is centred on a deterministic waveform estimate
    from the mel frames, Griffin-Lim's (:class:`~flowforge.nn.MelGriffinLim`, ``source_iters``
    rounds; the context in flowforge's mel units, :func:`~flowforge.data.audio.mel_features`):
    the flow models the residual ``x - s(mel)`` (:class:`~flowforge.transforms.SourceShift`),
    its WaveNets see the estimate's samples beside the mel, and ``p(x | mel)`` stays exact
    because the estimate is a function of the mel only. Sampled at a low temperature it
    returns the estimate plus the flow's learned correction. ``source_refine`` adds a small
    network that refines the estimate's STFT magnitudes before Griffin-Lim; it is fitted by a
    spectral loss (:meth:`~flowforge.nn.MelGriffinLim.spectral_loss`), not by the likelihood,
    and the density stays exact for any value of its weights. ``source_envelope > 0`` divides
    the residual by the estimate's local RMS plus that floor (a deterministic scale, so the
    density stays exact): the flow then models the residual relative to the expected loudness,
    and its errors shrink in quiet frames with the audio instead of leaving a floor there.

    Args:
        shape: the event shape ``(C, T)``; ``T`` divisible by ``group``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        group: samples per group ``g`` (the squeeze).
        depth: number of flow steps per level.
        early_every: steps of flow between two early outputs.
        early_size: channels that leave at each early output.
        hidden: residual channels of each WaveNet (a number).
        layers: dilated layers of each WaveNet (dilations ``1, 2, ..., 2^(layers-1)``).
        kernel: kernel size of the dilated convolutions.
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        lu: LU-decomposed 1x1 convolutions (``False``: a free weight, ``slogdet`` in float64).
        frame_features: features per frame ``F`` of the context (mel bands).
        source: ``"none"`` or ``"griffin-lim"`` (a vocoder centred on Griffin-Lim's waveform).
        sample_rate: the audio's sample rate in Hz (the source's mel filterbank).
        source_iters: Griffin-Lim rounds of the source.
        source_nnls: the source's mel inversion, ``"accelerated"`` or ``"projected"`` (the
            runs saved before the accelerated one load with it).
        source_refine: channels of the source's learned magnitude refinement (0: none), fitted
            to the training waveforms by a spectral loss before the flow trains
            (``flowforge train`` does it) and fixed while it does.
        source_envelope: the floor added to the estimate's local RMS by which the residual is
            divided (0: the residual itself).
        offsets: the ActNorms and the LU 1x1 convolutions have learned per-channel offsets
            (``False``: both fixed at 0, so the inverse at ``z = 0`` has no constant pattern
            per sample phase; a vocoder's residual has mean 0).
        centre_shift: each coupling's shifts have their mean over time removed
            (:class:`~flowforge.nn.CentredOutput`): ``0`` over the whole segment, an odd
            ``w`` over a moving window of ``w`` squeezed steps (``w g`` samples); ``None``:
            not centred. With ``offsets=False`` the inverse at ``z = 0`` then carries no
            per-channel constant, so no lines at the multiples of ``rate / group``.
        anchored: each coupling's shifts are 0 where its conditioning half is 0
            (:class:`~flowforge.nn.AnchoredOutput`: ``f(x_A, c) - f(0, c)``; twice the
            couplings' network cost). With ``offsets=False`` (required) the flow maps ``z = 0``
            to 0, so a vocoder's draw is its source estimate plus the flow's spread alone.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.
        steps: the old name of ``depth`` (deprecated: ``steps`` are optimisation steps).

    References:
        Prenger, Valle, Catanzaro (2019). WaveGlow: A Flow-based Generative Network for
        Speech Synthesis. arXiv:1811.00002.
        Kingma, Dhariwal (2018). Glow. arXiv:1807.03039.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.WaveGlow(shape=(1, 64), depth=4, early_every=2, hidden=8, layers=2)
        >>> flow.log_prob(torch.randn(3, 1, 64)).shape, flow.sample(2).shape
        (torch.Size([3]), torch.Size([2, 1, 64]))
        >>> vocoder = ff.flows.WaveGlow(shape=(1, 64), context=4 * 8, frame_features=4,
        ...                             depth=2, hidden=8, layers=2)
        >>> vocoder.sample(2, context=torch.randn(3, 32)).shape  # 2 draws per mel
        torch.Size([2, 3, 1, 64])
    """

    def __init__(
        self,
        shape: Sequence[int],
        *,
        context: int = 0,
        group: int = 8,
        depth: int = 12,
        early_every: int = 4,
        early_size: int = 2,
        hidden: int = 64,
        layers: int = 4,
        kernel: int = 3,
        scale_bound: float = 4.0,
        lu: bool = True,
        frame_features: int = 0,
        source: str = "none",
        sample_rate: int = 0,
        source_iters: int = 32,
        source_nnls: str = "accelerated",
        source_refine: int = 0,
        source_envelope: float = 0.0,
        offsets: bool = True,
        centre_shift: int | None = None,
        anchored: bool = False,
        base: BaseDistribution | None = None,
        steps: int | None = None,
    ) -> None:
        depth = renamed_steps("WaveGlow", steps, depth, "depth")
        hparams = preset_hparams({k: v for k, v in locals().items() if k != "steps"})
        hidden = conv_width("WaveGlow", hidden)
        c, t = _check(
            shape,
            context,
            group,
            depth,
            early_every,
            early_size,
            frame_features,
            source,
            sample_rate,
        )
        even_window = centre_shift is not None and centre_shift > 0 and centre_shift % 2 == 0
        if centre_shift is not None and (centre_shift < 0 or even_window):
            raise ValueError(
                f"WaveGlow: centre_shift is None, 0 (the whole segment) or an odd window of "
                f"squeezed steps; got {centre_shift!r}"
            )
        if anchored and offsets:
            raise ValueError(
                "WaveGlow: anchored=True maps z = 0 to 0 only without per-channel offsets; "
                "give offsets=False"
            )
        if source_envelope < 0 or (source_envelope > 0 and source == "none"):
            raise ValueError(
                f"WaveGlow: source_envelope is a floor >= 0 of a source's envelope (0: none); "
                f"got {source_envelope} with source={source!r}"
            )
        frames = context // frame_features if context else 0
        up = FrameUpsample(frame_features, frames, t, group) if context else None
        cond = up.channels if up is not None else 0  # per-step channels after upsampling
        gl = None
        if source == "griffin-lim":
            gl = MelGriffinLim(
                frame_features,
                frames,
                t,
                sample_rate,
                iters=source_iters,
                nnls=source_nnls,
                refine=source_refine,
            )
            cond += c * group  # the estimate's samples, squeezed like the waveform
        channels, length = c * group, t // group
        levels: list[Bijection] = []
        layers_now: list[Bijection] = [Squeeze1d((c, t), group)]
        for step in range(depth):
            if step and step % early_every == 0 and early_size:
                levels.append(Compose(layers_now))
                layers_now, channels = [], channels - early_size
            squeezed = (channels, length)
            kept = channels - channels // 2
            net: nn.Module = WaveNet(kept, 2 * (channels // 2), hidden, layers, kernel, cond)
            if centre_shift is not None:  # the shifts: the second block of channels // 2
                net = CentredOutput(net, channels // 2, centre_shift)
            if anchored:
                net = AnchoredOutput(net, kept, channels // 2)
            layers_now += [
                ActNorm(squeezed) if offsets else _ScaleNorm(squeezed),
                _conv(squeezed, lu, offsets),
                ChannelCoupling(
                    squeezed, Affine(scale_bound), net, context=cond * length, spatial=bool(cond)
                ),
            ]
        levels.append(Compose(layers_now))
        stack: Bijection = Multiscale(levels, split=[early_size] * (len(levels) - 1))
        if gl is not None and up is not None:
            estimate = _Estimate(gl, up, Squeeze1d((c, t), group), source_envelope, t // frames)
            stack = SourceShift(stack, estimate, context=context)
        elif up is not None:
            stack = EmbedContext(stack, up, context=context)
        super().__init__(hparams, [stack], base)


__all__ = ["WaveGlow"]
