"""``flowforge train``: start or resume a run directory, fit, evaluate on the test split, plot.

Every check that can fail on the user's input (options, dataset, flow, objective, output
folder) runs before the run directory is created, so a bad command leaves nothing half-written.

A run with ``dequantization = "variational"`` also holds its learned dequantizer: the recipe
under ``"dequantizer"`` in ``config.json`` and the weights in ``dequantizer.safetensors``
(written atomically, the best validated ones, like ``model.safetensors``; the state dict of
:class:`~flowforge.train.losses.VariationalDequantization`). ``ff.load`` still returns the flow
over ``u``.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import flowforge
from flowforge.core import Flow
from flowforge.data import Dataset, load_dataset
from flowforge.data.dequantization import (
    DequantizedLikelihood,
    Dequantizer,
    UniformDequantizer,
    dequantized_log_likelihood,
)
from flowforge.data.user import check_source
from flowforge.eval.baseline import dataset_baseline
from flowforge.eval.likelihood import (
    NLLSummary,
    NonFiniteLikelihood,
    log_likelihoods,
    standardized_log_likelihoods,
    summarize,
    without_standardize,
)
from flowforge.runs import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    ModelSpec,
    RunError,
    RunFiles,
    atomic_write_json,
    build_flow,
    check_flow_name,
    load_weights,
    parse_spec,
    read_run_record,
    run_files,
    save_weights,
)
from flowforge.runs.recipe import DEQUANTIZER_FILE, build_dequantizer
from flowforge.train.batches import TrainStream, level_split, prepare_split, steps_per_epoch
from flowforge.train.checkpoint import load_checkpoint
from flowforge.train.config import RESUME_KEYS, ConfigError, TrainConfig
from flowforge.train.loop import FitOutcome, Trainer
from flowforge.train.losses import Objective, VariationalDequantization
from flowforge.train.metrics import MetricsLog
from flowforge.train.model import dequantizer_spec_for, objective_for, spec_for

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
    """

    run_dir: Path
    outcome: FitOutcome
    test: NLLSummary
    plots: list[Path]
    baseline: NLLSummary | None = None


def run_config(record: dict[str, Any], origin: str) -> TrainConfig:
    """The training options of a run record (its ``"config"`` entry).

    Args:
        record: a record from :func:`flowforge.runs.read_run_record` (or ``Run.record``).
        origin: the file the record came from, for the message.

    Raises:
        RunError: if the options are missing or malformed.
    """
    try:
        return TrainConfig.from_dict(record["config"])
    except (KeyError, TypeError, ValueError) as e:
        msg = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
        raise RunError(f"{origin} has a malformed run record ({msg})") from None


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (which must be available) or ``auto`` (cuda when available).

    Raises:
        ConfigError: for ``cuda`` on a machine without a usable GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use cpu or auto)")
    return torch.device(name)


def set_threads(cfg: TrainConfig, device: torch.device, spec: ModelSpec) -> None:
    """Set torch's CPU threads for this process (the ``flowforge`` program, never on import).

    ``threads = 0`` picks one thread per 64k activations of a hidden layer (batch x width, times
    the pixels of the first squeezed level for image presets), at least 1 and at most torch's
    default: small flows run fastest on one thread, and spare cores then serve other processes
    instead of spinning.
    """
    if device.type != "cpu":
        return
    n = cfg.threads
    if n == 0:
        hidden = spec.kwargs.get("hidden", 64)
        width = max(hidden) if isinstance(hidden, (list, tuple)) else int(hidden)
        if "shape" in spec.kwargs:  # conv nets: every pixel of the squeezed image is a row
            width *= max(1, math.prod(spec.data_shape[1:]) // 4)
        n = min(torch.get_num_threads(), max(1, cfg.batch_size * width // 65536))
    torch.set_num_threads(n)


def _default_out(cfg: TrainConfig) -> Path:
    stem = Path(cfg.data).stem if Path(cfg.data).suffix else cfg.data
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path("runs") / f"{stem}-{cfg.flow}-{stamp}"
    n = 1
    while out.exists():
        n += 1
        out = Path("runs") / f"{stem}-{cfg.flow}-{stamp}-{n}"
    return out


def load_data(
    cfg: TrainConfig, spec: ModelSpec | None = None, record: dict[str, Any] | None = None
) -> Dataset:
    """The dataset of a run's options (the same splits every time for the same options).

    Args:
        cfg: the run's options.
        spec: the run's flow recipe, to check the dimension.
        record: the run's record: a user file must still have the fingerprint stored there
            (rows, columns, SHA-256, header), so that a changed file is refused.

    Raises:
        flowforge.data.DataError: the dataset cannot be loaded, or the file changed.
        RunError: its dimension differs from the one the run's flow was built for.
    """
    data = (record or {}).get("data") or {}
    n_val, n_test, header = cfg.n_val, cfg.n_test, cfg.header
    if record is not None and "split" not in data:
        # a run written before --n-val/--n-test applied to tables: its 10000 was ignored there
        n_val = None if n_val == 10_000 else n_val
        n_test = None if n_test == 10_000 else n_test
    if isinstance(data.get("source"), dict):
        header = data["source"].get("header", header)  # the header rule's choice of training
    ds = load_dataset(
        cfg.data,
        data_dir=cfg.data_dir,
        seed=cfg.seed,
        n_val=n_val,
        n_test=n_test,
        columns=cfg.column_list(),
        header=header,
    )
    if spec is not None and ds.dim != spec.features:
        raise RunError(f"{cfg.data} has dimension {ds.dim}; the run was trained on {spec.features}")
    if record is not None:
        check_source(data.get("source"), ds.source, cfg.data)
    return ds


def _total_steps(cfg: TrainConfig, ds: Dataset) -> int:
    if cfg.epochs is None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * steps_per_epoch(ds, cfg.batch_size)))


def _record(
    cfg: TrainConfig, spec: ModelSpec, ds: Dataset, total: int, deq: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "config": cfg.to_dict(),
        "model": spec.to_dict(),
        **({} if deq is None else {"dequantizer": deq}),
        "data": {
            "name": ds.name,
            "kind": ds.kind,
            "event_shape": list(ds.event_shape),
            "dim": ds.dim,
            "levels": ds.levels,
            "columns": ds.columns,
            "source": ds.source,  # user files: rows, columns, sha256, header
            "split": {
                k: (None if t is None else int(t.shape[0]))
                for k, t in (("train", ds.train), ("val", ds.val), ("test", ds.test))
            },
        },
        "total_steps": total,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "flowforge": flowforge.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def load_dequantizer(record: dict[str, Any], root: Path) -> Dequantizer | None:
    """A run's learned dequantizer (its recipe in the record, its weights in
    ``dequantizer.safetensors``), in evaluation mode; ``None`` for a run without one.

    Raises:
        RunError: the recipe or the weights are missing, corrupted or do not fit.
    """
    spec = record.get("dequantizer")
    if spec is None:
        return None
    try:
        deq = build_dequantizer(spec)
    except ConfigError as e:
        raise RunError(f"{root / 'config.json'}: {e}") from None
    load_weights(root / DEQUANTIZER_FILE, VariationalDequantization(deq))
    return deq.eval()


def _dequantizer_of(ds: Dataset, dequantizer: Dequantizer | None) -> Dequantizer:
    assert ds.levels is not None
    return dequantizer or UniformDequantizer(tuple(ds.event_shape), int(ds.levels))


def dequantized_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    split: str,
    dequantizer: Dequantizer | None,
    samples: int,
) -> DequantizedLikelihood:
    """The dequantization bound of an image split's levels and its importance-sampled estimate
    with ``samples`` noises per image (uniform noise when ``dequantizer`` is ``None``), seeded
    by the run's seed.

    Raises:
        flowforge.eval.likelihood.NonFiniteLikelihood: a non-finite log-likelihood.
    """
    deq = _dequantizer_of(ds, dequantizer)
    device = next(iter(flow.parameters())).device
    v = level_split(ds, split).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.seed + 15_485_863)
        try:
            return dequantized_log_likelihood(
                flow, deq.to(device), v, samples, max(1, cfg.eval_batch_size // samples)
            )
        except FloatingPointError as e:
            raise NonFiniteLikelihood(str(e)) from None


def test_summary(
    flow: torch.nn.Module,
    ds: Dataset,
    cfg: TrainConfig,
    split: str,
    dequantizer: Dequantizer | None = None,
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
        res = dequantized_summary(flow, ds, cfg, split, dequantizer, 1)
        ll = res.bound + res.dim * math.log(res.levels)
    elif ds.standardizer is not None and z is not None and without_standardize(flow) is not None:
        # rows standardised in float64 then cast: not unstandardised to float32 and back
        ll = standardized_log_likelihoods(
            flow, z, ds.standardizer.log_abs_det(), cfg.eval_batch_size
        )
    else:
        x = prepare_split(ds, split, cfg.seed)
        ll = log_likelihoods(flow, x, cfg.eval_batch_size)
    return summarize(ll, ds.dim, ds.levels if ds.kind == "image" else None)


def start_run(cfg: TrainConfig) -> TrainResult:
    """Train a new run as ``cfg`` says.

    Raises:
        ConfigError: bad options or an existing output folder.
        flowforge.data.DataError: the dataset cannot be loaded.
        NonFiniteLoss: training stopped on a non-finite loss.
    """
    check_flow_name(cfg.flow)
    out = Path(cfg.out) if cfg.out else _default_out(cfg)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = f"; continue it with --resume {out}" if (out / "config.json").exists() else ""
        raise ConfigError(f"output folder {out} already exists and is not empty{hint}")
    device = resolve_device(cfg.device)
    if Path(cfg.data).suffix:
        cfg = cfg.replace(data=str(Path(cfg.data).expanduser().resolve()))
    ds = load_data(cfg)
    spec = spec_for(cfg, ds)
    deq_spec = dequantizer_spec_for(cfg, ds)
    total = _total_steps(cfg, ds)
    set_threads(cfg, device, spec)
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)
    deq = None if deq_spec is None else build_dequantizer(deq_spec).to(device)
    objective = objective_for(cfg, flow, deq)
    cfg = cfg.replace(out=str(out))
    files = run_files(out)
    trainer = _trainer(flow, ds, cfg, total, device, files, objective)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(files.config, _record(cfg, spec, ds, total, deq_spec))
    save_weights(files.weights, flow)
    if trainer.objective_module is not None:
        save_weights(out / DEQUANTIZER_FILE, trainer.objective_module)
    trainer.save()
    return _finish(trainer, ds, cfg, spec, out)


def _trainer(
    flow: Flow,
    ds: Dataset,
    cfg: TrainConfig,
    total: int,
    device: torch.device,
    files: RunFiles,
    objective: Objective,
) -> Trainer:
    """The trainer of a run: its objective, data stream, validation split, metrics log and
    checkpoints (a learned dequantizer gets the images' levels, not dequantized values)."""
    levels = isinstance(objective, VariationalDequantization)
    return Trainer(
        flow,
        TrainStream(ds, cfg.batch_size, cfg.seed, raw=levels),
        level_split(ds, "val") if levels else prepare_split(ds, "val", cfg.seed),
        cfg,
        total,
        device,
        metrics=MetricsLog(files.metrics),
        checkpoint=files.checkpoint,
        weights=files.weights,
        levels=ds.levels if ds.kind == "image" else None,
        objective=objective,
        objective_weights=files.root / DEQUANTIZER_FILE if levels else None,
    )


def resume_run(path: str | Path, overrides: dict[str, Any]) -> TrainResult:
    """Continue the run in ``path`` from its checkpoint; ``overrides`` may change
    :data:`~flowforge.train.config.RESUME_KEYS` only (for example more ``steps``).

    Raises:
        RunError: the run or its checkpoint is missing, corrupted or foreign.
        ConfigError: an option that a resumed run cannot change.
    """
    files = run_files(path)
    record = read_run_record(files.root)
    saved = run_config(record, str(files.config))
    spec = parse_spec(record, str(files.config))
    fixed = sorted(k for k in overrides if k not in RESUME_KEYS)
    if fixed:
        flag = "--" + fixed[0].replace("_", "-")
        raise ConfigError(
            f"{flag} cannot change when resuming (it comes from {files.config}); "
            f"options that can: {', '.join('--' + k.replace('_', '-') for k in RESUME_KEYS)}"
        )
    cfg = saved.updated(overrides)
    state = load_checkpoint(files.checkpoint)
    device = resolve_device(cfg.device)
    set_threads(cfg, device, spec)
    ds = load_data(cfg, record=record)
    if ds.dim != spec.features:
        raise RunError(
            f"{cfg.data} now has dimension {ds.dim}, the run was trained on {spec.features}"
        )
    total = _total_steps(cfg, ds) if {"steps", "epochs"} & set(overrides) else record["total_steps"]
    torch.manual_seed(cfg.seed)
    flow = build_flow(spec).to(device)
    deq_spec = record.get("dequantizer")
    try:
        deq = None if deq_spec is None else build_dequantizer(deq_spec).to(device)
    except ConfigError as e:
        raise RunError(f"{files.config}: {e}") from None
    trainer = _trainer(flow, ds, cfg, total, device, files, objective_for(cfg, flow, deq))
    trainer.load_state_dict(state, str(files.checkpoint))
    for stale in files.root.glob(".*.tmp"):  # half-written files of a killed run
        stale.unlink(missing_ok=True)
    MetricsLog(files.metrics).truncate(trainer.step)
    if overrides:
        record["config"], record["total_steps"] = cfg.to_dict(), total
        atomic_write_json(files.config, record)
    return _finish(trainer, ds, cfg, spec, files.root)


def _finish(
    trainer: Trainer, ds: Dataset, cfg: TrainConfig, spec: ModelSpec, out: Path
) -> TrainResult:
    files = run_files(out)
    try:
        outcome = trainer.fit(progress=not cfg.quiet)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"continue with: flowforge train --resume {out}") from None
    save_weights(files.weights, trainer.model)
    objective = trainer.objective
    deq = None
    if isinstance(objective, VariationalDequantization):
        save_weights(out / DEQUANTIZER_FILE, objective)
        deq = objective.dequantizer
    test = test_summary(trainer.model, ds, cfg, "test", deq)
    results = {"test": test.to_dict(), "steps": outcome.step, "stop_reason": outcome.reason}
    baseline = dataset_baseline(ds, "test")  # tables: a Gaussian fitted to the training rows
    if baseline is not None:
        results["gaussian_baseline"] = baseline.to_dict()
    results |= {"best_step": outcome.best_step, "best_val_nll": outcome.best_val_nll}
    results["seconds"] = round(trainer.elapsed, 3)
    atomic_write_json(files.results, results)
    plots: list[Path] = []
    if cfg.plots:
        from flowforge.train.plots import write_run_plots

        plots = write_run_plots(out, trainer.model, spec, ds, MetricsLog(files.metrics).read())
    return TrainResult(out, outcome, test, plots, baseline)
