"""VI run directories: ``flowforge vi`` fits a flow to a target and writes what ``eval`` reads.

A VI run is a run directory (:mod:`flowforge.runs`) whose record says ``"task": "vi"``:

- ``config.json``: the options (:class:`VIConfig`, :mod:`flowforge.vi.config`), the flow's
  recipe (a :class:`~flowforge.runs.ModelSpec` of kind ``"vi"``, so :func:`flowforge.load` and
  ``flowforge sample`` rebuild the flow as for any run) and the target (its name and options);
- ``model.safetensors`` (with its checksum): the flow, at the last checkpoint while fitting;
- ``metrics.jsonl``: one record per step (``step``, ``loss``, ``elbo``, ``lr``, ``beta``, and
  ``iwae`` for the IWAE objective);
- ``results.json``, written last: the diagnostics of
  :func:`~flowforge.vi.report.diagnostics_dict` (ELBO with its standard error, the
  importance-sampling ``log Z``, ESS, Pareto-k; for 2-D targets ``log Z`` on a grid and
  ``KL(q || p) = log Z - ELBO``);
- ``density.png`` (q's samples over the true density) and ``elbo.png`` (the ELBO curve).

Crash safety: every file is written atomically. While fitting, the run holds
``checkpoint.safetensors`` (the flow, Adam's state, the step and the random generator),
rewritten every ``checkpoint_every`` steps and after the last one; a killed run is continued
by :func:`resume_vi` (``flowforge vi --resume RUN``) from there, and ends exactly as the
uninterrupted run would (the same samples, the same steps). The checkpoint is removed when
``results.json`` is written. A fresh run whose loss becomes non-finite leaves nothing.

This module is not imported by ``import flowforge`` (it reads TOML and writes weights).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from flowforge.core import Flow
from flowforge.runs import (
    ConfigError,
    RunError,
    build_flow,
    parse_spec,
    read_run_record,
    run_files,
)
from flowforge.runs.checkpoint import load_checkpoint
from flowforge.runs.errors import refuse_fixed_options
from flowforge.runs.writer import RunWriter, check_new_run
from flowforge.vi.config import (
    OBJECTIVES,
    RESUME_KEYS,
    VI_TASK,
    VIConfig,
    build_target,
    read_vi_toml,
)
from flowforge.vi.fit import fit_vi
from flowforge.vi.record import (
    checked_flow,
    default_out,
    is_vi_record,
    objective_of,
    run_record,
    spec_of,
    vi_config_of,
)
from flowforge.vi.report import diagnostics_dict, format_diagnostics
from flowforge.vi.targets import Target

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
    "resume_vi",
    "run_vi",
    "vi_config_of",
]

Callback = Callable[[int, dict[str, float]], None]


@dataclass
class VIResult:
    """What :func:`run_vi` or :func:`resume_vi` did.

    Attributes:
        run_dir: the run directory written.
        results: the content of ``results.json``.
    """

    run_dir: Path
    results: dict[str, Any]


#: The command that continues a VI run (named in messages).
RESUME = "flowforge vi --resume"


def _device(name: str) -> torch.device:
    from flowforge.fit.device import resolve_device  # the tool's one device rule

    return resolve_device(name)


def run_vi(cfg: VIConfig, callback: Callback | None = None) -> VIResult:
    """Fit ``cfg.flow`` to ``cfg.target`` and write the run directory.

    Args:
        cfg: the options.
        callback: called as ``callback(step, record)`` after each step (after the
            checkpoint of that step, if there is one).

    Raises:
        ConfigError: bad options, a flow that cannot serve, or an existing output folder.
        FloatingPointError: the loss became non-finite (the run folder is removed).
        KeyboardInterrupt: interrupted; the message names the ``--resume`` command.
    """
    cfg.check()
    out = check_new_run(Path(cfg.out) if cfg.out else default_out(cfg), cfg.overwrite, RESUME)
    cfg = replace(cfg, out=str(out), lr=cfg.learning_rate)
    device = _device(cfg.device)
    target = build_target(cfg.target, cfg.target_options)
    spec = spec_of(cfg, target.features)
    torch.manual_seed(cfg.seed)
    checked_flow(cfg, spec, target)
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)  # the same initialisation whatever the check drew
    # --overwrite: only a run is replaced, and only its files
    with RunWriter.create(out, run_record(cfg, spec, target), cfg.overwrite, RESUME) as writer:
        opt = torch.optim.Adam(flow.parameters(), lr=cfg.learning_rate)
        try:
            return _fit_and_finish(cfg, flow, target, opt, writer, 0, callback)
        except FloatingPointError:
            writer.discard()
            raise


def resume_vi(
    path: str | os.PathLike[str],
    overrides: dict[str, Any] | None = None,
    callback: Callback | None = None,
) -> VIResult:
    """Continue the VI run in ``path`` from its checkpoint to its recorded ``steps``.

    Args:
        path: the run directory.
        overrides: new values of :data:`~flowforge.vi.config.RESUME_KEYS` only.
        callback: as for :func:`run_vi`.

    Raises:
        RunError: not a VI run, already complete, or a missing or mismatched checkpoint.
        ConfigError: an option that a resumed run cannot change.
    """
    overrides = dict(overrides or {})
    files = run_files(path)
    record = read_run_record(files.root)
    if not is_vi_record(record):
        raise RunError(
            f"{files.config} is not a VI run (flowforge train --resume continues training runs)"
        )
    with RunWriter.reopen(files.root) as writer:
        return _resume(writer, read_run_record(files.root), overrides, callback)


def _resume(
    writer: RunWriter,
    record: dict[str, Any],
    overrides: dict[str, Any],
    callback: Callback | None,
) -> VIResult:
    files = writer.files
    if not is_vi_record(record):
        raise RunError(
            f"{files.config} is not a VI run (flowforge train --resume continues training runs)"
        )
    refuse_fixed_options(overrides, RESUME_KEYS, files.config)
    if files.results.exists():
        raise RunError(f"{files.root} is complete ({files.results.name} exists): nothing to resume")
    try:
        cfg = VIConfig.from_dict({**record["config"], **overrides})
        spec = parse_spec(record, str(files.config))
        target = build_target(cfg.target, cfg.target_options)
    except (KeyError, TypeError, ConfigError) as e:
        raise RunError(f"{files.config} has a malformed VI record: {e}") from None
    state = load_checkpoint(files.checkpoint)
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)
    opt = torch.optim.Adam(flow.parameters(), lr=cfg.learning_rate)
    try:
        flow.load_state_dict(state["flow"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"], device)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:200]
        raise RunError(
            f"{files.checkpoint} does not match the run in {files.config}: {msg}"
        ) from None
    writer.metrics.truncate(start - 1)
    if overrides:
        record["config"] = cfg.to_dict()
        writer.write_record(record)
    return _fit_and_finish(cfg, flow, target, opt, writer, start, callback)


def _checkpoint(
    writer: RunWriter, flow: Flow, opt: torch.optim.Optimizer, step: int, device: torch.device
) -> None:
    """The state after ``step - 1`` steps: ``fit_vi(start=step)`` continues it exactly."""
    writer.write_weights(flow)
    state: dict[str, Any] = {
        "step": step,
        "flow": flow.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    writer.write_checkpoint(state)


def _fit_and_finish(
    cfg: VIConfig,
    flow: Flow,
    target: Target,
    opt: torch.optim.Optimizer,
    writer: RunWriter,
    start: int,
    callback: Callback | None,
) -> VIResult:
    device = next(flow.parameters()).device
    target.to(device)
    pending: list[dict[str, float]] = []

    def on_step(step: int, record: dict[str, float]) -> None:
        pending.append(record)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            writer.metrics.extend(pending)  # metrics first: resume truncates them
            pending.clear()
            _checkpoint(writer, flow, opt, step + 1, device)
        if callback is not None:
            callback(step, record)

    began = time.perf_counter()
    try:
        fit_vi(
            flow,
            target,
            steps=cfg.steps,
            samples=cfg.samples,
            lr=cfg.learning_rate,
            objective=objective_of(cfg),
            progress=not cfg.quiet,
            anneal=cfg.anneal_steps,
            optimizer=opt,
            callback=on_step,
            start=start,
        )
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"continue with: {RESUME} {writer.files.root}") from None
    seconds = time.perf_counter() - began
    flow.cpu()
    target.cpu()
    return _finish(cfg, flow, target, writer, start, seconds)


def _finish(
    cfg: VIConfig, flow: Flow, target: Target, writer: RunWriter, start: int, seconds: float
) -> VIResult:
    """Diagnostics, weights, plots and ``results.json`` (last), on the CPU."""
    files = writer.files
    history = writer.metrics.read()
    diag = diagnostics_dict(flow, target, cfg.eval_samples, cfg.seed)
    results = {
        "task": VI_TASK,
        "target": cfg.target,
        "flow": cfg.flow,
        "objective": cfg.objective,
        "steps": cfg.steps,
        "lr": cfg.learning_rate,
        "resumed_from": start if start else None,
        "seconds": round(seconds, 3),
        "final_elbo": history[-1].get("elbo") if history else None,
        "diagnostics": diag,
    }
    writer.write_weights(flow)
    if cfg.plots:
        from flowforge.vi.plots import plot_elbo, plot_samples_over_density

        reference = diag.get("log_z_grid", diag.get("log_z_true"))
        writer.write_plots(lambda root: [plot_elbo(history, reference, root / "elbo.png")])
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(cfg.seed)
            with torch.no_grad():
                x = flow.eval().sample(2000)
        finally:
            torch.random.set_rng_state(state)
        writer.write_plots(
            lambda root: [
                plot_samples_over_density(x, target, root / "density.png", cfg.target, cfg.flow)
            ]
        )
    writer.write_results(results)
    writer.remove_checkpoint()
    return VIResult(files.root, results)
