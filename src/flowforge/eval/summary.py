"""A flow's summary on a dataset split: the NLL with its error bar (and bits/dim for images),
and for images the dequantization bound with its importance-sampled estimate. What ``flowforge
train`` writes into ``results.json`` and ``flowforge eval`` prints.
"""

from __future__ import annotations

import math

import torch

from flowforge.core.defensive import DefensiveMixture
from flowforge.data import Dataset
from flowforge.data.base import QUANTIZED_KINDS, Standardizer
from flowforge.dequantization import (
    DequantizedLikelihood,
    Dequantizer,
    UniformDequantizer,
    dequantized_log_likelihood,
)
from flowforge.eval.likelihood import (
    NLLSummary,
    NonFiniteLikelihood,
    log_likelihoods,
    standardized_log_likelihoods,
    summarize,
    without_standardize,
)
from flowforge.eval.splits import level_split, prepare_split
from flowforge.transforms.standardize import Standardize

__all__ = ["dequantized_summary", "split_summary"]


def _dequantizer_of(ds: Dataset, dequantizer: Dequantizer | None) -> Dequantizer:
    assert ds.levels is not None
    return dequantizer or UniformDequantizer(tuple(ds.event_shape), int(ds.levels))


def dequantized_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    split: str,
    dequantizer: Dequantizer | None,
    samples: int,
    *,
    seed: int,
    batch_size: int,
) -> DequantizedLikelihood:
    """The dequantization bound of an image split's levels and its importance-sampled estimate
    with ``samples`` noises per image (uniform noise when ``dequantizer`` is ``None``), seeded
    by ``seed`` (``batch_size`` images' worth of noises per batch).

    Raises:
        flowforge.eval.likelihood.NonFiniteLikelihood: a non-finite log-likelihood.
    """
    deq = _dequantizer_of(ds, dequantizer)
    device = next(iter(flow.parameters())).device
    v = level_split(ds, split).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed + 15_485_863)
        try:
            c = ds.context_of(split) if split in ("train", "val", "test") else None
            return dequantized_log_likelihood(
                flow, deq.to(device), v, samples, max(1, batch_size // samples), context=c
            )
        except FloatingPointError as e:
            raise NonFiniteLikelihood(str(e)) from None


def _in_flow_units(
    flow: torch.nn.Module, std: Standardizer, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``z`` standardised by ``std``, re-expressed in the statistics of the flow's own
    leading ``Standardize`` (float64 throughout), and that standardisation's log-Jacobian."""
    if isinstance(flow, DefensiveMixture):  # a defensive mixture: its flow's Standardize
        flow = flow.flow
    first = flow.bijection.bijections[0]  # type: ignore[union-attr,index]
    assert isinstance(first, Standardize)  # without_standardize(flow) found it
    mean, scale = first.mean.detach().cpu().double(), first.std.detach().cpu().double()
    same = torch.allclose(mean.float().double(), std.mean.float().double(), rtol=0, atol=0)
    if same and torch.allclose(scale.float().double(), std.std.float().double(), rtol=0, atol=0):
        return z, std.log_abs_det()
    raw = std.inverse(z.double())
    return (raw - mean) / scale, -torch.log(scale).sum()


def split_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    split: str,
    dequantizer: Dequantizer | None = None,
    *,
    seed: int,
    batch_size: int,
) -> NLLSummary:
    """NLL (nats, 2 standard errors) of ``flow`` on a split, with bits/dim for images.

    With a learned ``dequantizer`` the NLL is its variational bound on the levels (one noise
    per image, seeded), in the units of the NLL of ``u``: ``-E_q[log p(u) - log q(e | v)]``.

    Raises:
        flowforge.eval.likelihood.NonFiniteLikelihood: naming the rows whose log-likelihood
            is NaN or infinite (they are never left out).
    """
    z = getattr(ds, split) if split in ("train", "val", "test") else None
    if dequantizer is not None:
        res = dequantized_summary(flow, ds, split, dequantizer, 1, seed=seed, batch_size=batch_size)
        ll = res.bound + res.dim * math.log(res.levels)
    elif ds.standardizer is not None and z is not None and without_standardize(flow) is not None:
        # rows standardised in float64 then cast: not unstandardised to float32 and back;
        # with the flow's own statistics (a saved estimator's floored scales differ from
        # the file's), re-standardised in float64 where they are not the dataset's
        z, log_abs_det = _in_flow_units(flow, ds.standardizer, z)
        ll = standardized_log_likelihoods(flow, z, log_abs_det, batch_size)
    else:
        x = prepare_split(ds, split, seed)
        ll = log_likelihoods(flow, x, batch_size, context=ds.context_of(split))
    return summarize(ll, ds.dim, ds.levels if ds.kind in QUANTIZED_KINDS else None)
