"""examples/anomaly_1d.py: windows, point scores, and a tiny run on a packaged heart-rate series."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from repo_scripts import load_script


@pytest.fixture(scope="module")
def ex() -> ModuleType:
    pytest.importorskip("sklearn", reason="the example needs pip install flowforge[cli]")
    return load_script("examples/anomaly_1d.py", "anomaly_1d")


def test_windows_and_point_scores(ex: ModuleType) -> None:
    x = np.arange(10.0)
    w = ex.windows(x, 4)
    assert w.shape == (7, 4) and w[2].tolist() == [2, 3, 4, 5]
    s = np.zeros(7)
    s[2] = 5.0  # window 2 covers points 2 .. 5
    p = ex.point_scores(s, 4)
    assert p.shape == (10,) and p.tolist() == [0, 0, 5, 5, 5, 5, 0, 0, 0, 0]


def test_a_tiny_run_finds_the_bleeding_anomaly(ex: ModuleType) -> None:
    if ex.aeon_data() is None:
        pytest.skip('the series come with aeon: pip install --no-deps "aeon>=1.6,<1.7"')
    train, test, labels = ex.load_series("bleeding")
    assert train.shape == (1200,) and test.shape == (7501,) and labels.sum() == 12
    assert np.array_equal(test[:1200], train)  # the test series starts with the normal part
    r = ex.detect("bleeding", width=16, epochs=2, train_stride=8)
    assert r["train_windows"] == 149 and r["anomalous_points"] == 12
    for name in ("flow", "gaussian", "nearest window"):
        assert 0 <= r[name]["auroc_windows"] <= 1
    # the one anomaly is far from every normal window: every detector ranks it high
    assert r["gaussian"]["auroc_points"] > 0.95 and r["nearest window"]["auroc_points"] > 0.95
    assert r["flow"]["auroc_points"] > 0.7  # -log p: an anomaly scores high
