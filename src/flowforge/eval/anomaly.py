"""Likelihood-based anomaly detection: rank rows by ``-log p(x)`` and measure the ranking.

A flow trained on normal data gives every new row an exact log-likelihood; rows the flow finds
unlikely are flagged. The area under the ROC curve measures how well that ranking separates
anomalies from normal rows, independently of any threshold.
"""

from __future__ import annotations

import numpy as np
from torch import Tensor


def _as_numpy(t: Tensor | np.ndarray) -> np.ndarray:
    arr = (
        t.detach().cpu().double().numpy()
        if isinstance(t, Tensor)
        else np.asarray(t, dtype=np.float64)
    )
    if arr.ndim != 1:
        raise ValueError(f"expected 1-D scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("scores contain NaN or inf")
    return arr


def auroc(normal_log_prob: Tensor | np.ndarray, anomaly_log_prob: Tensor | np.ndarray) -> float:
    """Area under the ROC curve of the anomaly score ``-log p(x)``.

    Args:
        normal_log_prob: ``(N,)`` log-likelihoods of normal rows.
        anomaly_log_prob: ``(M,)`` log-likelihoods of anomalous rows.

    Returns:
        The AUROC in ``[0, 1]``: 1 when every anomaly is less likely than every normal row,
        0.5 for a random ranking.

    Example:
        >>> import torch
        >>> auroc(torch.tensor([-1.0, -2.0, -1.5]), torch.tensor([-9.0, -1.8]))
        0.8333333333333334
    """
    from sklearn.metrics import roc_auc_score  # optional extra: flowforge[cli]

    normal, anomaly = _as_numpy(normal_log_prob), _as_numpy(anomaly_log_prob)
    if normal.size == 0 or anomaly.size == 0:
        raise ValueError("need at least one normal and one anomalous score")
    labels = np.concatenate([np.zeros(normal.size), np.ones(anomaly.size)])
    scores = -np.concatenate([normal, anomaly])
    return float(roc_auc_score(labels, scores))


def typicality_scores(
    log_prob: Tensor | np.ndarray, entropy: float, batch_size: int = 1
) -> np.ndarray:
    """The typicality test statistic of rows or of small batches of rows.

    A model's typical set holds the samples whose NLL is close to its entropy ``H``; a batch
    of ``m`` in-distribution rows has a mean NLL within a few ``std(NLL) / sqrt(m)`` of ``H``.
    The statistic ``|mean NLL of the batch - H|`` flags batches that are *too likely* as well
    as too unlikely, which raw likelihood cannot: flows give some out-of-distribution data
    (simpler, lower-variance images) a higher likelihood than their training data.

    Args:
        log_prob: ``(N,)`` log-likelihoods.
        entropy: the entropy estimate ``H``: the mean NLL of held-out in-distribution rows.
        batch_size: rows per batch, taken consecutively (the last batch may be smaller).

    Returns:
        ``(ceil(N / batch_size),)`` non-negative statistics; large is atypical.

    Example:
        >>> typicality_scores(np.array([-1.0, -3.0, -2.0, -2.0]), 2.0, batch_size=2).tolist()
        [0.0, 0.0]

    References:
        Nalisnick et al., "Detecting Out-of-Distribution Inputs to Deep Generative Models
        Using Typicality", arXiv:1906.02994, 2019.
    """
    lp = _as_numpy(log_prob)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    starts = np.arange(0, lp.size, batch_size)
    means = np.add.reduceat(-lp, starts) / np.diff(np.append(starts, lp.size)) if lp.size else lp
    return np.abs(means - float(entropy))


def fpr_threshold(normal_scores: Tensor | np.ndarray, target_fpr: float) -> float:
    """The threshold that flags a share ``target_fpr`` of normal rows (scores below it).

    Scores follow scikit-learn's convention: higher is more normal (``log p(x)``). A row is
    flagged when its score is *below* the returned value, so on the given normal rows the
    false-positive rate is ``target_fpr`` up to one row (``floor`` of ``target_fpr * N`` rows
    when the scores have no ties). On new normal rows it is ``target_fpr`` up to the sampling
    error of a quantile, about ``sqrt(target_fpr * (1 - target_fpr) / N)``.

    Args:
        normal_scores: ``(N,)`` scores of held-out normal rows.
        target_fpr: the false-positive rate, in ``[0, 1]``.

    Example:
        >>> fpr_threshold(np.arange(10.0), 0.2)
        2.0
    """
    s = np.sort(_as_numpy(normal_scores))
    if s.size == 0:
        raise ValueError("need at least one normal score")
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    k = int(np.floor(target_fpr * s.size + 1e-9))
    if k == 0:
        return float(s[0])  # nothing strictly below the smallest score
    if k >= s.size:
        return float(np.nextafter(s[-1], np.inf))
    return float(s[k])


def anomaly_labels(values: np.ndarray) -> np.ndarray:
    """Which rows a label column marks as anomalies, as a boolean ``(N,)`` array.

    Two codings are understood: ``0`` normal / ``1`` anomaly, and scikit-learn's outlier
    convention ``+1`` normal / ``-1`` anomaly.

    Raises:
        ValueError: other values, or labels of one kind only.

    Example:
        >>> anomaly_labels(np.array([1.0, -1.0, 1.0])).tolist()
        [False, True, False]
    """
    v = np.asarray(values, dtype=np.float64)
    kinds = set(np.unique(v).tolist())
    if kinds <= {0.0, 1.0}:
        flags = v == 1.0
    elif kinds <= {-1.0, 1.0}:
        flags = v == -1.0
    else:
        shown = ", ".join(f"{k:g}" for k in sorted(kinds)[:6])
        raise ValueError(
            f"labels must be 0 (normal) / 1 (anomaly) or 1 (normal) / -1 (anomaly); got {shown}"
        )
    if flags.all() or not flags.any():
        raise ValueError("labels must mark both normal rows and anomalies; got only one kind")
    return flags


def detection_metrics(log_prob: np.ndarray, is_anomaly: np.ndarray) -> tuple[float, float]:
    """AUROC and average precision of the anomaly score ``-log p(x)``.

    Non-finite log-likelihoods (``nan``, ``-inf``) rank as the most anomalous rows.

    Args:
        log_prob: ``(N,)`` log-likelihoods (higher is more normal).
        is_anomaly: ``(N,)`` booleans, from :func:`anomaly_labels`.

    Returns:
        ``(auroc, average_precision)``; chance is ``0.5`` and the share of anomalies.

    Example:
        >>> detection_metrics(np.array([-1.0, -9.0, -2.0]), np.array([False, True, False]))
        (1.0, 1.0)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    lp = np.asarray(log_prob, dtype=np.float64)
    ranked = -np.where(np.isfinite(lp), lp, -np.finfo(np.float64).max)
    y = np.asarray(is_anomaly, dtype=bool)
    return float(roc_auc_score(y, ranked)), float(average_precision_score(y, ranked))


__all__ = [
    "anomaly_labels",
    "auroc",
    "detection_metrics",
    "fpr_threshold",
    "typicality_scores",
]
