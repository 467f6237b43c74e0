"""TarFlow: transformer autoregressive flows over image patches (or groups of features)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowforge.core.bijection import Bijection
from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.nn.causal_transformer import CausalTransformer
from flowforge.transforms.affine import Affine
from flowforge.transforms.transformer_autoregressive import (
    TransformerAutoregressive,
    guided,
    token_layout,
)


class TarFlow(Preset):
    """TarFlow: ``blocks`` transformer autoregressive layers, the token order reversed
    between each two.

    Each block cuts the data into tokens (``patch x patch`` patches of an image ``(C, H, W)``,
    or groups of ``patch`` features of a vector), and a causal transformer of ``layers``
    pre-norm blocks of ``width`` and ``heads`` gives each token an affine map (bounded
    log-scale ``B tanh(raw / B)``, zero-initialised: the flow starts as the identity) from
    the tokens before it. The density is one pass per block; sampling decodes token by token
    with a key/value cache. A context (a one-hot class, say) is embedded into every token.

    :meth:`sample` adds TarFlow's sampling devices: ``guidance`` (class guidance against the
    null, all-zero context, which ``label_dropout`` trains; or attention-temperature guidance
    for an unconditional flow) and ``denoise`` (one step along the flow's own score,
    :meth:`~flowforge.Flow.denoise`, for a flow trained on data with Gaussian noise of that
    standard deviation).

    Args:
        shape: the image event shape ``(C, H, W)``, ``H`` and ``W`` divisible by ``patch``;
            ``None`` with ``features``.
        features: the vector size ``D`` (divisible by ``patch``); ``None`` with ``shape``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        patch: the patch side (images) or the number of features per token (vectors).
        blocks: number of transformer autoregressive layers ``T`` (the flow's depth).
        layers: transformer blocks ``K`` in each layer's network.
        width: the transformers' width.
        heads: attention heads (``width`` divisible by it).
        scale_bound: bound ``B`` on each absolute log-scale, ``log s = B tanh(raw / B)``.
        label_dropout: probability that a row's context is replaced by the null (zero)
            context in training mode (``flow.train()``), so that the flow also learns the
            unconditional density that class guidance extrapolates from.
        dropout: of the transformers' attention and MLP outputs in training mode (0: none; a
            regulariser for small image sets, which TarFlow overfits).
        token_noise: standard deviation of Gaussian noise on the tokens each transformer reads
            (the conditioner's inputs, not the values it transforms), in training mode only
            (0: none): a regulariser that leaves the density exact (evaluation reads the clean
            tokens).
        shifted: cut every reversed layer's patches half a patch (``patch // 2``) down and
            right (rolled around the edges), so that values sharing a token in one layer sit
            in different tokens of the next and condition each other (no effect at patch 1).
        local: add to each token's embedding a causal 3x3 convolution over the grid of
            tokens (an image's patches; a vector's groups on one row) in each layer's order,
            reading a token's earlier neighbours only (:class:`~flowforge.nn.CausalTransformer`
            ``grid``): the locality of a convolutional coupling.
        relative: add to every attention logit a learned bias per head and relative offset
            of the two tokens on that grid (:class:`~flowforge.nn.causal_transformer.RelativeBias`, zero at
            the start): locality in the attention rather than in the embedding.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.

    References:
        Zhai, Zhang, Gu, Lucas, Yan, Dinh, Bautista, Susskind, Gatsby, Sohl-Dickstein (2024).
        Normalizing Flows are Capable Generative Models. arXiv:2412.06329.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.TarFlow(shape=(1, 8, 8), patch=2, blocks=2, width=32, heads=2)
        >>> flow.log_prob(torch.randn(3, 1, 8, 8)).shape, flow.sample(2).shape
        (torch.Size([3]), torch.Size([2, 1, 8, 8]))
        >>> onehot = torch.eye(10)[:4]  # a class-conditional flow, guided
        >>> cond = ff.flows.TarFlow(shape=(1, 8, 8), context=10, blocks=2, width=32, heads=2)
        >>> cond.sample(2, onehot, guidance=1.0, denoise=0.05).shape
        torch.Size([2, 4, 1, 8, 8])
    """

    def __init__(
        self,
        shape: Sequence[int] | None = None,
        features: int | None = None,
        *,
        context: int = 0,
        patch: int = 2,
        blocks: int = 4,
        layers: int = 2,
        width: int = 64,
        heads: int = 4,
        scale_bound: float = 3.0,
        label_dropout: float = 0.0,
        dropout: float = 0.0,
        token_noise: float = 0.0,
        shifted: bool = False,
        local: bool = False,
        relative: bool = False,
        base: BaseDistribution | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if v is not None}
        hparams = preset_hparams(given)
        hparams = {"shape": None, "features": None, **hparams}  # signature order
        if (shape is None) == (features is None):
            raise ValueError(
                f"TarFlow: expected one of shape=(C, H, W) or features=D, got shape={shape!r} "
                f"and features={features!r}"
            )
        event = tuple(shape) if shape is not None else (int(features or 0),)
        if shape is not None and len(event) != 3:
            raise ValueError(f"TarFlow: expected shape=(C, H, W), got {tuple(shape)!r}")
        if not 0 <= label_dropout < 1:
            raise ValueError(f"TarFlow: expected label_dropout in [0, 1), got {label_dropout!r}")
        try:
            tokens, size = token_layout(event, patch)
        except ValueError as e:
            raise ValueError(f"TarFlow: {e}") from None
        stack: list[Bijection] = []
        rows = event[1] // patch if len(event) == 3 else 1
        token_grid = (rows, tokens // rows)  # an image's patches; a vector's groups on one row
        for i in range(blocks):
            net = CausalTransformer(
                size,
                2 * size,
                tokens,
                width,
                heads,
                layers,
                context=context,
                dropout=dropout,
                token_noise=token_noise,
                grid=token_grid if local else None,
                relative=token_grid if relative else None,
            )
            shift = patch // 2 if shifted and i % 2 == 1 else 0
            stack.append(
                TransformerAutoregressive(
                    event, net, patch, i % 2 == 1, Affine(scale_bound), shift=shift
                )
            )
        super().__init__(hparams, stack, base)
        self.label_dropout = float(label_dropout)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """:meth:`flowforge.Flow.log_prob`; in training mode with ``label_dropout > 0``, each
        row's context is the null (zero) context with that probability."""
        if self.training and self.label_dropout > 0 and isinstance(context, Tensor):
            keep = torch.rand(context.shape[:-1], device=context.device) >= self.label_dropout
            context = context * keep.unsqueeze(-1).to(context.dtype)
        return super().log_prob(x, context)

    def sample(
        self,
        n: int | Sequence[int] = 1,
        context: Tensor | None = None,
        temperature: float = 1.0,
        guidance: float = 0.0,
        attention_temperature: float = 1.0,
        denoise: float = 0.0,
    ) -> Tensor:
        """Samples, shape ``(n, *context_batch, *event_shape)``, with TarFlow's devices.

        Args:
            n: number (or shape) of samples.
            context: ``(*context_batch, C)`` for a conditional flow.
            temperature: scales the base sample (:meth:`flowforge.Flow.rsample`).
            guidance: guidance weight ``w`` (:func:`~flowforge.transforms.guided`): each
                token's parameters ``p_c + w (p_c - p_u)``, ``p_u`` from the null context
                (conditional flows) with attention logits divided by
                ``attention_temperature``; 0: none.
            attention_temperature: the weak model's attention temperature (guidance of an
                unconditional flow needs it above 1).
            denoise: ``sigma > 0``: return ``x + sigma^2 grad log p(x)``
                (:meth:`~flowforge.Flow.denoise`), for a flow trained with Gaussian noise of
                standard deviation ``sigma``; 0: none.
        """
        with torch.no_grad():
            if guidance != 0:
                with guided(self, guidance, attention_temperature):
                    x = super().sample(n, context, temperature)
            else:
                x = super().sample(n, context, temperature)
        return self.denoise(x, denoise, context).detach() if denoise > 0 else x


__all__ = ["TarFlow"]
