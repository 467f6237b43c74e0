"""The defensive mixture of table flows (issue 23): exact, consistent, saved, and a floor.

``(1 - w) p_flow + w p_start``: its log-density is the mixture's (against an explicit float64
sum), its samples come from each component with its weight and ``sample_and_log_prob`` gives
the mixture's own density at them, no row falls below ``log w + log p_start``, the weight is
the validation rows' maximiser, runs save and load it (old runs load as the flow), and the
catastrophic extrapolations of issue 23 (realnvp on a household-budget-like table, 20 correlated
socio-economic-like columns) are floored.
"""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge.core import Compose, Flow
from flowforge.core.defensive import (
    MIN_VALIDATION_ROWS,
    MIN_WEIGHT,
    DefensiveMixture,
    choose_weight,
    defensive_weight,
)
from flowforge.distributions import StandardNormal
from flowforge.transforms import Whiten
from flowforge.transforms.standardize import Standardize


def _randomised(flow: torch.nn.Module, scale: float, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return flow


def _gaussian(d: int, shift: float = 0.0) -> Flow:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    tril = torch.linalg.cholesky(a @ a.T / d + torch.eye(d, dtype=torch.float64))
    mean = torch.full((d,), shift, dtype=torch.float64)
    std = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    return Flow(Compose([Standardize(mean, std), Whiten(tril)]), StandardNormal(d)).double()


def _mixture(w: float, shift: float = 0.0, scale: float = 0.3) -> DefensiveMixture:
    torch.manual_seed(0)
    flow = _randomised(ff.flows.MAF(features=3, transforms=2, hidden=(8,)).double(), scale)
    return DefensiveMixture(flow, _gaussian(3, shift), w)  # type: ignore[arg-type]


def test_log_prob_is_the_mixture_of_the_components() -> None:
    mix = _mixture(0.2)
    x = 2.0 * torch.randn(64, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        f = mix.flow.log_prob(x).numpy()
        g = mix.fallback.log_prob(x).numpy()
        got = mix.log_prob(x).numpy()
    want = np.log(0.8 * np.exp(f) + 0.2 * np.exp(g))  # explicit sum, not log-sum-exp
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    assert mix.log_prob(x.reshape(8, 8, 3)).shape == (8, 8)


def test_sample_and_log_prob_gives_the_mixture_density_at_its_samples() -> None:
    mix = _mixture(0.4)
    torch.manual_seed(3)
    x, lp = mix.sample_and_log_prob(300)
    assert x.shape == (300, 3) and lp.shape == (300,)
    with torch.no_grad():
        np.testing.assert_allclose(lp.detach().numpy(), mix.log_prob(x).numpy(), rtol=1e-10)
    assert mix.sample((2, 5)).shape == (2, 5, 3)
    assert mix.sample(0).shape == (0, 3)
    d = mix.distribution()
    assert d.sample((4,)).shape == (4, 3) and d.log_prob(x).shape == (300,)
    with pytest.raises(ValueError, match="unconditional"):
        mix.log_prob(x, torch.zeros(300, 1, dtype=torch.float64))


def test_samples_come_from_each_component_with_its_weight() -> None:
    mix = _mixture(0.3, shift=60.0)  # the fallback sits far away from the flow
    torch.manual_seed(4)
    x = mix.sample(4000)
    share = float((x[:, 0] > 30).double().mean())
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)


def test_no_row_falls_below_the_floor() -> None:
    mix = _mixture(0.05, scale=1.5)  # large random weights: a flow that extrapolates wildly
    x = 40.0 * torch.randn(500, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with torch.no_grad():
        flow, start, got = mix.flow.log_prob(x), mix.fallback.log_prob(x), mix.log_prob(x)
    assert float((flow - start).min()) < -1000  # the flow alone falls far below its start
    assert bool((got >= start + math.log(0.05) - 1e-9).all())
    assert bool(torch.isfinite(got).all())


def test_weight_maximises_the_validation_likelihood() -> None:
    g = torch.Generator().manual_seed(6)
    a = torch.randn(40, generator=g, dtype=torch.float64) * 3
    b = torch.randn(40, generator=g, dtype=torch.float64)
    w = choose_weight(a, b)

    def f(v: float) -> float:
        return float(torch.logaddexp(a + math.log1p(-v), b + math.log(v)).mean()) if v < 1 else 0

    grid = np.linspace(MIN_WEIGHT, 0.999, 2000)
    assert MIN_WEIGHT < w < 1 and f(w) >= max(f(v) for v in grid) - 1e-9
    assert choose_weight(b + 5, b) == MIN_WEIGHT  # the flow better on every row
    assert choose_weight(b - 5, b) == 1.0  # the flow worse on every row: the start alone
    assert choose_weight(torch.full((3,), float("nan")), b[:3]) == 1.0  # NaN: density 0


def test_few_validation_rows_keep_a_larger_weight() -> None:
    from flowforge.runs.defensive import validated_spec
    from flowforge.runs.recipe import ModelSpec

    entry = {"weight": MIN_WEIGHT, "weight_from": "minimum", "tril": [[1.0], [0.0, 1.0]]}
    spec = ModelSpec("maf", {"features": 2}, "tabular", (2,), defensive=entry)
    for rows, floor in ((10, 0.3), (30, 0.1), (5000, MIN_WEIGHT)):  # 3 / rows, at least 0.01
        b = torch.zeros(rows, dtype=torch.float64)
        chosen, choice = validated_spec(spec, b + 5, b)  # the flow better on every row
        assert chosen.defensive is not None and chosen.defensive["weight"] == pytest.approx(floor)
        assert chosen.defensive["weight_from"] == "validation" and choice is not None
        assert chosen.defensive["validation_rows"] == rows


def _gains(d: np.ndarray) -> tuple[float, float]:
    """Mean and two standard errors of per-row gains, numpy (ddof 1)."""
    return float(d.mean()), 2 * float(d.std(ddof=1)) / math.sqrt(d.size)


def _bound(a: np.ndarray, b: np.ndarray, w: float) -> tuple[float, float]:
    """numpy: the mixture's mean gain over the start at ``w`` and that less 2 standard errors."""
    mix = np.logaddexp(a + math.log1p(-w), b + math.log(w)) if w < 1 else b
    gain, err = _gains(mix - b)
    return gain, gain - err


def test_the_flow_is_kept_only_where_the_validation_rows_show_a_gain() -> None:
    """``w = 1`` (the start alone) unless some weight from the maximum-likelihood one up to 1
    gives a mean gain over the start above two standard errors; then ``w`` is the weight whose
    gain less two standard errors is largest (checked on a fine numpy grid). Fewer than 10
    rows never vouch for the flow."""
    rng = np.random.default_rng(3)
    b = rng.normal(-3.0, 1.0, 60)
    noise = rng.normal(0.0, 1.0, 60)
    kept, safer = [], []
    for far in (0, 3):  # the flow misses `far` rows by 40 nats
        for shift in np.linspace(-0.6, 0.6, 25):  # a flow worse, level with, or better
            a = b + shift + noise
            a[:far] -= 40.0
            t, f = torch.from_numpy(a), torch.from_numpy(b)
            choice = defensive_weight(t, f)
            w_ml = choose_weight(t, f, 3 / 60)  # the floor: 3 / M
            grid = np.exp(np.linspace(math.log(w_ml), 0.0, 3000))[:-1] if w_ml < 1 else []
            bounds = [lb for g, lb in (_bound(a, b, v) for v in grid) if g > 1e-3]
            best = max(bounds, default=-math.inf)  # numpy, apart from the code under test
            if choice.reason == "validation":
                gain, lb = _bound(a, b, choice.weight)
                assert w_ml - 1e-12 <= choice.weight < 1 and lb > 0 and gain > 1e-3
                assert lb >= best - 1e-3  # the best bound, to the grid's resolution
                assert choice.gain == pytest.approx(gain, rel=1e-9, abs=1e-12)
                assert choice.gain - choice.error == pytest.approx(lb, rel=1e-9, abs=1e-12)
            else:
                assert choice.reason == "no-gain" and choice.weight == 1.0
                assert best <= 1e-3  # no weight shows a gain beyond its error bar
                gain, lb = _bound(a, b, w_ml)
                assert choice.gain == pytest.approx(gain, rel=1e-9, abs=1e-12)
            kept.append(choice.weight < 1)
            safer.append(choice.weight > 1.5 * w_ml)
    assert any(kept) and not all(kept)  # both sides of the margin exercised
    assert any(safer)  # a weight above the maximum-likelihood one, where a few rows are missed
    a, f = torch.from_numpy(b + 5.0), torch.from_numpy(b)
    few = defensive_weight(a[: MIN_VALIDATION_ROWS - 1], f[: MIN_VALIDATION_ROWS - 1])
    assert (few.weight, few.reason) == (1.0, "few-rows")
    enough = defensive_weight(a[:MIN_VALIDATION_ROWS], f[:MIN_VALIDATION_ROWS])
    assert enough.reason == "validation" and enough.weight < 1
    # a flow that kept its start: float32 rounding of the same density is not a gain
    start = torch.from_numpy(b).float()
    same = start + 1e-6 * torch.arange(60).float() / 60
    assert defensive_weight(same, start).weight == 1.0


def test_the_chosen_mixture_is_never_below_the_start_on_the_rows_that_chose() -> None:
    g = torch.Generator().manual_seed(9)
    for trial in range(200):
        m = int(torch.randint(1, 80, (1,), generator=g))
        b = torch.randn(m, generator=g, dtype=torch.float64)
        a = b + torch.randn(m, generator=g, dtype=torch.float64) * float(trial % 7) + 0.3
        if trial % 5 == 0:
            a[0] = -1e4  # one row far outside the flow's support
        choice = defensive_weight(a, b)
        w = choice.weight
        mix = b if w == 1.0 else torch.logaddexp(a + math.log1p(-w), b + math.log(w))
        assert float(mix.mean()) >= float(b.mean()) - 1e-12
        assert bool((mix >= b + math.log(w) - 1e-12).all())
        assert w == 1.0 or (m >= MIN_VALIDATION_ROWS and choice.gain > choice.error)


def _train(tmp_path, data, flow: str, *flags: str) -> str:  # type: ignore[no-untyped-def]
    from flowforge.cli import main

    out = str(tmp_path / flow)
    args = ["train", "--data", str(data), "--flow", flow, "--out", out, "--quiet", "--no-plots"]
    assert main([*args, *flags]) == 0
    return out


def test_runs_save_the_weight_and_old_runs_load_as_the_flow(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from flowforge.cli import main

    run = _train(tmp_path, "wine", "maf", "--steps", "5")
    record = json.loads((tmp_path / "maf" / "config.json").read_text())
    entry = record["model"]["defensive"]
    assert entry["weight_from"] in ("validation", "start: no-gain")
    assert entry["validation_rows"] == 18 and MIN_WEIGHT <= entry["weight"] <= 1
    assert (entry["weight"] == 1.0) == (entry["weight_from"] == "start: no-gain")
    model = ff.load(run)
    assert isinstance(model, DefensiveMixture) and model.weight == pytest.approx(entry["weight"])
    rows = np.random.default_rng(0).normal(size=(6, 13)) * 5 + 10
    np.save(tmp_path / "rows.npy", rows)
    capsys.readouterr()
    assert main(["score", run, "--input", str(tmp_path / "rows.npy"), "-o", "-"]) == 0
    scored = np.loadtxt(capsys.readouterr().out.splitlines()[1:], delimiter=",")
    scored = scored[:, -1] if scored.ndim == 2 else scored
    with torch.no_grad():
        direct = model.log_prob(torch.tensor(rows, dtype=torch.float32)).double().numpy()
        flow_only = model.flow.log_prob(torch.tensor(rows, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(scored, direct, rtol=1e-4, atol=1e-3)
    del record["model"]["defensive"]  # a run written before the defensive mixture
    (tmp_path / "maf" / "config.json").write_text(json.dumps(record))
    old = ff.load(run)
    assert isinstance(old, Flow)
    with torch.no_grad():
        np.testing.assert_allclose(
            old.log_prob(torch.tensor(rows, dtype=torch.float32)).numpy(), flow_only, rtol=1e-6
        )


def test_no_defensive_keeps_the_flow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _train(tmp_path, "wine", "maf", "--steps", "2", "--no-defensive")
    assert json.loads((tmp_path / "maf" / "config.json").read_text())["model"]["defensive"] is None
    assert isinstance(ff.load(run), Flow)


def test_estimators_keep_the_mixture_through_pickle_and_save(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]])
    est = ff.FlowDensity(transforms=1, hidden=(8,), max_epochs=3, random_state=0).fit(x)
    assert isinstance(est.flow_, DefensiveMixture)
    assert est.spec_.defensive["weight"] == pytest.approx(est.flow_.weight)
    far = np.array([[40.0, -40.0, 9.0]])
    scores = est.score_samples(np.vstack([x[:5], far]))
    assert np.isfinite(scores).all()
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_allclose(back.score_samples(x[:20]), est.score_samples(x[:20]), rtol=1e-12)
    loaded = ff.load(est.save(tmp_path / "run"))
    assert isinstance(loaded, DefensiveMixture) and loaded.weight == pytest.approx(est.flow_.weight)
    with torch.no_grad():
        got = loaded.log_prob(torch.tensor(x[:20], dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, est.score_samples(x[:20]), rtol=1e-4, atol=1e-3)
    assert est.sample(7, random_state=0).shape == (7, 3)


# -- the catastrophic rows of issue 23, on tiny tables that still show them -------------------


def _household(tmp_path):  # type: ignore[no-untyped-def]
    """An Engel-like household budget table: income and food expenditure (120 x 2)."""
    rng = np.random.default_rng(0)
    inc = np.exp(rng.normal(6.5, 0.5, 120))
    food = 0.5 * inc**0.9 * np.exp(rng.normal(0, 0.1, 120))
    path = tmp_path / "household.csv"
    np.savetxt(path, np.stack([inc, food], 1), delimiter=",", header="income,food", comments="")
    far = [
        [inc.max() * 2, food.max() * 2],
        [inc.max() * 1.3, food.min()],
        [inc.min() / 2, food.max()],
    ]
    return path, np.array(far)


def _socio(tmp_path):  # type: ignore[no-untyped-def]
    """A star98-like table: 10 correlated positive columns and 10 products of pairs of them
    (150 x 20); far rows drawn with 2.5 times the spread."""
    rng = np.random.default_rng(0)

    def rows(n: int, spread: float) -> np.ndarray:
        b = np.exp(spread * rng.normal(0, 0.4, (n, 10)) + rng.normal(0, 0.4, (n, 1)))
        return np.hstack([b, b * b[:, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]]])

    path = tmp_path / "socio.csv"
    head = ",".join(f"c{i}" for i in range(20))
    np.savetxt(path, rows(150, 1.0), delimiter=",", header=head, comments="")
    return path, rows(5, 2.5)


@pytest.mark.parametrize(
    ("table", "flow", "drop"),
    [(_household, "realnvp", 100.0), (_socio, "realnvp", 500.0), (_socio, "maf", 10.0)],
)
def test_catastrophic_extrapolation_is_floored(tmp_path, table, flow, drop) -> None:  # type: ignore[no-untyped-def]
    data, far = table(tmp_path)
    model = ff.load(_train(tmp_path, data, flow, "--steps", "100"))
    assert isinstance(model, DefensiveMixture)
    x = torch.tensor(far, dtype=torch.float32)
    with torch.no_grad():
        alone, start, mix = model.flow.log_prob(x), model.fallback.log_prob(x), model.log_prob(x)
    # the flow alone (the model before issue 23) falls far below its Gaussian start ...
    assert float((alone - start).min()) < -drop
    # ... the mixture never more than log(1 / w) <= log(1 / 0.01) = 4.61 nats below it
    floor = math.log(model.weight)
    assert bool((mix >= start + floor - 1e-3).all()) and floor >= math.log(MIN_WEIGHT) - 1e-9


def test_few_validation_rows_give_the_start_and_the_baseline_is_the_start(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """60 rows leave 6 validation rows: too few to show the flow better, so the model is the
    Gaussian start (w = 1), said in one line; the printed baseline is that same Gaussian."""
    from flowforge.cli import main

    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 3)) @ np.array([[1.0, 0.8, 0.0], [0.0, 0.6, 0.5], [0.0, 0.0, 0.3]])
    data = tmp_path / "t.csv"
    np.savetxt(data, np.exp(x), delimiter=",", header="a,b,c", comments="")
    out = str(tmp_path / "run")
    args = ["train", "--data", str(data), "--flow", "realnvp", "--steps", "40", "--out", out]
    assert main([*args, "--no-plots"]) == 0
    printed = capsys.readouterr()
    assert (
        "defensive mixture: the model is the Gaussian start (defensive weight 1): 6 validation"
        in printed.out
    )
    assert "worse than a full-covariance Gaussian" not in printed.err  # it is that Gaussian
    entry = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["defensive"]
    assert (entry["weight"], entry["weight_from"], entry["validation_rows"]) == (
        1.0,
        "start: few-rows",
        6,
    )
    model = ff.load(out)
    assert isinstance(model, DefensiveMixture) and model.weight == 1.0
    rows = torch.tensor(np.exp(rng.normal(size=(8, 3)) * 3), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(model.log_prob(rows), model.fallback.log_prob(rows))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test"]["nll"] == pytest.approx(results["gaussian_baseline"]["nll"], abs=1e-4)
    assert "Gaussian start" in results["gaussian_baseline"]["note"]
    # the baseline, by scipy from the run's own split: the start's cross-validated shrinkage
    from scipy.stats import multivariate_normal

    from flowforge.train.config import TrainConfig
    from flowforge.train.prepare import load_data
    from flowforge.transforms.whiten import cross_validated_shrinkage

    ds = load_data(TrainConfig.from_layers({"data": str(data), "flow": "realnvp"}))
    z, t = ds.train.double(), ds.test.double().numpy()
    s = cross_validated_shrinkage(z)
    emp = np.cov(z.numpy().T, bias=True)
    cov = (1 - s) * emp + s * np.trace(emp) / 3 * np.eye(3) + 1e-6 * np.eye(3)
    ll = multivariate_normal(z.numpy().mean(0), cov).logpdf(t) + float(
        ds.standardizer.log_abs_det()
    )
    assert results["gaussian_baseline"]["nll"] == pytest.approx(-ll.mean(), abs=1e-6)


def test_a_model_at_its_gaussian_start_is_not_called_worse_than_it(capsys) -> None:  # type: ignore[no-untyped-def]
    """float32 rounding of the start (the baseline) is not a warning; a real loss is."""
    from flowforge.cli._common import warn_worse_than_gaussian
    from flowforge.eval.baseline import GaussianBaseline

    base = GaussianBaseline(10.0, 0.3, 50)
    warn_worse_than_gaussian("flowforge train", "test", 10.0005, base)
    assert capsys.readouterr().err == ""
    warn_worse_than_gaussian("flowforge train", "test", 10.002, base)
    assert "worse than a full-covariance Gaussian" in capsys.readouterr().err
