"""Anomaly detection on a 1-D signal: a flow's density of sliding windows against two baselines.

The series come with the ``aeon`` wheel (files inside the package, read without importing it,
so no download and none of aeon's own dependencies: ``pip install --no-deps "aeon>=1.6,<1.7"``):

- ``ecg``: *ecg-diff-count-3*, a synthetic ECG made with GutenTAG (Wenig et al. 2022): a
  10,000-point training series without anomalies, and a 10,000-point test series with three
  labelled anomalies of 100 points each (beats of another shape, amplitude or rhythm).
- ``bleeding``: *KDD-TSAD 135*, the heart rate of a patient with internal bleeding from the
  UCR anomaly archive (Keogh et al., SIGKDD 2021): 1,200 normal training points, then a
  7,501-point test series (which starts with them) with one labelled 12-point anomaly.

Every window of ``W`` consecutive points (stride 1), standardised with the training series'
mean and standard deviation, is a row. The flow is ``ff.FlowDensity`` (a MAF, whitened so
that it starts at the training windows' full-covariance Gaussian); a window's score is its
``-log p``. The baselines score the same windows: the Mahalanobis distance under that
Gaussian, and the distance to the nearest training window (the "discord" of the time-series
anomaly literature). A point's score is the largest score of the windows that cover it; the
AUROC (scikit-learn) is over the test points against their labels, and over the windows
(a window is anomalous when it covers an anomalous point).

    PYTHONPATH=src python examples/anomaly_1d.py --series ecg --window 32

References:
    Wenig, Schmidl, Papenbrock (2022). TimeEval: a benchmarking toolkit for time series
    anomaly detection algorithms. VLDB 15(12) (GutenTAG).
    Wu, Keogh (2021). Current time series anomaly detection benchmarks are flawed and are
    creating the illusion of progress. arXiv:2009.13807 (the UCR anomaly archive).
    Papamakarios, Pavlakou, Murray (2017). Masked Autoregressive Flow for Density
    Estimation. arXiv:1705.07057.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

import flowforge as ff

#: series name -> (folder under aeon/datasets/data, training file, test file)
SERIES = {
    "ecg": ("UnitTest", "ecg-diff-count-3_TRAIN_NA.csv", "ecg-diff-count-3_TEST.csv"),
    "bleeding": (
        "KDD-TSAD_135",
        "135_UCR_Anomaly_InternalBleeding16_TRAIN.csv",
        "135_UCR_Anomaly_InternalBleeding16_TEST.csv",
    ),
}


def aeon_data() -> Path | None:
    """The folder of aeon's packaged data sets, or ``None`` when aeon is not installed."""
    spec = importlib.util.find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def load_series(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train (N,), test (M,), test labels (M,) in {0, 1})`` of a :data:`SERIES` entry
    (TimeEval's CSV: ``timestamp,value,is_anomaly``)."""
    root = aeon_data()
    if root is None:
        raise SystemExit('the series come with aeon: pip install --no-deps "aeon>=1.6,<1.7"')
    folder, train_file, test_file = SERIES[name]
    paths = [root / folder / train_file, root / folder / test_file]
    if not all(p.is_file() for p in paths):
        raise SystemExit(f"this aeon has no {paths[0].name}: pip install 'aeon>=1.6,<1.7'")
    train, test = (np.loadtxt(p, delimiter=",", skiprows=1) for p in paths)
    return train[:, 1], test[:, 1], test[:, -1].astype(int)


def windows(x: np.ndarray, width: int) -> np.ndarray:
    """``(N - width + 1, width)``: row ``i`` is ``x[i : i + width]``."""
    return np.lib.stride_tricks.sliding_window_view(x, width).copy()


def point_scores(window_scores: np.ndarray, width: int) -> np.ndarray:
    """A point's score: the largest score of the windows that cover it.

    Args:
        window_scores: ``(N - width + 1,)`` scores of the windows of a series of ``N`` points.
        width: the window length.

    Returns:
        ``(N,)`` scores.
    """
    n = len(window_scores) + width - 1
    out = np.full(n, -np.inf)
    for k in range(width):  # window i covers points i .. i + width - 1
        out[k : k + len(window_scores)] = np.maximum(out[k : k + len(window_scores)], window_scores)
    return out


def detect(
    series: str = "ecg",
    width: int = 32,
    epochs: int = 30,
    train_stride: int = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit the flow and the baselines on the training windows; AUROC of each on the test.

    Args:
        series: a key of :data:`SERIES`.
        width: points per window.
        epochs: most epochs of the flow (early stopping on 10% of the training windows).
        train_stride: keep every ``train_stride``-th training window (a quick run).
        seed: of the flow's initial weights, split and batches.
    """
    train, test, labels = load_series(series)
    mean, std = train.mean(), train.std()
    rows = windows((train - mean) / std, width)[::train_stride]  # (N, W)
    test_rows = windows((test - mean) / std, width)  # (M, W)
    window_labels = windows(labels, width).max(axis=1)

    start = time.perf_counter()
    flow = ff.FlowDensity(
        "maf",
        transforms=5,
        hidden=(64, 64),
        whiten=True,
        max_epochs=epochs,
        patience=5,
        random_state=seed,
    ).fit(rows)
    seconds = time.perf_counter() - start
    scores = {"flow": -flow.score_samples(test_rows)}
    centred = rows - rows.mean(axis=0)
    cov = centred.T @ centred / len(rows) + 1e-6 * np.eye(width)
    d = test_rows - rows.mean(axis=0)
    scores["gaussian"] = np.einsum("ni,ni->n", d, np.linalg.solve(cov, d.T).T)
    nearest = NearestNeighbors(n_neighbors=1).fit(rows)
    scores["nearest window"] = nearest.kneighbors(test_rows)[0][:, 0]
    result: dict[str, Any] = {
        "series": series,
        "width": width,
        "train_windows": len(rows),
        "test_points": len(test),
        "anomalous_points": int(labels.sum()),
        "flow_epochs": int(flow.n_epochs_),
        "flow_seconds": round(seconds, 1),
    }
    for name, s in scores.items():
        result[name] = {
            "auroc_points": float(roc_auc_score(labels, point_scores(s, width))),
            "auroc_windows": float(roc_auc_score(window_labels, s)),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", choices=sorted(SERIES), default="ecg")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--train-stride", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = detect(args.series, args.window, args.epochs, args.train_stride, args.seed)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
