"""Variational-inference presets: planar, radial and Sylvester flows.

Each is a stack of sampling-direction layers after a learned elementwise affine map (the
Gaussian ``q_0 = N(loc, diag(scale^2))`` of the papers, as a bijection), so
``sample_and_log_prob`` is one pass with analytic log-determinants; ``log_prob`` of given
points is exact too, by the layers' numerical inverses (slower).
"""

from __future__ import annotations

from collections.abc import Sequence

from flowforge.core.bijection import Bijection
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows.arguments import bad_argument
from flowforge.transforms.normalization import ActNorm
from flowforge.transforms.planar import Planar as PlanarLayer
from flowforge.transforms.radial import Radial as RadialLayer
from flowforge.transforms.sylvester import KINDS
from flowforge.transforms.sylvester import Sylvester as SylvesterLayer


def _with_affine(layers: list[Bijection], features: int, affine: bool) -> list[Bijection]:
    """``layers`` (data -> latent) and, at the latent end, an identity-initialised affine map."""
    if not affine:
        return layers
    scale = ActNorm(features)
    scale.mark_initialized()  # starts as the identity; no data initialisation
    return [*layers, scale]


class Planar(Preset):
    """Planar flow: ``transforms`` planar layers ``x = z + u_hat h(w.z + b)``.

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of planar layers.
        hidden: hidden sizes of each layer's context network (used when ``context > 0``).
        activation: ``"tanh"`` or ``"leaky_relu"``.
        affine: start the sampling pass with a learned elementwise affine map (a learned
            diagonal Gaussian ``q_0``).
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Planar(features=2, transforms=4).double()
        >>> x, lp = flow.sample_and_log_prob(3)  # one pass
        >>> torch.allclose(lp, flow.log_prob(x))  # density by the layers' root finds
        True
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 16,
        hidden: Sequence[int] = (64,),
        activation: str = "tanh",
        affine: bool = True,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        layers: list[Bijection] = [
            PlanarLayer(features, context=context, hidden=hidden, activation=activation)
            for _ in range(transforms)
        ]
        super().__init__(hparams, _with_affine(layers, features, affine), base)


class Radial(Preset):
    """Radial flow: ``transforms`` radial layers ``x = z + beta (z - z0) / (alpha + r)``.

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of radial layers.
        hidden: hidden sizes of each layer's context network (used when ``context > 0``).
        affine: start the sampling pass with a learned elementwise affine map (a learned
            diagonal Gaussian ``q_0``).
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Rezende, Mohamed (2015). Variational Inference with Normalizing Flows.
        arXiv:1505.05770.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Radial(features=3, transforms=4).double()
        >>> x, lp = flow.sample_and_log_prob(5)
        >>> x.shape, torch.allclose(lp, flow.log_prob(x))
        (torch.Size([5, 3]), True)
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 16,
        hidden: Sequence[int] = (64,),
        affine: bool = True,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        layers: list[Bijection] = [
            RadialLayer(features, context=context, hidden=hidden) for _ in range(transforms)
        ]
        super().__init__(hparams, _with_affine(layers, features, affine), base)


class Sylvester(Preset):
    """Sylvester flow: ``transforms`` layers ``x = z + Q R h(R~ Q^T z + b)``.

    ``kind`` picks how ``Q`` is made (see :class:`flowforge.transforms.Sylvester`):
    ``"orthogonal"`` (O-SNF, ``rank`` orthonormal columns), ``"householder"`` (H-SNF,
    ``reflections`` reflections) or ``"triangular"`` (T-SNF, identity and reversal alternating
    between layers).

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of Sylvester layers.
        kind: ``"orthogonal"``, ``"householder"`` or ``"triangular"``.
        rank: columns ``M`` of ``Q`` for ``"orthogonal"`` (default ``features``).
        reflections: Householder reflections per layer for ``"householder"`` (default
            ``features``).
        hidden: hidden sizes of each layer's context network (used when ``context > 0``).
        affine: start the sampling pass with a learned elementwise affine map (a learned
            diagonal Gaussian ``q_0``).
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        van den Berg, Hasenclever, Tomczak, Welling (2018). Sylvester Normalizing Flows for
        Variational Inference. arXiv:1803.05649.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.Sylvester(features=3, transforms=2, kind="householder").double()
        >>> x, lp = flow.sample_and_log_prob(4)
        >>> lp.shape, torch.allclose(lp, flow.log_prob(x))
        (torch.Size([4]), True)
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 8,
        kind: str = "orthogonal",
        rank: int | None = None,
        reflections: int | None = None,
        hidden: Sequence[int] = (64,),
        affine: bool = True,
        base: BaseDistribution | None = None,
    ) -> None:
        hparams = preset_hparams(locals())
        if kind not in KINDS:
            raise bad_argument("Sylvester", f"kind in {KINDS}", kind)
        layers: list[Bijection] = [
            SylvesterLayer(
                features,
                kind,
                rank=rank,
                reflections=reflections,
                flip=i % 2 == 1,
                context=context,
                hidden=hidden,
            )
            for i in range(transforms)
        ]
        super().__init__(hparams, _with_affine(layers, features, affine), base)


__all__ = ["Planar", "Radial", "Sylvester"]
