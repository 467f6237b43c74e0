"""A dataset's evaluation splits in the units its flow takes (images: dequantized with seeded
noise, or their integer levels; standardised tables: in their own units, or as stored).

See :mod:`flowforge.train.batches` for the units of a run's flow; the training batches are drawn
there with the same :func:`model_input`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowforge.data.base import QUANTIZED_KINDS, Dataset, dequantize
from flowforge.runs.errors import ConfigError

__all__ = ["level_split", "model_input", "prepare_split"]

_SPLITS = ("train", "val", "test")


def model_input(ds: Dataset, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Map rows of a dataset split to the flow's input units.

    Args:
        ds: the dataset the rows come from.
        x: ``(N, *event_shape)`` rows as the dataset stores them.
        generator: the dequantization noise for images.

    Returns:
        ``(N, *event_shape)``: images dequantized to ``[0, 1)``; standardised rows mapped
        back to the original units; anything else as is.
    """
    if ds.kind in QUANTIZED_KINDS:  # images and audio
        assert ds.levels is not None
        return dequantize(x, ds.levels, generator)
    if ds.standardizer is not None:
        return ds.standardizer.inverse(x)
    return x


def _standardized(ds: Dataset, standardized: bool) -> bool:
    return standardized and ds.standardizer is not None and ds.kind != "image"


def prepare_split(ds: Dataset, split: str, seed: int, standardized: bool = False) -> Tensor:
    """A fixed evaluation split in the flow's input units (images: noise seeded by ``seed``).

    Args:
        ds: the dataset.
        split: ``train``, ``val`` or ``test``.
        seed: the run's seed.
        standardized: standardised tables: the rows as stored (standardised in float64, then
            cast), for :func:`training_flow`; otherwise in the data's own units.

    Raises:
        ConfigError: for an unknown split, or ``train`` on a dataset that samples fresh data.
    """
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(_SPLITS)}")
    x = getattr(ds, split)
    if x is None:
        raise ConfigError(f"dataset {ds.name!r} draws fresh training samples; use val or test")
    if _standardized(ds, standardized):
        return x
    g = torch.Generator().manual_seed(seed + 7919 * (1 + _SPLITS.index(split)))
    return model_input(ds, x, g)


def level_split(ds: Dataset, split: str) -> Tensor:
    """An image split's integer levels ``0 .. K-1`` as float32 ``(N, C, H, W)`` (no noise).

    Raises:
        ConfigError: for an unknown split or data that are not images.
    """
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {', '.join(_SPLITS)}")
    x = getattr(ds, split)
    if ds.kind != "image" or x is None:
        raise ConfigError(f"dataset {ds.name!r} has no image levels to dequantize")
    return x.to(torch.float32)
