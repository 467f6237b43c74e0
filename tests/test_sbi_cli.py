"""``flowforge sbi``: pre-simulated NPZ / CSV / NPY tables and the demo simulator end to end (run
directory, corner plot, ``flowforge.load``), and bad input: one line, exit 2, no run written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.cli_util import flowforge, run_cli

import flowforge as ff

TINY = ["--flow-options", '{"transforms": 1, "bins": 4, "hidden": [16]}', "--steps", "60"]
TINY += ["--samples", "2000"]


def _pairs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """theta ~ U([0, 1] x [-2, 2]), x = (theta_1 + theta_2, theta_1 - theta_2) + 0.05 noise."""
    rng = np.random.default_rng(seed)
    theta = np.column_stack([rng.uniform(0, 1, n), rng.uniform(-2, 2, n)])
    x = np.column_stack([theta.sum(1), theta[:, 0] - theta[:, 1]]) + 0.05 * rng.normal(size=(n, 2))
    return theta, x


@pytest.fixture
def npz(tmp_path: Path) -> Path:
    theta, x = _pairs()
    np.savez(tmp_path / "sims.npz", theta=theta, x=x)
    return tmp_path / "sims.npz"


def test_npz_end_to_end(npz: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs" / "sbi1"
    args = ["sbi", "--data", npz, "--prior", "box", "--low", "0,-2", "--high", "1,2"]
    args += ["--observation", "0.5,0.0", "--true-theta", "0.25,0.25", "--out", out, *TINY]
    args += ["--steps", "400", "--lr", "5e-3"]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "theta_0: mean" in r.stdout and f"run directory: {out}" in r.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "config.json",
        "corner.png",
        "metrics.jsonl",
        "model.safetensors",
        "model.safetensors.sha256",
        "results.json",
    ]
    assert (out / "corner.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "results.json").read_text())
    assert results["observation"] == [0.5, 0.0] and len(results["posterior_mean"]) == 2
    post = ff.load(out)
    assert isinstance(post, ff.sbi.Posterior)
    s = post.sample(5000, torch.tensor([0.5, 0.0]))
    assert bool(((s[:, 0] > 0) & (s[:, 0] < 1) & (s[:, 1] > -2) & (s[:, 1] < 2)).all())
    # x = (t1 + t2, t1 - t2) = (0.5, 0) at t = (0.25, 0.25): the posterior centres there
    assert np.allclose(results["posterior_median"], [0.25, 0.25], atol=0.15), results
    # flowforge eval names what to use instead
    e = run_cli("eval", out, cwd=tmp_path)
    assert e.returncode == 2 and "flowforge.load" in e.stderr and e.stderr.count("\n") == 1


def test_csv_with_named_columns_drops_failed_simulations(tmp_path: Path) -> None:
    theta, x = _pairs(200)
    x[[5, 9]] = np.nan
    table = np.column_stack([x[:, :1], theta, x[:, 1:]])  # columns in any order
    header = "x_sum,alpha,beta,x_diff"
    np.savetxt(tmp_path / "sims.csv", table, delimiter=",", header=header, comments="")
    out = tmp_path / "run"
    args = ["sbi", "--data", "sims.csv", "--theta-cols", "alpha,beta", "--x-cols", "x_sum,x_diff"]
    args += ["--low", "0,-2", "--high", "1,2", "--observation", "0.5,0.0", "--out", out, *TINY]
    r = run_cli(*args, "--no-plots", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "dropped 2 of 200 simulations with NaN or inf values (first: row 5)" in r.stderr
    record = json.loads((out / "config.json").read_text())
    assert record["data"]["theta_names"] == ["alpha", "beta"]
    assert json.loads((out / "results.json").read_text())["dropped"] == 2
    assert not (out / "corner.png").exists()


def test_npy_columns_by_index(tmp_path: Path) -> None:
    theta, x = _pairs(150)
    np.save(tmp_path / "sims.npy", np.column_stack([theta, x]))
    args = ["sbi", "--data", "sims.npy", "--theta-cols", "0,1", "--x-cols", "2,3", "--low", "0,-2"]
    args += ["--high", "1,2", "--observation", "0.5,0", "--out", "r", "--no-plots", *TINY]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert isinstance(ff.load(tmp_path / "r"), ff.sbi.Posterior)


def test_demo_simulator_in_one_command(tmp_path: Path) -> None:
    r = flowforge(
        "sbi",
        "--simulator",
        "two_moons",
        "--simulations",
        "500",
        "--out",
        "demo",
        *TINY,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo" / "corner.png").exists()
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["observation"] == [0.0, 0.0] and results["names"] == ["theta_1", "theta_2"]


def _bad(tmp_path: Path, npz: Path) -> list[tuple[list[str], str]]:
    theta, x = _pairs(50)
    np.savez(tmp_path / "rows.npz", theta=theta, x=x[:40])
    np.savez(tmp_path / "names.npz", params=theta, x=x)
    np.savez(tmp_path / "outside.npz", theta=theta + 5.0, x=x)
    (tmp_path / "sims.txt").write_text("1,2\n")
    base = ["--low", "0,-2", "--high", "1,2", "--observation", "0.5,0"]
    return [
        (["--data", npz, "--low", "0,-2", "--high", "1,2"], "--observation is required"),
        (
            ["--data", npz, "--low", "0,-2", "--high", "1,2", "--observation", "1,2,3"],
            "--observation: expected 2 finite numbers, got 3",
        ),
        (["--data", npz, "--observation", "0,0"], "--prior box needs --low and --high"),
        (
            ["--data", npz, "--low", "0", "--high", "1", "--observation", "0,0"],
            "--low: expected 2 finite numbers, got 1",
        ),
        (
            ["--data", npz, "--low", "1,-2", "--high", "0,2", "--observation", "0,0"],
            "--high must exceed --low",
        ),
        (["--data", tmp_path / "rows.npz", *base], "with the same N, got (50, 2) and (40, 2)"),
        (["--data", tmp_path / "names.npz", *base], "expected arrays 'theta' (N, D) and 'x'"),
        (
            ["--data", tmp_path / "outside.npz", *base],
            "50 of 50 parameter rows lie outside the box prior",
        ),
        (["--data", tmp_path / "sims.txt", *base], "unsupported file type '.txt'"),
        (["--data", tmp_path / "missing.npz", *base], "file not found"),
        (["--data", npz, "--simulator", "two_moons"], "give either --data FILE"),
        (["--simulator", "three_moons"], "unknown simulator 'three_moons'"),
        (["--data", npz, *base, "--flow-options", '{"bogus": 1}'], "cannot build flow 'nsf'"),
        # torch's "Invalid learning rate" traceback, after the run directory was reserved
        (["--data", npz, *base, "--lr", "-1"], "--lr must be a positive finite number, got -1"),
        (["--data", npz, *base, "--lr", "nan"], "--lr must be a positive finite number, got nan"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(npz: Path, tmp_path: Path) -> None:
    for args, message in _bad(tmp_path, npz):
        out = tmp_path / "never"
        r = run_cli("sbi", *TINY, *args, "--out", out, "--no-plots", cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr, (message, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert not out.exists(), args


def test_bad_numbers_are_refused_by_the_parser(tmp_path: Path) -> None:
    r = run_cli("sbi", "--simulator", "two_moons", "--observation", "1,x", cwd=tmp_path)
    assert r.returncode == 2 and "expected comma-separated numbers" in r.stderr


def test_the_batch_is_the_library_rule_unless_given(tmp_path: Path) -> None:
    """6,000 simulations: 5,400 training pairs, NPE's rule gives 240 a step (not the 200 the
    command once passed); ``--batch-size`` still wins."""
    args = ["sbi", "--simulator", "two_moons", "--simulations", "6000", *TINY]
    args += ["--steps", "1", "--samples", "10", "--no-plots"]
    for extra, batch in (([], 240), (["--batch-size", "64"], 64)):
        out = tmp_path / f"run{batch}"
        r = run_cli(*args, *extra, "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        results = json.loads((out / "results.json").read_text())
        assert (results["train"], results["batch_size"]) == (5400, batch)


def test_the_steps_are_the_library_plan_unless_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without ``--steps`` the command fits exactly as ``NPE.fit`` with no ``max_steps`` (its
    plan: here a cosine over 20,000 steps cut after ``small_budget_max_epochs`` epochs, 4 for
    speed), not the cosine over 3,000 steps it once passed; ``--steps`` still wins."""
    from flowforge.sbi.simulators import SIMULATORS, simulate

    monkeypatch.setattr(ff.sbi.NPE, "small_budget_max_epochs", 4)
    options = {"transforms": 1, "bins": 4, "hidden": [16]}
    args = ["sbi", "--simulator", "two_moons", "--simulations", "40", "--samples", "10"]
    args += ["--flow-options", json.dumps(options), "--no-plots", "--seed", "3"]
    task = SIMULATORS["two_moons"]()
    theta, x = simulate(task["simulator"], task["prior"], 40, seed=3)
    npe = ff.sbi.NPE(task["prior"], flow_options=options)
    want = npe.fit(theta, x, seed=3).info
    for extra, planned in (([], True), (["--steps", "7"], False)):
        out = tmp_path / f"run{len(extra)}"
        r = run_cli(*args, *extra, "--out", out, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        got = json.loads((out / "results.json").read_text())
        if planned:  # 36 training pairs: one step an epoch
            assert (got["max_steps"], got["patience"]) == npe.plan(36, 200) == (20_000, 20)
            keys = ("steps", "best_step", "best_val_loss")
            assert {k: got[k] for k in keys} == {k: want[k] for k in keys}
            assert got["steps"] == npe.step_cap(36, 200) == 4
        else:
            assert (got["max_steps"], got["steps"]) == (7, 7)
