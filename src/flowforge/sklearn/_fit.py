"""The torch side of the estimators: build a flow with standardisation inside, fit it with
early stopping on a validation split, score and sample it. No scikit-learn import here."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from flowforge.core import Flow
from flowforge.core.defensive import DefensiveMixture
from flowforge.fit.batches import shuffled_batches
from flowforge.fit.loop import KeepBest, Stepper
from flowforge.fit.progress import Progress
from flowforge.fit.schedule import LRSchedule
from flowforge.runs.errors import ConfigError
from flowforge.runs.recipe import ModelSpec, build_flow, whiten_entry
from flowforge.transforms.standardize import standardized_view
from flowforge.transforms.whiten import fit_whiten

__all__ = [
    "FitResult",
    "column_scales",
    "fit_flow",
    "log_prob_rows",
    "make_spec",
    "sample_rows",
    "scott_factor",
    "seeded",
    "spec_stats",
]


#: What the estimators fit and score: a flow, or its defensive mixture with the Gaussian start.
Density = Flow | DefensiveMixture

#: Noise draws per validation row when training with noise (a steadier validation NLL).
VAL_NOISE_COPIES = 4


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded, restoring the caller's state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def column_scales(x: np.ndarray, min_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Each column's mean and scale: its std, raised to at least ``min_scale`` times the
    median std of the columns that vary (``1`` for a column when no column varies).

    Example:
        >>> x = np.array([[0.0, 0.0, 5.0], [2.0, 4.0, 5.0], [4.0, 0.0, 5.0]])
        >>> column_scales(x, 1.0)[1].round(3).tolist()
        [1.759, 1.886, 1.759]
    """
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    varies = std > 1e-12 * np.maximum(1.0, np.abs(mean))
    floor = min_scale * float(np.median(std[varies])) if varies.any() else 0.0
    std = np.where(varies, std, 1.0 if floor <= 0 else floor)
    return mean, np.maximum(std, floor)


#: The default noise as a share of Scott's bandwidth: a flow trained on noisy rows smooths
#: more than a kernel estimate of the same bandwidth (its capacity is finite), so it takes
#: less. 0.75 is from held-out-class runs on scikit-learn's digits (0.7 of a column's scale
#: beat 1.0 there; see benchmarks/anomaly.py), not a derivation.
NOISE_OF_SCOTT = 0.75


def scott_factor(n: int, d: int) -> float:
    """The default training noise: :data:`NOISE_OF_SCOTT` times Scott's rule of thumb
    ``n ** (-1 / (d + 4))`` (a kernel bandwidth in units of each column's scale) for ``n``
    rows of ``d`` columns.

    Example:
        >>> round(scott_factor(1000, 2), 3)
        0.237
    """
    return NOISE_OF_SCOTT * float(max(n, 1) ** (-1.0 / (d + 4)))


def make_spec(
    preset: str,
    kwargs: dict[str, Any],
    mean: np.ndarray,
    std: np.ndarray | None,
    whiten: np.ndarray | None = None,
    noise: np.ndarray | None = None,
) -> ModelSpec:
    """The recipe of a tabular flow over ``D = mean.size`` features.

    With ``std`` given, ``Standardize(mean, std)`` is the flow's first bijection, so its
    log-Jacobian ``-sum(log std)`` is part of every ``log_prob``. With ``whiten`` (the training
    rows, in the units of ``X``) and ``std``, a fixed
    :class:`~flowforge.transforms.whiten.Whiten` of the standardised training rows (Ledoit-Wolf
    shrinkage) ends the flow, so the untrained flow is their full-covariance Gaussian (of the rows smoothed by ``noise``, the ``(D,)`` standard deviations in the units
    of ``X`` of the noise that the fit adds, when given).
    """
    d = int(mean.size)
    standardizer = None
    if std is not None:
        standardizer = {"mean": mean.tolist(), "std": std.tolist(), "shape": [d]}
    entry = None
    if std is not None and whiten is not None and whiten.shape[0] >= 2:
        var = None if noise is None else torch.from_numpy(np.asarray(noise) / std) ** 2
        w, shrinkage = fit_whiten(_standardized((mean, std), whiten), None, var)
        entry = whiten_entry(w, shrinkage)
    return ModelSpec(
        preset, {**kwargs, "features": d}, "tabular", (d,), standardizer=standardizer, whiten=entry
    )


def _tensor(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A tensor copy of ``x`` (read-only and memory-mapped arrays included)."""
    return torch.from_numpy(np.array(x, dtype=np.float64, copy=True)).to(dtype)


def _standardized(stats: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> torch.Tensor:
    """``(x - mean) / std`` in float64 for ``stats = (mean, std)``."""
    mean, std = (torch.from_numpy(np.asarray(a, dtype=np.float64)) for a in stats)
    return (_tensor(x, torch.float64) - mean) / std


def _model_rows(
    flow: Density, x: np.ndarray, dtype: torch.dtype, stats: tuple[np.ndarray, np.ndarray] | None
) -> tuple[Density, torch.Tensor]:
    """The module to evaluate and the rows it takes: for a flow that starts with
    ``Standardize`` and the float64 statistics ``stats`` it was built from, its
    :func:`~flowforge.train.batches.standardized_view` and ``x`` standardised in float64, then
    cast to ``dtype`` (a column near 1.7e9 that varies by +-100 keeps its distinct values);
    otherwise ``flow`` and ``x`` cast."""
    view = standardized_view(flow) if stats is not None else None
    if view is None or stats is None:
        return flow, _tensor(x, dtype)
    return view, _standardized(stats, x).to(dtype)


def spec_stats(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The float64 ``(mean, std)`` of a recipe's ``Standardize`` (``None``: it has none)."""
    if spec.standardizer is None:
        return None
    d = spec.standardizer
    return np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64)


def log_prob_rows(
    flow: Density,
    x: np.ndarray,
    batch_size: int = 4096,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``log p(x)`` of every row of ``x`` ``(N, D)`` as float64 ``(N,)``, in evaluation mode.

    With ``stats``, the float64 ``(mean, std)`` that the flow's leading ``Standardize`` was
    built from, the rows are standardised in float64 first (see :func:`_model_rows`).
    """
    was_training = flow.training
    flow.eval()
    out = []
    dtype = next(iter(flow.parameters())).dtype
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            model, xb = _model_rows(flow, x[i : i + batch_size], dtype, stats)
            out.append(model.log_prob(xb).double().numpy())
    flow.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def sample_rows(
    flow: Density, n: int, seed: int, stats: tuple[np.ndarray, np.ndarray] | None = None
) -> np.ndarray:
    """``n`` samples ``(n, D)`` as float64, drawn with torch seeded by ``seed``; with ``stats``
    (see :func:`log_prob_rows`) mapped back to the data's units in float64."""
    flow.eval()
    view = standardized_view(flow) if stats is not None else None
    with seeded(seed), torch.no_grad():
        if view is None or stats is None:
            return flow.sample(n).double().numpy()
        z = view.sample(n).double().numpy()
    return z * stats[1] + stats[0]


def _mean_nll(model: Density, rows: torch.Tensor) -> float:
    """The mean NLL of ``rows`` in evaluation mode, in one pass (the mode is left at eval)."""
    model.eval()
    with torch.no_grad():
        return float(-model.log_prob(rows).double().mean())


def _batch_nll(model: Density, xb: torch.Tensor) -> torch.Tensor:
    """The training loss of a batch: its mean NLL."""
    return -model.log_prob(xb).mean()


def _kept_rows(flow: Density, data: torch.Tensor, trim: float) -> torch.Tensor:
    """The indices of the rows of ``data`` left after dropping the share ``trim`` of lowest
    log-likelihood (non-finite ones first)."""
    flow.eval()
    with torch.no_grad():
        lp = torch.cat([flow.log_prob(data[i : i + 4096]) for i in range(0, len(data), 4096)])
    flow.train()
    lp = torch.nan_to_num(lp, nan=-torch.inf)
    n_drop = int(trim * lp.numel())
    return torch.argsort(lp, descending=True)[: lp.numel() - n_drop]


@dataclass
class FitResult:
    """What :func:`fit_flow` returns.

    Attributes:
        flow: the fitted flow (best validation weights when there was a validation split).
        epochs: epochs run.
        best_epoch: the epoch whose weights were kept (1-based; 0: the initial weights, which
            the validation rows preferred to every epoch's).
        val_nll: per-epoch mean validation NLL (empty without a validation split).
        train_nll: per-epoch mean training NLL.
        stopped_early: whether patience ran out before ``max_epochs``.
    """

    flow: Flow
    epochs: int
    best_epoch: int
    val_nll: list[float]
    train_nll: list[float]
    stopped_early: bool


def fit_flow(
    spec: ModelSpec,
    x_train: np.ndarray,
    x_val: np.ndarray | None,
    *,
    seed: int,
    max_epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    noise: np.ndarray | None = None,
    clip_grad: float = 5.0,
    trim: float = 0.0,
    verbose: bool = False,
) -> FitResult:
    """Maximum likelihood fit of the flow of ``spec`` with Adam and early stopping, on the step
    engine of :mod:`flowforge.fit.loop` (this function brings the objective, the epochs of
    shuffled, noised and trimmed rows, and the defaults).

    Args:
        spec: the recipe (its ``Standardize`` statistics come from ``x_train``; the rows are
            standardised with them in float64, then cast to float32, and the flow trains on
            them through its :func:`~flowforge.train.batches.standardized_view`).
        x_train: ``(N, D)`` training rows.
        x_val: ``(M, D)`` validation rows, or ``None`` to train ``max_epochs`` epochs.
        seed: seeds the initial weights and the minibatch order (torch's global state is left
            as it was).
        max_epochs: most passes over ``x_train``.
        batch_size: minibatch size (at most ``N``).
        lr: Adam learning rate (cosine-decayed to zero over ``max_epochs``).
        weight_decay: decoupled weight decay (AdamW).
        patience: epochs without a better validation NLL before stopping.
        clip_grad: gradient norm clip.
        noise: ``(D,)`` standard deviations of Gaussian noise added to each training batch (a
            smoothing regulariser, like a kernel bandwidth); ``None`` for none. The validation
            rows then get noise too (:data:`VAL_NOISE_COPIES` fixed draws of it), so early
            stopping watches the smoothed density that is being fitted.
        trim: from the second epoch on, each epoch leaves out this share of the training rows
            with the lowest likelihood under the current flow (a robust fit on data that hold
            anomalies); ``0`` uses every row.
        verbose: a progress bar over the epochs and one line per epoch on stderr
            (:class:`~flowforge.fit.progress.Progress`); silent otherwise.
    """
    with seeded(seed):
        try:
            flow = build_flow(spec)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        flow.train()
        stats = spec_stats(spec)
        model, data = _model_rows(flow, x_train, torch.float32, stats)  # float64 standardised
        val = None if x_val is None else _model_rows(flow, x_val, torch.float32, stats)[1]
        gen = torch.Generator().manual_seed(seed)
        sigma = None if noise is None else torch.tensor(noise, dtype=torch.float64)
        if sigma is not None and model is not flow and stats is not None:  # standardised units
            sigma = sigma / torch.from_numpy(stats[1])
        sigma = None if sigma is None else sigma.float()
        if val is not None and sigma is not None:
            val = val.repeat(VAL_NOISE_COPIES, 1)
            val = val + sigma * torch.randn(val.shape, generator=gen)
        params = [p for p in flow.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        n = data.shape[0]
        bs = max(1, min(batch_size, n))
        steps_per_epoch = math.ceil(n / bs)
        total = max(1, max_epochs * steps_per_epoch)
        epoch = step = 0

        def diverged(what: str, value: float, step: int) -> None:
            what = "NLL" if what == "loss" else what
            raise FloatingPointError(
                f"the training {what} became {value} at epoch {epoch}; lower lr or use a "
                "smaller flow"
            )

        stepper = Stepper(
            opt,
            LRSchedule("cosine", lr, total),
            params=params,
            clip=clip_grad,
            check_gradient=False,
            on_non_finite=diverged,
        )
        keep = KeepBest(flow.state_dict, patience=patience, rel_tol=1e-4)
        if val is not None:  # the start (a whitened flow: the Gaussian fit) is a candidate
            keep.start(_mean_nll(model, val))
        val_hist: list[float] = []
        train_hist: list[float] = []
        stopped = False
        start = time.perf_counter()
        shown = Progress(
            max_epochs, enabled=verbose, unit="epoch", desc="fit", leave=False, every=1
        )
        with shown as bar:
            for epoch in range(1, max_epochs + 1):
                flow.train()
                rows = _kept_rows(model, data, trim) if trim > 0 and epoch > 1 else n
                total_loss, seen = 0.0, 0
                for idx in shuffled_batches(rows, bs, gen):
                    xb = data[idx]
                    if sigma is not None:
                        xb = xb + sigma * torch.randn(xb.shape, generator=gen)
                    loss = stepper.step(step, partial(_batch_nll, model, xb))
                    assert loss is not None  # diverged() raised otherwise
                    step += 1
                    total_loss += loss.item() * xb.shape[0]
                    seen += xb.shape[0]
                train_hist.append(total_loss / seen)
                msg = f"epoch {epoch}/{max_epochs} train NLL {train_hist[-1]:.4f}"
                if val is not None:
                    v = _mean_nll(model, val)
                    val_hist.append(v)
                    msg += f" val NLL {v:.4f}"
                    keep.observe(epoch, v)
                if verbose:
                    bar.write(f"{msg} ({time.perf_counter() - start:.1f} s)")
                figures = {"train_nll": f"{train_hist[-1]:.4f}"}
                bar.show(epoch, figures | ({"val_nll": f"{val_hist[-1]:.4f}"} if val_hist else {}))
                if val is not None and keep.stop:
                    stopped = True
                    break
        best_epoch = epoch
        if keep.weights is not None:
            flow.load_state_dict(keep.weights)
            best_epoch = keep.best_step
        flow.eval()
    return FitResult(flow, epoch, best_epoch, val_hist, train_hist, stopped)
