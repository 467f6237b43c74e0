"""Anomaly detection with exact likelihoods, on real data (scikit-learn's breast cancer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import flowforge as ff
from flowforge.eval import auroc


def test_auroc_extremes_and_errors() -> None:
    assert auroc(torch.tensor([0.0, -1.0]), torch.tensor([-5.0, -6.0])) == 1.0
    assert auroc(np.array([-5.0, -6.0]), np.array([0.0, -1.0])) == 0.0
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([float("nan")]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="at least one"):
        auroc(torch.tensor([]), torch.tensor([0.0]))


@pytest.mark.slow
def test_flow_trained_on_benign_tumours_flags_malignant_ones() -> None:
    torch.manual_seed(0)
    x, y = load_breast_cancer(return_X_y=True)
    benign, malignant = x[y == 1], x[y == 0]  # sklearn: 1 = benign
    rng = np.random.default_rng(0)
    benign = benign[rng.permutation(len(benign))]
    train, held_out = benign[:280], benign[280:]
    # Log-transform the skewed positive features, then standardise with training statistics.
    log_train = np.log1p(train)
    mean, std = log_train.mean(0), log_train.std(0)

    def prep(a: np.ndarray) -> torch.Tensor:
        return torch.tensor((np.log1p(a) - mean) / std, dtype=torch.float32)

    xt = prep(train)
    flow = ff.flows.MAF(features=30, transforms=3, hidden=(64, 64))
    opt = torch.optim.Adam(flow.parameters(), 1e-3, weight_decay=1e-4)
    for _ in range(300):
        loss = -flow.log_prob(xt).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flow.eval()
    with torch.no_grad():
        score = auroc(flow.log_prob(prep(held_out)), flow.log_prob(prep(malignant)))
    print(f"breast cancer AUROC {score:.3f}")
    assert score > 0.9
