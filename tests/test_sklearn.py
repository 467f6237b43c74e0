"""The scikit-learn estimators: estimator checks, the density in X's units, pickling, pipelines,
threshold calibration, and (slow) anomaly detection on digits and breast cancer."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import flowforge as ff
from flowforge.eval.anomaly import auroc, fpr_threshold, typicality_scores
from flowforge.sklearn import FlowAnomalyDetector, FlowDensity
from flowforge.sklearn._fit import log_prob_rows, spec_stats

TINY = dict(transforms=1, hidden=(8,), max_epochs=3, patience=2)

#: Checks that do not apply to a flow, and why (also in the report).
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks(
    [FlowDensity(**TINY), FlowAnomalyDetector(**TINY)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_estimator_checks(estimator, check) -> None:  # type: ignore[no-untyped-def]
    check(estimator)


def _gauss(n: int = 400, d: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.array([100.0, 0.01, 1.0])[:d] + 5.0


def test_lazy_export() -> None:
    assert ff.FlowDensity is FlowDensity and ff.FlowAnomalyDetector is FlowAnomalyDetector
    with pytest.raises(AttributeError):
        _ = ff.NoSuchThing  # type: ignore[attr-defined]


def test_density_is_in_the_units_of_x() -> None:
    """Scaling X by s shifts log p by -D log s: the standardisation's Jacobian is counted."""
    x = _gauss()
    a = FlowDensity(**TINY, random_state=0).fit(x)
    b = FlowDensity(**TINY, random_state=0).fit(x * 10.0)
    np.testing.assert_allclose(
        b.score_samples(x[:20] * 10.0), a.score_samples(x[:20]) - 3 * np.log(10.0), atol=1e-3
    )
    # and it is a density: a 1-D flow integrates to about one over a wide grid
    one = FlowDensity(**TINY, random_state=0).fit(x[:, :1])
    grid = np.linspace(x[:, 0].min() - 500, x[:, 0].max() + 500, 20001)[:, None]
    mass = np.exp(one.score_samples(grid)).sum() * (grid[1, 0] - grid[0, 0])
    assert abs(mass - 1.0) < 0.02


def test_scales_are_floored_at_the_median_column() -> None:
    """A near-constant column is scaled by the median std of the varying columns
    (``min_scale=1``), by its own with ``min_scale=0``; a constant column gets the floor too.
    The density stays in X's units: the floor is part of the Jacobian."""
    rng = np.random.default_rng(0)
    x = np.c_[
        rng.normal(size=(300, 3)) * [2.0, 3.0, 4.0], np.zeros(300), rng.normal(size=300) * 0.01
    ]
    opts = {**TINY, "validation_fraction": 0.0}  # every row trains: the stds are np.std(x)
    est = FlowDensity(**opts, random_state=0).fit(x)  # type: ignore[arg-type]
    std = np.std(x, axis=0)
    floor = np.median(std[[0, 1, 2, 4]])
    np.testing.assert_allclose(est.scale_, np.maximum(np.where(std > 0, std, floor), floor))
    assert est.scale_[4] == floor and est.scale_[2] == pytest.approx(std[2])
    assert est.noise_ == pytest.approx(0.75 * 300 ** (-1 / (5 + 4)))
    raw = FlowDensity(**opts, min_scale=0.0, noise=0.0, random_state=0).fit(x)  # type: ignore[arg-type]
    np.testing.assert_allclose(raw.scale_, np.where(std > 0, std, 1.0))
    assert raw.noise_ == 0.0
    b = FlowDensity(**opts, random_state=0).fit(x * 10.0)  # type: ignore[arg-type]
    np.testing.assert_allclose(
        b.score_samples(x[:9] * 10.0), est.score_samples(x[:9]) - 5 * np.log(10.0), atol=1e-3
    )


def test_detector_and_density_are_the_same_model() -> None:
    x = _gauss(300)
    a = FlowDensity(**TINY, random_state=4).fit(x)
    b = FlowAnomalyDetector(**TINY, random_state=4).fit(x)
    np.testing.assert_array_equal(a.score_samples(x), b.score_samples(x))


def test_score_is_mean_log_likelihood_and_sample_shape() -> None:
    x = _gauss()
    est = FlowDensity(**TINY, random_state=0).fit(x)
    assert est.score(x) == pytest.approx(est.score_samples(x).mean())
    s1, s2 = est.sample(50, random_state=1), est.sample(50, random_state=1)
    assert s1.shape == (50, 3) and np.array_equal(s1, s2)
    assert not np.array_equal(s1, est.sample(50, random_state=2))
    assert abs(s1[:, 0].mean() - 5.0) < 60  # in X's units, not standardised


def test_random_state_reproducible_and_global_rng_untouched() -> None:
    x = _gauss()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = FlowDensity(**TINY, random_state=3).fit(x).score_samples(x[:5])
    assert torch.equal(before, torch.get_rng_state())
    b = FlowDensity(**TINY, random_state=3).fit(x).score_samples(x[:5])
    np.testing.assert_array_equal(a, b)


def test_early_stopping_keeps_best_epoch() -> None:
    x = _gauss(300)
    opts = {**TINY, "max_epochs": 60, "patience": 3, "lr": 0.05, "noise": 0.0}
    est = FlowDensity(**opts, random_state=0).fit(x)  # type: ignore[arg-type]
    assert len(est.validation_nll_) == est.n_epochs_
    assert est.best_epoch_ == int(np.argmin(est.validation_nll_)) + 1
    # the kept flow (the model is its defensive mixture with the Gaussian start, whose weight
    # of at least 0.01 costs up to 0.01 nats where the flow is better)
    flow = est.flow_.flow
    held = -log_prob_rows(flow, est.X_val_, stats=spec_stats(est.spec_)).mean()
    assert held == pytest.approx(min(est.validation_nll_), rel=1e-4)
    mixed = -est.score_samples(est.X_val_).mean()
    assert held - 1e-4 <= mixed <= held - math.log(0.99) + 1e-6  # w <= 0.01 costs <= 0.01
    # with training noise the validation rows are noised too: their NLL is not the clean one
    noisy = FlowDensity(**{**opts, "noise": 0.5}, random_state=0).fit(x)  # type: ignore[arg-type]
    clean = -noisy.score_samples(noisy.X_val_).mean()
    assert abs(min(noisy.validation_nll_) - clean) > 1e-2


def test_verbose_prints_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    x = _gauss(100)
    FlowDensity(**TINY, random_state=0).fit(x)
    assert capsys.readouterr().err == ""
    FlowDensity(**TINY, random_state=0, verbose=True).fit(x)
    assert "epoch 1/3" in capsys.readouterr().err


def test_pickle_round_trip_and_joblib(tmp_path: Path) -> None:
    import joblib

    x = _gauss()
    det = FlowAnomalyDetector(**TINY, random_state=0).fit(x)
    back = pickle.loads(pickle.dumps(det))
    np.testing.assert_array_equal(back.score_samples(x), det.score_samples(x))
    np.testing.assert_array_equal(back.predict(x), det.predict(x))
    joblib.dump(det, tmp_path / "det.joblib")
    again = joblib.load(tmp_path / "det.joblib")
    np.testing.assert_array_equal(again.decision_function(x), det.decision_function(x))


def _eval_nll(run: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "flowforge", "eval", str(run), "--json", "--split", "train"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return float(json.loads(done.stdout)["nll"])


def test_eval_of_a_saved_run_uses_the_flows_own_scales(tmp_path: Path) -> None:
    x = _gauss(300)  # its 0.01 column is floored to the median scale
    est = FlowDensity(**TINY, random_state=0).fit(x)
    assert abs(_eval_nll(est.save(tmp_path / "run")) - est.entropy_) < 1.0


def test_save_is_a_run_that_load_and_eval_read(tmp_path: Path) -> None:
    x = _gauss(300)
    est = FlowDensity(**TINY, random_state=0).fit(x)
    run = est.save(tmp_path / "run")
    flow = ff.load(run)
    with torch.no_grad():
        lp = flow.log_prob(torch.as_tensor(x[:10], dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(lp, est.score_samples(x[:10]), rtol=1e-4, atol=1e-4)
    nll = _eval_nll(run)
    assert np.isfinite(nll) and abs(nll - est.entropy_) < 1.0


def test_pipeline_and_grid_search() -> None:
    x = _gauss(300)
    pipe = make_pipeline(StandardScaler(), PCA(n_components=2), FlowDensity(**TINY, random_state=0))
    pipe.fit(x)
    assert pipe.score_samples(x[:7]).shape == (7,)
    assert np.isfinite(pipe.score(x))
    grid = GridSearchCV(FlowDensity(**TINY, random_state=0), {"transforms": [1, 2]}, cv=2)
    grid.fit(x)
    assert grid.best_params_["transforms"] in (1, 2)
    assert np.isfinite(grid.best_score_)


def test_threshold_hits_target_fpr_on_held_out_normals() -> None:
    """With contamination="auto" the threshold flags target_fpr of the held-out rows up to one
    row, and of fresh normal rows within 3 binomial standard errors plus the quantile's own
    sampling error."""
    x = _gauss(2000)
    fresh = _gauss(4000, seed=1)
    for fpr in (0.05, 0.2):
        det = FlowAnomalyDetector(**TINY, target_fpr=fpr, validation_fraction=0.25, random_state=0)
        det.fit(x)
        n_cal = det.X_val_.shape[0]
        on_cal = np.mean(det.predict(det.X_val_) == -1)
        assert abs(on_cal - fpr) <= 1.0 / n_cal
        rate = np.mean(det.predict(fresh) == -1)
        tol = 3 * np.sqrt(fpr * (1 - fpr)) * (1 / np.sqrt(n_cal) + 1 / np.sqrt(fresh.shape[0]))
        assert abs(rate - fpr) < tol, (fpr, rate, tol)


def test_contamination_flags_that_share_and_predict_sign() -> None:
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(size=(380, 2)), rng.normal(size=(20, 2)) + 8.0]
    det = FlowAnomalyDetector(**{**TINY, "max_epochs": 20}, contamination=0.05, random_state=0)
    pred = det.fit(x).predict(x)
    assert np.sum(pred == -1) == 20
    assert (pred[380:] == -1).mean() >= 0.9  # the planted anomalies are the flagged ones
    assert det.predict(np.array([[0.0, 0.0]]))[0] == 1


def test_trim_leaves_out_the_least_likely_rows() -> None:
    """``trim`` drops the share of rows of lowest likelihood under the current flow (NaN
    first), and a trimmed fit on contaminated rows gives the planted anomalies less density."""
    from flowforge.sklearn._fit import _kept_rows

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(size=(360, 2)), rng.normal(size=(40, 2)) * 0.3 + 6.0]
    est = FlowDensity(**TINY, noise=0.0, random_state=0).fit(x[:360])
    data = torch.as_tensor(x, dtype=torch.float32)
    data[5] = float("nan")
    kept = _kept_rows(est.flow_.float(), data, 0.1).numpy()
    lp = est.score_samples(np.nan_to_num(x))
    lp[5] = -np.inf
    assert sorted(kept.tolist()) == sorted(np.argsort(-lp)[:360].tolist())
    opts = {**TINY, "max_epochs": 15, "noise": 0.0, "random_state": 0}
    plain = FlowDensity(**opts).fit(x)  # type: ignore[arg-type]
    trimmed = FlowDensity(**opts, trim=0.1).fit(x)  # type: ignore[arg-type]
    gap = trimmed.score_samples(x[:360]).mean() - trimmed.score_samples(x[360:]).mean()
    assert gap > plain.score_samples(x[:360]).mean() - plain.score_samples(x[360:]).mean()


def test_typicality_flags_too_likely_rows() -> None:
    """Rows at the mode are more likely than any training row: likelihood calls them normal,
    typicality calls them atypical."""
    x = np.random.default_rng(0).normal(size=(1000, 8))
    det = FlowAnomalyDetector(
        **{**TINY, "max_epochs": 10}, criterion="typicality", target_fpr=0.05, random_state=0
    )
    det.fit(x)
    mode = np.random.default_rng(1).normal(size=(50, 8)) * 0.05
    assert (det.predict(mode) == -1).mean() > 0.9
    lik = FlowAnomalyDetector(**{**TINY, "max_epochs": 10}, random_state=0).fit(x)
    assert (lik.predict(mode) == 1).all()
    batch = det.typicality(x[:100], batch_size=10)
    assert batch.shape == (10,) and (det.typicality(mode, batch_size=10) > batch.max()).all()


def test_typicality_and_threshold_functions() -> None:
    lp = np.array([-1.0, -2.0, -3.0, -10.0, -2.0])
    np.testing.assert_allclose(typicality_scores(lp, 2.0), [1.0, 0.0, 1.0, 8.0, 0.0])
    np.testing.assert_allclose(typicality_scores(lp, 2.0, batch_size=2), [0.5, 4.5, 0.0])
    s = np.random.default_rng(0).normal(size=1000)
    for fpr in (0.0, 0.01, 0.1, 0.5, 1.0):
        assert np.mean(s < fpr_threshold(s, fpr)) == pytest.approx(fpr, abs=1e-3)


def _digits_auroc(held_out: int, **options: object) -> tuple[float, float]:
    x, y = load_digits(return_X_y=True)
    normal, anomalies = x[y != held_out], x[y == held_out]
    train, test = train_test_split(normal, test_size=0.2, random_state=0)
    est = FlowDensity(random_state=0, **options).fit(train)  # type: ignore[arg-type]
    s_n, s_a = est.score_samples(test), est.score_samples(anomalies)
    labels = np.r_[np.zeros(len(s_n)), np.ones(len(s_a))]
    return auroc(s_n, s_a), float(average_precision_score(labels, -np.r_[s_n, s_a]))


@pytest.mark.slow
def test_digits_held_out_class_is_anomalous() -> None:
    roc, ap = _digits_auroc(1, max_epochs=40)  # the defaults but for a shorter fit
    print(f"digits, held-out 1: AUROC {roc:.3f}, AP {ap:.3f}")
    assert roc > 0.85  # LocalOutlierFactor(novelty=True): 0.876 (benchmarks/anomaly.py)


@pytest.mark.slow
def test_breast_cancer_malignant_rows_are_anomalous() -> None:
    x, y = load_breast_cancer(return_X_y=True)  # y == 1: benign
    benign, malignant = x[y == 1], x[y == 0]
    train, test = train_test_split(benign, test_size=0.3, random_state=0)
    est = FlowDensity(random_state=0, max_epochs=60).fit(train)
    roc = auroc(est.score_samples(test), est.score_samples(malignant))
    print(f"breast cancer, malignant as anomalies: AUROC {roc:.3f}")
    assert roc > 0.85
