"""The model options of :class:`~flowforge.train.config.TrainConfig`: which flow, at what size.

:class:`ModelOptions` holds the preset (or the ``auto`` search and its time budget), its size
(``transforms``, ``hidden``, ``bins``) and the rest of its keyword arguments
(``flow_options``); :func:`flowforge.train.model.spec_for` turns them into the flow's recipe.

Example:
    >>> ModelOptions().flow, ModelOptions(hidden=(32, 32)).hidden
    ('nsf', (32, 32))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowforge.train.coerce import option_doc

__all__ = ["ModelOptions"]


@dataclass
class ModelOptions:
    """The flow options of a training run, with their defaults."""

    flow: str = field(
        default="nsf",
        metadata=option_doc(
            "flow preset, or auto: try presets and sizes within --time-budget and keep the "
            "one of the best validation NLL (the trials and their table under RUN/trials, "
            "RUN/auto.json)"
        ),
    )
    time_budget: float = field(
        default=300.0, metadata=option_doc("--flow auto: seconds the search may take")
    )
    transforms: int | None = field(
        default=None,
        metadata=option_doc(
            "vector presets: number of transforms (default: the preset's CLI default)"
        ),
    )
    hidden: tuple[int, ...] | None = field(
        default=None,
        metadata=option_doc(
            "hidden layer widths, e.g. 64,64 (glow, multiscale_realnvp: the conv nets' "
            "channels, one number N meaning N,N; waveglow: one number of channels; default: "
            "the preset's CLI default)"
        ),
    )
    bins: int | None = field(
        default=None, metadata=option_doc("spline bins (NSF only; default the preset's)")
    )
    flow_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=option_doc(
            "other preset keyword arguments, as a JSON/TOML table, e.g. "
            '\'{"levels": 2, "depth": 8}\' for glow or '
            '\'{"dropout": 0.1, "residual_blocks": 2}\' for the vector presets'
        ),
    )
