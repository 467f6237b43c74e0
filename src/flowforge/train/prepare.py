"""The parts of ``flowforge train`` around the fit: a run's options and device, its data, its
record (``config.json``), its learned dequantizer, and the test-split summaries written into
``results.json`` (also used by ``flowforge eval``). :mod:`.run` puts them together.
"""

from __future__ import annotations

import datetime as _dt
import math
import platform
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

import flowforge
from flowforge.data import Dataset, load_dataset
from flowforge.data.base import Standardizer
from flowforge.data.dequantization import (
    DequantizedLikelihood,
    Dequantizer,
    UniformDequantizer,
    dequantized_log_likelihood,
)
from flowforge.data.user import check_source
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
    load_weights,
)
from flowforge.runs.recipe import DEQUANTIZER_FILE, build_dequantizer
from flowforge.train.batches import (
    level_split,
    prepare_split,
    steps_per_epoch,
)
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.losses import VariationalDequantization
from flowforge.transforms.standardize import Standardize

__all__ = [
    "default_out_dir",
    "dequantized_summary",
    "load_data",
    "load_dequantizer",
    "new_record",
    "resolve_device",
    "run_config",
    "set_threads",
    "test_summary",
    "total_steps_of",
]


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


def default_out_dir(cfg: TrainConfig) -> Path:
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


def total_steps_of(cfg: TrainConfig, ds: Dataset) -> int:
    if cfg.epochs is None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * steps_per_epoch(ds, cfg.batch_size)))


def new_record(
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


def _in_flow_units(
    flow: torch.nn.Module, std: Standardizer, z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``z`` standardised by ``std``, re-expressed in the statistics of the flow's own
    leading ``Standardize`` (float64 throughout), and that standardisation's log-Jacobian."""
    first = flow.bijection.bijections[0]  # type: ignore[union-attr,index]
    assert isinstance(first, Standardize)  # without_standardize(flow) found it
    mean, scale = first.mean.detach().cpu().double(), first.std.detach().cpu().double()
    same = torch.allclose(mean.float().double(), std.mean.float().double(), rtol=0, atol=0)
    if same and torch.allclose(scale.float().double(), std.std.float().double(), rtol=0, atol=0):
        return z, std.log_abs_det()
    raw = std.inverse(z.double())
    return (raw - mean) / scale, -torch.log(scale).sum()


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
        # rows standardised in float64 then cast: not unstandardised to float32 and back;
        # with the flow's own statistics (a saved estimator's floored scales differ from
        # the file's), re-standardised in float64 where they are not the dataset's
        z, log_abs_det = _in_flow_units(flow, ds.standardizer, z)
        ll = standardized_log_likelihoods(flow, z, log_abs_det, cfg.eval_batch_size)
    else:
        x = prepare_split(ds, split, cfg.seed)
        ll = log_likelihoods(flow, x, cfg.eval_batch_size)
    return summarize(ll, ds.dim, ds.levels if ds.kind == "image" else None)
