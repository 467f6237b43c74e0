"""A VI run's record (``config.json``) and the pieces ``flowforge vi`` builds from its options.

This module is not imported by ``import flowforge``.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import platform
import re
from pathlib import Path
from typing import Any

import torch

from flowforge._version import __version__
from flowforge.core import Flow
from flowforge.flows import PRESETS
from flowforge.runs import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    ConfigError,
    ModelSpec,
    Run,
    RunError,
    build_flow,
)
from flowforge.vi.config import VI_TASK, VIConfig, build_target, default_transforms
from flowforge.vi.objectives import ELBO, IWAE, PathDerivativeELBO, VariationalObjective
from flowforge.vi.targets import Target

__all__ = [
    "checked_flow",
    "default_out",
    "is_vi_record",
    "objective_of",
    "run_record",
    "spec_of",
    "vi_config_of",
]


def spec_of(cfg: VIConfig, features: int) -> ModelSpec:
    """The flow's recipe: the preset, its options and the target's dimension."""
    transforms = default_transforms(cfg.flow) if cfg.transforms is None else cfg.transforms
    kwargs: dict[str, Any] = {"features": features, "transforms": transforms}
    if cfg.hidden is not None:
        kwargs["hidden"] = cfg.hidden
    kwargs.update(cfg.flow_options)
    return ModelSpec(cfg.flow, kwargs, VI_TASK, (features,))


def objective_of(cfg: VIConfig) -> VariationalObjective:
    """The objective ``cfg.objective`` names."""
    if cfg.objective == "stl":
        return PathDerivativeELBO()
    if cfg.objective == "iwae":
        return IWAE(cfg.iwae_k)
    return ELBO()


def checked_flow(cfg: VIConfig, spec: ModelSpec, target: Target) -> Flow:
    """The untrained flow, after one tiny objective evaluation (a flow that cannot sample
    with its density, or an objective it cannot serve, is a :class:`ConfigError`)."""
    if "features" not in inspect.signature(PRESETS[cfg.flow]).parameters:
        raise ConfigError(
            f"flow {cfg.flow!r} is an image flow over (C, H, W); vi fits a vector flow over "
            f"R^{spec.features} (e.g. planar, radial, sylvester, iaf, nsf)"
        )
    flow = build_flow(spec)
    if tuple(flow.event_shape) != (target.features,):
        raise ConfigError(
            f"flow {cfg.flow!r} has event shape {tuple(flow.event_shape)}, the target "
            f"{cfg.target!r} is over R^{target.features}"
        )
    try:
        loss = objective_of(cfg)(flow, target, 2, None)
        loss.value.backward()
    except NotImplementedError as e:
        msg = " ".join(str(e).split())
        raise ConfigError(
            f"flow {cfg.flow!r} cannot serve the {cfg.objective} objective: {msg}"
        ) from None
    flow.zero_grad(set_to_none=True)
    return flow


def is_vi_record(record: dict[str, Any]) -> bool:
    """Whether a run record (``config.json``) is a VI run's."""
    return record.get("task") == VI_TASK


def vi_config_of(run: Run) -> tuple[VIConfig, Target]:
    """The options and the target of an opened VI run.

    Raises:
        RunError: if the record's options or target are malformed.
    """
    try:
        cfg = VIConfig.from_dict(run.record["config"])
        target = build_target(cfg.target, cfg.target_options)
    except (KeyError, TypeError, ConfigError) as e:
        raise RunError(f"{run.files.config} has a malformed VI record: {e}") from None
    return cfg, target


def default_out(cfg: VIConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"vi-{cfg.target}-{cfg.flow}-{stamp}")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def run_record(cfg: VIConfig, spec: ModelSpec, target: Target) -> dict[str, Any]:
    """The run record, ``config.json``."""
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "task": VI_TASK,
        "config": cfg.to_dict(),
        "model": spec.to_dict(),
        "target": {
            "name": cfg.target,
            "options": cfg.target_options,
            "features": target.features,
            "log_normalizer": target.log_normalizer,
            "bounds": target.bounds,
        },
        "total_steps": cfg.steps,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "flowforge": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
