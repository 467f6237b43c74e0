"""The remainder of issue 22's bad-input round: rows far out scored in float64, integers beyond
64 bits refused, a CNF cast to a dtype its tolerances cannot reach, ``torchrun``'s launch."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge as ff
from cli_util import TINY, assert_bad_input, assert_ok, flowforge, run_cli


@pytest.fixture
def runs(tiny_runs: Path) -> Path:
    return tiny_runs  # the tiny runs the bad-input tests share (conftest.py)


def _float64_reference(run: Path, x: np.ndarray) -> np.ndarray:
    """``log p`` of ``x`` by a float64 copy of the saved flow, its own Standardize included."""
    flow = copy.deepcopy(ff.load(run)).double().eval()
    with torch.no_grad():
        return flow.log_prob(torch.as_tensor(x, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("name", ["toy", "tab"])
def test_rows_far_out_are_scored_in_float64(runs: Path, name: str) -> None:
    """1e30 in a float32 run: log p ~ -1e60, beyond float32 (was -inf, a warning and exit 1)."""
    width = 2 if name == "toy" else 13
    x = np.full((4, width), 0.5)
    x[0, 0], x[1, :], x[2, -1] = 1e30, -1e20, 1e39  # 1e39: beyond float32's range itself
    np.save(runs / f"far_{name}.npy", x)
    proc = run_cli("score", name, "-i", f"far_{name}.npy", "-o", f"far_{name}.csv", cwd=runs)
    assert_ok(proc)
    got = np.loadtxt(runs / f"far_{name}.csv", delimiter=",", skiprows=1)
    want = _float64_reference(runs / name, x)
    assert np.isfinite(want).all() and want[0] < -1e50
    np.testing.assert_allclose(got[:3], want[:3], rtol=1e-5)
    # the ordinary row keeps its float32 score (the float64 copy is only for rows that overflow)
    assert got[3] == pytest.approx(want[3], rel=1e-4, abs=1e-4)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--steps", str(10**30)], "steps must be a 64-bit integer (from -2**63 to 2**63 - 1)"),
        (["--eval-every", str(2**64)], "eval_every must be a 64-bit integer"),
        (["--hidden", f"16,{10**24}"], "hidden's widths must be 64-bit integers"),
        (["--seed", str(2**70)], "seed must be a 64-bit integer"),
    ],
)
def test_integers_beyond_64_bits_are_refused(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_cli("train", *TINY, "--steps", "2", *args, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


def test_a_toml_integer_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    # tomllib reads arbitrary-size integers
    (tmp_path / "c.toml").write_text(f"steps = {10**30}\n")
    proc = run_cli("train", "--config", "c.toml", *TINY, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, "c.toml: steps must be a 64-bit integer")
    assert not (tmp_path / "run").exists()


def test_a_cnf_cast_below_its_tolerances_warns_and_records_what_ran() -> None:
    """Built in float64 at rtol 1e-9, then ``.float()``: was solved at float32's floor (3.8e-6)
    without a word; the cast now warns, ``last_solve`` records the floor, and a cast back to
    float64 solves at 1e-9 again."""
    floor = 32 * torch.finfo(torch.float32).eps
    with torch.random.fork_rng():
        torch.manual_seed(0)
        torch.set_default_dtype(torch.float64)
        try:
            flow = ff.flows.FFJORD(features=2, hidden=(8,), rtol=1e-9, atol=1e-8)
        finally:
            torch.set_default_dtype(torch.float32)
    flow.eval()
    with pytest.warns(UserWarning, match=r"CNF: rtol=1e-09, atol=1e-08 are below 3.8e-06"):
        flow.float()
    cnf = flow.bijection.bijections[0]
    assert isinstance(cnf, ff.transforms.CNF)
    with torch.no_grad():
        flow.log_prob(torch.randn(3, 2))
    assert cnf.last_solve is not None
    assert (cnf.last_solve.rtol, cnf.last_solve.atol) == (pytest.approx(floor),) * 2
    flow.double()  # no warning: float64 resolves 1e-9
    with torch.no_grad():
        flow.log_prob(torch.randn(3, 2, dtype=torch.float64))
    assert (cnf.last_solve.rtol, cnf.last_solve.atol) == (1e-9, 1e-8)
    flow.to(torch.float64)  # the same dtype: nothing to say


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--steps", "-3"], "steps must be positive, got -3"),  # checked before any rank starts
        (["--data", "missing.csv"], "file not found"),  # met by the ranks: rank 0 says it
    ],
)
def test_the_launcher_reports_bad_input_in_one_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    """``flowforge train --nproc-per-node 2``: torchrun's launch, without torchrun's
    ChildFailedError traceback and log lines (40 lines after the error)."""
    proc = flowforge("train", "--nproc-per-node", "2", *args, "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


# -- found by the fresh pass (tests/bad_input_pass.py) -------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # TypeError: randint(): Overflow when unpacking long long (a traceback)
        (["--n-test", "1e30"], "n_test 1e+30: at least 6.4e+31 bytes for 1e+30 fresh samples"),
    ],
)
def test_train_pass(tmp_path: Path, args: list[str], expected: str) -> None:
    proc = run_cli("train", *TINY, "--steps", "2", *args, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        # RuntimeError: DefaultCPUAllocator: can't allocate memory (a traceback); 10**30: overflow
        (["eval", "vi", "--samples", "100000000000"], "--samples 100000000000: at least"),
        (["eval", "vi", "--samples", str(10**30)], "more than this machine's memory"),
        # taken without a word: a VI run has no splits
        (["eval", "vi", "--split", "val"], "--split does nothing for vi, a variational-inference"),
        # ValueError: Overflow when unpacking long long (tracebacks)
        (["sample", "toy", "--seed", str(2**70), "-o", "s.npy"], "a 64-bit integer seed"),
        (["score", "toy", "-i", "rows.npy", "--seed", str(2**70)], "a 64-bit integer seed"),
        (["sbi", "--simulator", "two_moons", "--seed", str(2**70)], "a 64-bit integer seed"),
        # ran (for ever), and an allocation traceback
        (["vi", "--steps", str(10**30), "--out", "o"], "steps must be a 64-bit integer"),
        (["vi", "--samples", str(10**12), "--out", "o"], "samples 1000000000000: at least"),
        (["vi", "--objective", "iwae", "--iwae-k", str(10**12), "--out", "o"], "x iwae_k"),
        # ran, growing to 14 GB
        (["sbi", "--simulator", "two_moons", "--simulations", str(10**30)], "--simulations 1"),
        # wrote 1000 samples of inf
        (["sample", "toy", "--temperature", "1e300", "-o", "s.npy"], "samples are not finite"),
    ],
)
def test_other_subcommands_pass(runs: Path, args: list[str], expected: str) -> None:
    before = sorted(p.name for p in runs.rglob("*"))
    assert_bad_input(run_cli(*args, cwd=runs), expected)
    assert sorted(p.name for p in runs.rglob("*")) == before


def test_image_noise_samples_that_cannot_fit_are_refused() -> None:
    from flowforge.cli.eval import _check_samples
    from flowforge.runs.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--samples 100000000: at least 2.62e\+13 bytes"):
        _check_samples(10**8, 4096, "noise samples per image")  # an allocation traceback
    _check_samples(16, 4096, "noise samples per image")


@pytest.fixture(scope="module")
def posterior() -> ff.sbi.Posterior:
    torch.manual_seed(0)
    prior = ff.sbi.BoxUniform([-2.0, -2.0], [2.0, 2.0])
    theta, x = ff.sbi.simulate(lambda t: t + 0.3 * torch.randn_like(t), prior, 200)
    npe = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (8,)})
    return npe.fit(theta, x, max_steps=2)


def test_posterior_refuses_what_it_cannot_honour(posterior: ff.sbi.Posterior) -> None:
    xo = torch.tensor([0.5, -0.5])
    with pytest.raises(ValueError, match="more than this machine's memory"):
        posterior.sample(10**30, xo)  # TypeError: Overflow when unpacking long long
    with pytest.raises(ValueError, match="expected a number of samples n >= 0, got 1\\.5"):
        posterior.sample(1.5, xo)  # type: ignore[arg-type]
    assert posterior.sample(np.int64(3), xo).shape == (3, 2)
    with pytest.raises(ValueError, match="expected finite theta"):  # was -inf, as if outside
        posterior.log_prob(torch.tensor([[float("nan"), 0.0]]), xo)
    assert posterior.log_prob(torch.tensor([[5.0, 0.0]]), xo).item() == -math.inf


def test_estimator_refuses_what_it_cannot_honour() -> None:
    X = np.random.default_rng(0).normal(size=(60, 3))
    kw = {"max_epochs": 1, "hidden": (8,), "transforms": 1}
    with pytest.raises(ValueError, match=r"hidden=\(1000000000000,\)\) cannot fit"):
        ff.FlowDensity(**{**kw, "hidden": (10**12,)}).fit(X)  # an allocation RuntimeError
    with pytest.raises(ValueError, match=r"X column 1: values up to \de\+300 overflow float64"):
        ff.FlowDensity(**kw).fit(X * [1.0, 1e300, 1.0])  # "model.standardizer: ... inf"
    fitted = ff.FlowDensity(**kw).fit(X)
    with pytest.raises(ValueError, match="more than this machine's memory"):
        fitted.sample(10**30)  # TypeError: Overflow when unpacking long long
    with pytest.raises(ValueError, match="an integer >= 1, got 1\\.5"):
        fitted.sample(1.5)  # type: ignore[arg-type]  # drew one row
    assert fitted.sample(np.int64(2)).shape == (2, 3)
