"""``flowforge train``: start or resume a run directory, fit, evaluate on the test split, plot.

Every check that can fail on the user's input (options, dataset, flow, objective, output
folder) runs before the run directory is created, so a bad command leaves nothing half-written.

A run with ``dequantization = "variational"`` also holds its learned dequantizer: the recipe
under ``"dequantizer"`` in ``config.json`` and the weights in ``dequantizer.safetensors``
(written atomically, the best validated ones, like ``model.safetensors``; the state dict of
:class:`~flowforge.train.losses.VariationalDequantization`). ``ff.load`` still returns the flow
over ``u``.

Under ``torchrun`` (:mod:`flowforge.fit.distributed`) every rank builds the same run and
trains its slice of each global batch of ``batch_size`` rows; rank 0 alone checks and writes the
run directory and reads it back on ``--resume`` (sending the record and the checkpoint to the
others, which need no access to it), and the others return ``None`` after the fit. A checkpoint resumes at any
world size: the stream of global batches does not depend on it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowforge.core import Flow
from flowforge.core.defensive import DefensiveMixture
from flowforge.data import Dataset
from flowforge.data.base import QUANTIZED_KINDS
from flowforge.eval.baseline import GaussianBaseline, dataset_baseline
from flowforge.eval.likelihood import NLLSummary
from flowforge.fit.distributed import World, from_main, init_world, main_first, rank_device
from flowforge.runs import (
    ModelSpec,
    RunError,
    build_flow,
    check_flow_name,
    parse_spec,
    read_run_record,
    run_files,
)
from flowforge.runs.checkpoint import load_checkpoint
from flowforge.runs.defensive import defend, validated_spec
from flowforge.runs.errors import refuse_fixed_options
from flowforge.runs.recipe import DEQUANTIZER_FILE, build_dequantizer
from flowforge.runs.writer import RunWriter, check_new_run
from flowforge.train.applicable import check_applicable, check_warmup
from flowforge.train.batches import (
    TrainStream,
    level_split,
    prepare_split,
    training_flow,
)
from flowforge.train.config import RESUME_KEYS, ConfigError, TrainConfig
from flowforge.train.diagnose import overfitting
from flowforge.train.loop import FitOutcome, Trainer
from flowforge.train.losses import Objective, VariationalDequantization
from flowforge.train.model import dequantizer_spec_for, objective_for, spec_for
from flowforge.train.prepare import (
    default_out_dir,
    dequantized_summary,
    load_data,
    load_dequantizer,
    new_record,
    resolve_device,
    run_config,
    set_threads,
    test_summary,
    total_steps_of,
)
from flowforge.train.sizing import describe, size_for_data
from flowforge.train.vocoder_source import fit_source
from flowforge.transforms.standardize import standardized_view

__all__ = [
    "TrainResult",
    "dequantized_summary",
    "load_data",
    "load_dequantizer",
    "resolve_device",
    "resume_run",
    "run_config",
    "set_threads",
    "start_run",
    "test_summary",
]


@dataclass
class TrainResult:
    """What a finished ``flowforge train`` reports.

    Attributes:
        run_dir: the run directory.
        outcome: how the fit ended.
        test: the test-split NLL (and bits/dim for images) of the final weights.
        plots: the PNG files written.
        baseline: tables: the test NLL of a full-covariance Gaussian fitted to the training
            rows (:func:`flowforge.eval.baseline.dataset_baseline`); else ``None``.
        audio: audio runs: :func:`flowforge.eval.audio.audio_summary` (nats and bits per
            sample, synthesis speed); else ``None``.
        draw_plots: ``draw_plots(folder)`` writes this run's plots (those ``plots`` lists)
            into ``folder`` and returns their paths, also when the run drew none
            (``--no-plots``): ``--flow auto`` draws its kept trial's plots with it.
    """

    run_dir: Path
    outcome: FitOutcome
    test: NLLSummary
    plots: list[Path]
    baseline: GaussianBaseline | None = None
    audio: dict[str, Any] | None = None
    draw_plots: Callable[[Path], list[Path]] | None = field(default=None, repr=False, compare=False)


def _device(cfg: TrainConfig, world: World) -> tuple[torch.device, World]:
    """This rank's device (and the world with it)."""
    device = rank_device(cfg.device, world) if world.active else resolve_device(cfg.device)
    return device, world.on(device)


#: The command that continues a training run (named in messages).
RESUME = "flowforge train --resume"


def _check_out(cfg: TrainConfig, overwrite: bool) -> Path:
    return check_new_run(Path(cfg.out) if cfg.out else default_out_dir(cfg), overwrite, RESUME)


def start_run(cfg: TrainConfig, *, overwrite: bool = False) -> TrainResult | None:
    """Train a new run as ``cfg`` says (``None`` on ranks other than 0 of a torchrun launch).

    Args:
        cfg: the options.
        overwrite: replace a run found in the output folder (``flowforge train --overwrite``):
            only a run, and only its files (:class:`~flowforge.runs.writer.RunWriter`); a
            folder that is not a run is refused either way.

    Raises:
        ConfigError: bad options or an existing output folder.
        flowforge.data.DataError: the dataset cannot be loaded.
        NonFiniteLoss: training stopped on a non-finite loss.
    """
    check_flow_name(cfg.flow)
    world = init_world()
    out = from_main(lambda: _check_out(cfg, overwrite), world, (ConfigError, RunError))  # one name
    device, world = _device(cfg, world)
    if Path(cfg.data).suffix:
        cfg = cfg.replace(data=str(Path(cfg.data).expanduser().resolve()))
    with main_first(world):  # rank 0 downloads, the others read its copy
        ds = load_data(cfg)
    check_applicable(cfg, ds)  # an option that does nothing here: refused, nothing written
    cfg, sized = size_for_data(cfg, ds)  # tables: the options not given, from rows and columns
    if sized and world.is_main:
        print(describe(sized, ds), flush=True)
    spec = spec_for(cfg, ds)
    deq_spec = dequantizer_spec_for(cfg, ds)
    total = total_steps_of(cfg, ds)
    short = check_warmup(cfg, total)  # a given one refused here; a default one warned below
    set_threads(cfg, device, spec)
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)
    source_fit = fit_source(flow, ds, cfg.seed)  # a vocoder's learned source, before the flow
    if source_fit is not None and world.is_main and not cfg.quiet:
        print(
            f"source estimate fitted: {source_fit['steps']} steps, {source_fit['seconds']:.1f} s, "
            f"log-mel error {source_fit['rms_db']:.2f} dB",
            flush=True,
        )
    deq = None if deq_spec is None else build_dequantizer(deq_spec).to(device)
    objective = objective_for(cfg, flow, deq)
    if short is not None and world.is_main:  # after every refusal: one line for bad input
        print(f"flowforge train: warning: {short}", file=sys.stderr, flush=True)
    cfg = cfg.replace(out=str(out))
    trainer = _trainer(flow, ds, cfg, spec, total, device, objective, world)  # checks first
    writer = None
    if world.is_main:
        record = {**new_record(cfg, spec, ds, total, deq_spec), "sized_from_data": sized}
        if source_fit is not None:
            record["source_fit"] = source_fit
        writer = RunWriter.create(out, record, overwrite, RESUME)
        trainer.attach(writer)
    with writer or nullcontext():
        if writer is not None:
            writer.write_weights(flow)
            if trainer.objective_module is not None:
                writer.write_weights(trainer.objective_module, DEQUANTIZER_FILE)
            trainer.save()
        return _finish(trainer, flow, ds, cfg, spec, out)


def _trainer(
    flow: Flow,
    ds: Dataset,
    cfg: TrainConfig,
    spec: ModelSpec,
    total: int,
    device: torch.device,
    objective: Objective,
    world: World,
) -> Trainer:
    """The trainer of a run: its objective, data stream, validation split, metrics log and
    checkpoints (a learned dequantizer gets the images' levels, not dequantized values;
    standardised tables train in standardised units through :func:`training_flow`; a
    class-conditional TarFlow's ``label_dropout`` nulls contexts in the training batches, since
    the run's flow wraps the preset's stack); on ranks other than 0, no files."""
    levels = isinstance(objective, VariationalDequantization)
    val = level_split(ds, "val") if levels else prepare_split(ds, "val", cfg.seed, True)
    return Trainer(
        training_flow(flow, ds),
        TrainStream(
            ds,
            cfg.batch_size,
            cfg.seed,
            raw=levels,
            standardized=True,
            noise=cfg.noise,
            label_dropout=float(spec.kwargs.get("label_dropout", 0.0)),
        ),
        val,
        cfg,
        total,
        device,
        levels=ds.levels if ds.kind in QUANTIZED_KINDS else None,
        objective=objective,
        objective_weights=Path(DEQUANTIZER_FILE) if levels and world.is_main else None,
        world=world,
        val_context=ds.context_of("val"),  # a vocoder's validation rows given their mel
    )


def _read_run(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    files = run_files(path)
    return read_run_record(files.root), load_checkpoint(files.checkpoint)


def resume_run(path: str | Path, overrides: dict[str, Any]) -> TrainResult | None:
    """Continue the run in ``path`` from its checkpoint; ``overrides`` may change
    :data:`~flowforge.train.config.RESUME_KEYS` only (for example more ``steps``). Under
    torchrun: at any world size, ``None`` on ranks other than 0.

    Raises:
        RunError: the run or its checkpoint is missing, corrupted or foreign.
        ConfigError: an option that a resumed run cannot change.
    """
    world = init_world()
    held: list[RunWriter] = []

    def read() -> tuple[dict[str, Any], dict[str, Any]]:  # rank 0: lock the run, then read it
        held.append(RunWriter.reopen(path))
        return _read_run(path)

    try:
        record, state = from_main(read, world, (RunError, ConfigError))
    except BaseException:
        for w in held:
            w.close()
        raise
    writer = held[0] if held else None
    with writer or nullcontext():
        return _resume(path, overrides, record, state, world, writer)


def _resume(
    path: str | Path,
    overrides: dict[str, Any],
    record: dict[str, Any],
    state: dict[str, Any],
    world: World,
    writer: RunWriter | None,
) -> TrainResult | None:
    files = run_files(path)
    saved = run_config(record, str(files.config))
    spec = parse_spec(record, str(files.config))
    refuse_fixed_options(overrides, RESUME_KEYS, files.config)
    cfg = saved.updated(overrides)
    device, world = _device(cfg, world)
    set_threads(cfg, device, spec)
    with main_first(world):
        ds = load_data(cfg, record=record)
    if ds.dim != spec.features:
        raise RunError(
            f"{cfg.data} now has dimension {ds.dim}, the run was trained on {spec.features}"
        )
    total = (
        total_steps_of(cfg, ds) if {"steps", "epochs"} & set(overrides) else record["total_steps"]
    )
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)
    deq_spec = record.get("dequantizer")
    try:
        deq = None if deq_spec is None else build_dequantizer(deq_spec).to(device)
    except ConfigError as e:
        raise RunError(f"{files.config}: {e}") from None
    objective = objective_for(cfg, flow, deq)
    trainer = _trainer(flow, ds, cfg, spec, total, device, objective, world)
    if writer is not None:
        trainer.attach(writer)
    trainer.load_state_dict(state, str(files.checkpoint))
    if total < trainer.step:  # config.json would then disagree with the steps in results.json
        raise ConfigError(
            f"the run has done {trainer.step} steps; a resumed run continues, so --steps (or "
            f"--epochs) must give more than {trainer.step} in total, got {total}"
        )
    if writer is not None:
        writer.metrics.truncate(trainer.step)
        if overrides:
            record["config"], record["total_steps"] = cfg.to_dict(), total
            writer.write_record(record)
    return _finish(trainer, flow, ds, cfg, spec, files.root)


def _finish(
    trainer: Trainer, flow: Flow, ds: Dataset, cfg: TrainConfig, spec: ModelSpec, out: Path
) -> TrainResult | None:
    files = run_files(out)
    try:
        outcome = trainer.fit(progress=not cfg.quiet)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"continue with: flowforge train --resume {out}") from None
    writer = trainer.writer
    if writer is None:  # ranks other than 0
        return None
    writer.write_weights(flow)
    objective = trainer.objective
    deq = None
    if isinstance(objective, VariationalDequantization):
        writer.write_weights(objective, DEQUANTIZER_FILE)
        deq = objective.dequantizer
    spec = _defend(flow, ds, cfg, spec, writer)
    model = defend(flow, spec)
    test = test_summary(model, ds, cfg, "test", deq)
    results = {"test": test.to_dict(), "steps": outcome.step, "stop_reason": outcome.reason}
    baseline = dataset_baseline(ds, "test")  # tables: a Gaussian fitted to the training rows
    if baseline is not None:
        results["gaussian_baseline"] = baseline.to_dict()
    audio = None
    if ds.kind == "audio":
        from flowforge.eval.audio import audio_summary

        audio = results["audio"] = audio_summary(flow, test, ds)
    results |= {"best_step": outcome.best_step, "best_val_nll": outcome.best_val_nll}
    results["seconds"] = round(trainer.elapsed, 3)
    records = writer.metrics.read()
    kept = outcome.best_step if cfg.restore_best else outcome.step
    likelihood = cfg.objective != "flow-matching"  # flow matching's loss is a squared error
    overfit = overfitting(records, kept, ds.dim, likelihood)  # kept: validation far above train
    if overfit:
        results["warnings"] = [overfit]
        print(f"flowforge train: warning: {overfit}", file=sys.stderr)
    writer.write_results(results)

    def draw_plots(root: Path) -> list[Path]:
        from flowforge.train.plots import write_run_plots

        vocoder = (audio or {}).get("vocoder") or {}
        temperature, gain = vocoder.get("temperature"), int(vocoder.get("mel_gain_rounds") or 0)
        return write_run_plots(root, model, spec, ds, records, likelihood, temperature, gain)

    plots = writer.write_plots(draw_plots) if cfg.plots else []
    return TrainResult(files.root, outcome, test, plots, baseline, audio, draw_plots)


def _defend(
    flow: Flow, ds: Dataset, cfg: TrainConfig, spec: ModelSpec, writer: RunWriter
) -> ModelSpec:
    """A recipe with a defensive mixture: its weight chosen on the validation rows with the
    kept weights (:func:`~flowforge.runs.defensive.validated_spec`), saved in ``config.json``."""
    if spec.defensive is None or getattr(ds, "val", None) is None or len(ds.val) == 0:
        return spec
    view = standardized_view(defend(flow, spec))
    if not isinstance(view, DefensiveMixture):
        return spec
    rows = prepare_split(ds, "val", cfg.seed, True).to(next(iter(flow.parameters())).device)
    was_training = flow.training
    view.eval()
    with torch.no_grad():
        spec, choice = validated_spec(spec, view.flow.log_prob(rows), view.fallback.log_prob(rows))
    flow.train(was_training)
    if choice is not None and not cfg.quiet:
        print(f"defensive mixture: {choice.describe()}", flush=True)
    record = read_run_record(writer.files.root)
    record["model"] = spec.to_dict()
    writer.write_record(record)
    return spec
