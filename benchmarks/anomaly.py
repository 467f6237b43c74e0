"""Anomaly detection side by side: flowforge's estimators (defaults) against scikit-learn's.

Tasks:

- digits: fit on every class but one (80% of those rows), score the other 20% (normal) and
  the held-out class (anomalies); each of the 10 classes, and the mean.
- breast cancer: fit on 70% of the benign rows, score the other 30% (normal) and the
  malignant rows (anomalies).

Every detector is fitted with its defaults (a ``random_state`` of 0 where it has one), on the
same rows, in one process. The flow is fitted once per task as ``FlowAnomalyDetector()``; its
``score_samples`` is ``FlowDensity()``'s log-density (the same model, see
``tests/test_sklearn.py``), and the typicality score ``-|NLL - entropy_|`` is read from the same
fit. Scores are oriented so that low is anomalous; AUROC and average precision (AP, with the
anomalies as positives) are from scikit-learn.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/anomaly.py            # writes results/anomaly.md
    python benchmarks/anomaly.py --classes 0,1 --out -        # a subset, to stdout
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KernelDensity, LocalOutlierFactor

from flowforge.sklearn import FlowAnomalyDetector

RESULTS = Path(__file__).resolve().parent / "results" / "anomaly.md"

BASELINES: dict[str, Callable[[], Any]] = {
    "IsolationForest": lambda: IsolationForest(random_state=0),
    "GaussianMixture": lambda: GaussianMixture(random_state=0),
    "KernelDensity": lambda: KernelDensity(),
    "LocalOutlierFactor": lambda: LocalOutlierFactor(novelty=True),
}
FLOW = "FlowAnomalyDetector"
TYPICALITY = "FlowAnomalyDetector (typicality)"
METHODS = [FLOW, TYPICALITY, *BASELINES]


def _metrics(normal: np.ndarray, anomalies: np.ndarray) -> tuple[float, float]:
    """AUROC and AP of ``-score`` (scores: higher is more normal)."""
    y = np.r_[np.zeros(normal.size), np.ones(anomalies.size)]
    s = -np.r_[normal, anomalies]
    return float(roc_auc_score(y, s)), float(average_precision_score(y, s))


def run_task(
    train: np.ndarray, normal: np.ndarray, anomalies: np.ndarray
) -> dict[str, tuple[float, float, float]]:
    """``{method: (auroc, ap, fit seconds)}`` for one task."""
    out: dict[str, tuple[float, float, float]] = {}
    t = time.perf_counter()
    det = FlowAnomalyDetector(random_state=0).fit(train)
    fit_s = time.perf_counter() - t
    out[FLOW] = (*_metrics(det.score_samples(normal), det.score_samples(anomalies)), fit_s)
    # criterion="typicality" scores -|NLL - entropy_|, which is -det.typicality(X)
    out[TYPICALITY] = (*_metrics(-det.typicality(normal), -det.typicality(anomalies)), 0.0)
    for name, make in BASELINES.items():
        t = time.perf_counter()
        est = make().fit(train)
        fit_s = time.perf_counter() - t
        out[name] = (*_metrics(est.score_samples(normal), est.score_samples(anomalies)), fit_s)
    return out


def tasks(classes: list[int]) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    x, y = load_digits(return_X_y=True)
    out = []
    for c in classes:
        train, normal = train_test_split(x[y != c], test_size=0.2, random_state=0)
        out.append((f"digits, {c} held out", train, normal, x[y == c]))
    xb, yb = load_breast_cancer(return_X_y=True)  # y == 1: benign
    train, normal = train_test_split(xb[yb == 1], test_size=0.3, random_state=0)
    out.append(("breast cancer", train, normal, xb[yb == 0]))
    return out


def _table(rows: dict[str, dict[str, tuple[float, float, float]]], k: int, what: str) -> str:
    head = f"| task ({what}) | " + " | ".join(METHODS) + " |"
    lines = [head, "|---" * (len(METHODS) + 1) + "|"]
    for task, res in rows.items():
        best = max(res[m][k] for m in METHODS)
        cells = [
            f"**{res[m][k]:.3f}**" if res[m][k] == best else f"{res[m][k]:.3f}" for m in METHODS
        ]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="digits classes to hold out")
    ap.add_argument("--out", default=str(RESULTS), help="markdown file, or - for stdout")
    args = ap.parse_args(argv)
    classes = [int(c) for c in args.classes.split(",") if c]
    rows: dict[str, dict[str, tuple[float, float, float]]] = {}
    start = time.perf_counter()
    for name, train, normal, anomalies in tasks(classes):
        rows[name] = run_task(train, normal, anomalies)
        line = ", ".join(f"{m} {rows[name][m][0]:.3f}/{rows[name][m][1]:.3f}" for m in METHODS)
        print(f"{name} (AUROC/AP): {line}; flow fit {rows[name][FLOW][2]:.1f} s", flush=True)
    digits = [r for t, r in rows.items() if t.startswith("digits")]
    if digits:
        mean = {
            m: tuple(float(np.mean([r[m][i] for r in digits])) for i in range(3)) for m in METHODS
        }
        rows = {**{t: r for t, r in rows.items() if t.startswith("digits")},
                f"digits, mean of {len(digits)}": mean,  # type: ignore[dict-item]
                "breast cancer": rows["breast cancer"]}  # fmt: skip
    det = FlowAnomalyDetector()
    settings = [
        f"- {FLOW}: `{det!r}` with `random_state=0`; all other options at their defaults "
        f"(flow `{det.flow}`, noise `{det.noise}`, min_scale {det.min_scale}, "
        f"max_epochs {det.max_epochs}, patience {det.patience}, validation_fraction "
        f'{det.validation_fraction}); {TYPICALITY}: the same fit, `criterion="typicality"`.',
        *(f"- {name}: `{make()!r}`" for name, make in BASELINES.items()),
    ]
    fit_times = [rows[t][FLOW][2] for t in rows if not t.startswith("digits, mean")]
    text = "\n".join([
        "# Anomaly detection: flowforge defaults against scikit-learn's detectors",
        "",
        f"Written by `benchmarks/anomaly.py` ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
        f"{time.perf_counter() - start:.0f} s in all).",
        "",
        "Digits: fit on 80% of the rows of the other nine classes; normal = the other 20%, "
        "anomalies = the held-out class. Breast cancer: fit on 70% of the benign rows; normal "
        "= the other 30%, anomalies = the malignant rows. Best of each row in bold.",
        "",
        "Settings (each detector's defaults):",
        "",
        *settings,
        "",
        "## AUROC",
        "",
        _table(rows, 0, "AUROC"),
        "",
        "## Average precision (anomalies positive)",
        "",
        _table(rows, 1, "AP"),
        "",
        f"Flow fit time per task: {min(fit_times):.0f}-{max(fit_times):.0f} s "
        f"(median {np.median(fit_times):.0f} s) on this machine, which was shared with other "
        f"jobs.",
        "",
    ])  # fmt: skip
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
