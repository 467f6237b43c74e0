"""Which flow a training run asks for: its options and dataset turned into a :class:`ModelSpec`.

The spec itself (and rebuilding a flow from it) is :mod:`flowforge.runs.recipe`, so that loading a
run needs nothing from training.
"""

from __future__ import annotations

import inspect
from typing import Any

from flowforge.flows import PRESETS
from flowforge.runs.recipe import ModelSpec, check_flow_name
from flowforge.train.config import ConfigError, TrainConfig

__all__ = ["spec_for"]


def spec_for(cfg: TrainConfig, ds: Any) -> ModelSpec:
    """The spec of the flow that ``cfg`` asks for on dataset ``ds``.

    Args:
        cfg: the training configuration (flow name, size, extra preset options).
        ds: a :class:`flowforge.data.Dataset`.

    Raises:
        ConfigError: on an unknown flow or an option the preset does not take.
    """
    check_flow_name(cfg.flow)
    cls = PRESETS[cfg.flow]
    kwargs: dict[str, Any] = {
        "features": ds.dim,
        "context": 0,
        "transforms": cfg.transforms,
        "hidden": tuple(cfg.hidden),
    }
    if cfg.bins is not None:
        kwargs["bins"] = cfg.bins
    kwargs.update(cfg.flow_options)
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in kwargs if k not in accepted and not takes_any]
    if unknown:
        valid = [k for k in accepted if k not in ("self", "base")]
        raise ConfigError(
            f"flow {cfg.flow!r} takes no option {unknown[0]!r}; valid: {', '.join(valid)}"
        )
    image = ds.kind == "image"
    return ModelSpec(
        preset=cfg.flow,
        kwargs=kwargs,
        kind=ds.kind,
        data_shape=tuple(ds.event_shape),
        levels=ds.levels if image else None,
        logit_alpha=cfg.logit_alpha if image else None,
        standardizer=ds.standardizer.to_dict() if ds.standardizer is not None else None,
        columns=list(ds.columns) if getattr(ds, "columns", None) else None,
    )
