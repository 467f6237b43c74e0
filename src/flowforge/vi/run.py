"""VI run directories: ``flowforge vi`` fits a flow to a target and writes what ``eval`` reads.

A VI run is a run directory (:mod:`flowforge.runs`) whose record says ``"task": "vi"``:

- ``config.json``: the options (:class:`VIConfig`), the flow's recipe (a
  :class:`~flowforge.runs.ModelSpec` of kind ``"vi"``, so :func:`flowforge.load` and
  ``flowforge sample`` rebuild the flow as for any run) and the target (its name and options);
- ``model.safetensors`` (with its checksum): the fitted flow;
- ``metrics.jsonl``: one record per step (``step``, ``loss``, ``elbo``, ``lr``, ``beta``, and
  ``iwae`` for the IWAE objective);
- ``results.json``: the diagnostics of :func:`diagnostics_dict` (ELBO with its standard error,
  the importance-sampling ``log Z``, ESS, Pareto-k; for 2-D targets ``log Z`` on a grid and
  ``KL(q || p) = log Z - ELBO``);
- ``density.png`` (q's samples over the true density) and ``elbo.png`` (the ELBO curve).

Crash safety: the run is written into a hidden staging folder beside ``out`` and moved into
place when complete (every file itself written atomically), so a killed ``flowforge vi``
leaves either no run or a whole one, and an existing output folder is only replaced when
``overwrite`` is asked for.

This module is not imported by ``import flowforge`` (it reads TOML and writes weights).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

import flowforge
from flowforge.core import Flow
from flowforge.flows import PRESETS
from flowforge.runs import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    ConfigError,
    ModelSpec,
    Run,
    RunError,
    atomic_write_json,
    atomic_write_text,
    build_flow,
    check_flow_name,
    run_files,
    save_weights,
)
from flowforge.vi.diagnostics import diagnose, grid_log_normalizer
from flowforge.vi.fit import fit_vi
from flowforge.vi.objectives import ELBO, IWAE, PathDerivativeELBO, VariationalObjective
from flowforge.vi.targets import TARGETS, Target

__all__ = [
    "OBJECTIVES",
    "VI_TASK",
    "VIConfig",
    "VIResult",
    "build_target",
    "diagnostics_dict",
    "format_diagnostics",
    "is_vi_record",
    "read_vi_toml",
    "run_vi",
    "vi_config_of",
]

VI_TASK = "vi"
OBJECTIVES = ("elbo", "stl", "iwae")


@dataclass(frozen=True)
class VIConfig:
    """The options of ``flowforge vi`` (the keys of its ``--config FILE.toml``).

    Attributes:
        target: a key of :data:`flowforge.vi.targets.TARGETS`.
        target_options: keyword arguments of the target's constructor (``{"features": 5}``).
        flow: a key of :data:`flowforge.flows.PRESETS` (a vector flow that samples).
        transforms: the preset's number of transforms.
        hidden: the preset's hidden sizes (``None``: its default).
        flow_options: further keyword arguments of the preset.
        steps: optimisation steps.
        samples: draws per step (IWAE: estimates per step, ``iwae_k`` draws each).
        lr: Adam's learning rate (cosine decay to 0).
        objective: ``"elbo"``, ``"stl"`` (path derivative) or ``"iwae"``.
        iwae_k: ``K`` of the IWAE objective.
        anneal: steps of annealing ``beta log p~`` from 0.01 to 1 (``None``: a quarter of
            ``steps``; 0: none).
        eval_samples: draws from ``q`` for the diagnostics.
        seed: seeds the initialisation, the fit and the diagnostics.
        out: the run directory (``None``: ``runs/vi-TARGET-FLOW-STAMP``).
        overwrite: replace an existing, non-empty ``out``.
        plots: write ``density.png`` and ``elbo.png``.
        quiet: no progress bar.
    """

    target: str = "u1"
    target_options: dict[str, Any] = field(default_factory=dict)
    flow: str = "planar"
    transforms: int = 32
    hidden: tuple[int, ...] | None = None
    flow_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 2000
    samples: int = 256
    lr: float = 1e-2
    objective: str = "elbo"
    iwae_k: int = 8
    anneal: int | None = None
    eval_samples: int = 4096
    seed: int = 0
    out: str | None = None
    overwrite: bool = False
    plots: bool = True
    quiet: bool = False

    @classmethod
    def from_dict(cls, options: dict[str, Any], source: str = "") -> VIConfig:
        """Build from a dictionary (a TOML file, flags), checking keys and values.

        Raises:
            ConfigError: on an unknown key or a bad value, naming it.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(
                f"{source}unknown option {unknown[0]!r}; valid options: {', '.join(names)}"
            )
        d = dict(options)
        if isinstance(d.get("hidden"), list):
            d["hidden"] = tuple(d["hidden"])
        cfg = cls(**d)
        cfg.check(source)
        return cfg

    def check(self, source: str = "") -> None:
        """Raise :class:`ConfigError` naming the first bad value."""

        def bad(key: str, what: str, value: Any) -> ConfigError:
            return ConfigError(f"{source}{key} must be {what}, got {value!r}")

        for key in ("transforms", "steps", "samples", "iwae_k", "eval_samples"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, "a positive integer", value)
        if self.eval_samples < 25:
            raise bad("eval_samples", "at least 25 (Pareto-k needs a tail)", self.eval_samples)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)):
            raise bad("lr", "a positive number", self.lr)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad("lr", "a positive number", self.lr)
        if self.anneal is not None and (
            isinstance(self.anneal, bool) or not isinstance(self.anneal, int) or self.anneal < 0
        ):
            raise bad("anneal", "a non-negative integer", self.anneal)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise bad("seed", "an integer", self.seed)
        if self.objective not in OBJECTIVES:
            raise bad("objective", f"one of {', '.join(OBJECTIVES)}", self.objective)
        if self.target not in TARGETS:
            raise ConfigError(
                f"{source}unknown target {self.target!r}; valid targets: {', '.join(TARGETS)}"
            )
        check_flow_name(self.flow)
        if self.hidden is not None and not (
            isinstance(self.hidden, tuple)
            and self.hidden
            and all(isinstance(h, int) and h > 0 for h in self.hidden)
        ):
            raise bad("hidden", "positive integers", self.hidden)
        for key in ("target_options", "flow_options"):
            if not isinstance(getattr(self, key), dict):
                raise bad(key, "a table (JSON object)", getattr(self, key))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary."""
        d = asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        return d

    @property
    def anneal_steps(self) -> int:
        """The annealing steps actually used."""
        return self.steps // 4 if self.anneal is None else min(self.anneal, self.steps)


@dataclass
class VIResult:
    """What :func:`run_vi` did.

    Attributes:
        run_dir: the run directory written.
        results: the content of ``results.json``.
    """

    run_dir: Path
    results: dict[str, Any]


def build_target(name: str, options: dict[str, Any] | None = None) -> Target:
    """The target ``TARGETS[name](**options)``.

    Raises:
        ConfigError: unknown name or options the target does not take.
    """
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}")
    try:
        return TARGETS[name](**(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build target {name!r} with {options or {}}: {e}") from None


def _spec(cfg: VIConfig, features: int) -> ModelSpec:
    kwargs: dict[str, Any] = {"features": features, "transforms": cfg.transforms}
    if cfg.hidden is not None:
        kwargs["hidden"] = cfg.hidden
    kwargs.update(cfg.flow_options)
    return ModelSpec(cfg.flow, kwargs, VI_TASK, (features,))


def _objective(cfg: VIConfig) -> VariationalObjective:
    if cfg.objective == "stl":
        return PathDerivativeELBO()
    if cfg.objective == "iwae":
        return IWAE(cfg.iwae_k)
    return ELBO()


def _checked_flow(cfg: VIConfig, spec: ModelSpec, target: Target) -> Flow:
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
        loss = _objective(cfg)(flow, target, 2, None)
        loss.value.backward()
    except NotImplementedError as e:
        msg = " ".join(str(e).split())
        raise ConfigError(
            f"flow {cfg.flow!r} cannot serve the {cfg.objective} objective: {msg}"
        ) from None
    flow.zero_grad(set_to_none=True)
    return flow


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


@torch.no_grad()
def diagnostics_dict(
    flow: Flow, target: Target, samples: int, seed: int, grid_points: int = 801
) -> dict[str, Any]:
    """The diagnostics of ``q = flow`` against ``target``, JSON-able (non-finite: ``None``).

    Keys: ``samples``, ``seed``, ``elbo``, ``elbo_stderr``, ``log_z_is``,
    ``log_z_is_stderr``, ``ess``, ``ess_fraction``, ``pareto_k``; with a known normaliser
    ``log_z_true``; for a 2-D target with bounds ``log_z_grid`` (trapezoidal rule) and
    ``kl_grid = log_z_grid - elbo``. Seeded, so the same flow gives the same numbers.
    """
    was_training = flow.training
    flow.eval()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        d = diagnose(flow, target, samples)
    finally:
        torch.random.set_rng_state(state)
        flow.train(was_training)
    out: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "elbo": _finite(d.elbo.value),
        "elbo_stderr": _finite(d.elbo.stderr),
        "log_z_is": _finite(d.log_z.value),
        "log_z_is_stderr": _finite(d.log_z.stderr),
        "ess": _finite(d.ess),
        "ess_fraction": _finite(d.ess_fraction),
        "pareto_k": _finite(d.pareto_k),
    }
    if target.log_normalizer is not None:
        out["log_z_true"] = float(target.log_normalizer)
    if target.features == 2 and target.bounds is not None:
        log_z = grid_log_normalizer(target, target.bounds, grid_points)
        out["log_z_grid"] = log_z
        out["kl_grid"] = None if out["elbo"] is None else log_z - out["elbo"]
    return out


def format_diagnostics(d: dict[str, Any]) -> list[str]:
    """The lines ``flowforge vi`` and ``flowforge eval`` print for :func:`diagnostics_dict`."""

    def num(key: str, digits: int = 4) -> str:
        v = d.get(key)
        return "n/a" if v is None else f"{v:.{digits}f}"

    n = d["samples"]
    lines = [
        f"ELBO: {num('elbo')} ± {num('elbo_stderr')} nats ({n} samples from q, 1 standard error)",
        f"IS log Z: {num('log_z_is')} ± {num('log_z_is_stderr')} nats",
        f"ESS: {num('ess', 1)} of {n} ({num('ess_fraction', 3)})",
    ]
    k = d.get("pareto_k")
    verdict = (
        "n/a"
        if k is None
        else "reliable"
        if k < 0.5
        else "usable"
        if k < 0.7
        else "unreliable: q misses mass"
    )
    lines.append(f"Pareto-k: {num('pareto_k', 3)} ({verdict})")
    if "log_z_true" in d:
        lines.append(f"true log Z: {num('log_z_true')}")
    if "log_z_grid" in d:
        lines.append(
            f"grid log Z: {num('log_z_grid')}; KL(q || p) = log Z - ELBO: {num('kl_grid')} nats"
        )
    return lines


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


def _default_out(cfg: VIConfig) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"vi-{cfg.target}-{cfg.flow}-{stamp}")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _record(cfg: VIConfig, spec: ModelSpec, target: Target) -> dict[str, Any]:
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
            "flowforge": flowforge.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _publish(stage: Path, out: Path, overwrite: bool) -> None:
    """Move the complete staging folder to ``out`` (replacing it only if ``overwrite``)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:  # appeared while fitting
            raise ConfigError(f"output folder {out} already exists and is not empty")
        trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, trash / out.name)
        os.replace(stage, out)
        shutil.rmtree(trash, ignore_errors=True)
        return
    if out.is_dir():
        out.rmdir()
    os.replace(stage, out)


def run_vi(cfg: VIConfig) -> VIResult:
    """Fit ``cfg.flow`` to ``cfg.target`` and write the run directory.

    Raises:
        ConfigError: bad options, a flow that cannot serve, or an existing output folder.
        FloatingPointError: the loss became non-finite (nothing is written).
    """
    cfg.check()
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cfg.overwrite:
        raise ConfigError(
            f"output folder {out} already exists and is not empty (--overwrite replaces it)"
        )
    cfg = replace(cfg, out=str(out))
    target = build_target(cfg.target, cfg.target_options)
    spec = _spec(cfg, target.features)
    torch.manual_seed(cfg.seed)
    flow = _checked_flow(cfg, spec, target)
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec)  # the same initialisation whatever the check drew
    start = time.perf_counter()
    history = fit_vi(
        flow,
        target,
        steps=cfg.steps,
        samples=cfg.samples,
        lr=cfg.lr,
        objective=_objective(cfg),
        progress=not cfg.quiet,
        anneal=cfg.anneal_steps,
    )
    seconds = time.perf_counter() - start
    diag = diagnostics_dict(flow, target, cfg.eval_samples, cfg.seed)
    results = {
        "task": VI_TASK,
        "target": cfg.target,
        "flow": cfg.flow,
        "objective": cfg.objective,
        "steps": cfg.steps,
        "seconds": round(seconds, 3),
        "final_elbo": history[-1].get("elbo"),
        "diagnostics": diag,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        files = run_files(stage)
        atomic_write_json(files.config, _record(cfg, spec, target))
        save_weights(files.weights, flow)
        atomic_write_text(files.metrics, "".join(json.dumps(r) + "\n" for r in history))
        atomic_write_json(files.results, results)
        if cfg.plots:
            from flowforge.vi.plots import plot_elbo, plot_samples_over_density

            reference = diag.get("log_z_grid", diag.get("log_z_true"))
            plot_elbo(history, reference, stage / "elbo.png")
            torch.manual_seed(cfg.seed)
            with torch.no_grad():
                x = flow.eval().sample(2000)
            plot_samples_over_density(x, target, stage / "density.png", cfg.target, cfg.flow)
        _publish(stage, out, cfg.overwrite)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return VIResult(out, results)


def read_vi_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The options of a ``--config FILE.toml`` (checked by :meth:`VIConfig.from_dict`).

    Raises:
        ConfigError: missing file or invalid TOML.
    """
    from flowforge.train.config import read_toml  # the one TOML reader of the tool

    return read_toml(Path(path))
