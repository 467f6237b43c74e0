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


__all__ = ["auroc"]
