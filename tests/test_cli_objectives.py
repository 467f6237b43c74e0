"""``flowforge train / eval`` with FFJORD, flow matching and variational dequantization (``cli.main``
in this process: :func:`cli_util.run_cli`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import safetensors.torch
import torch

from cli_util import assert_bad_input, assert_ok, run_cli
from flowforge.train.checkpoint import load_checkpoint

TOY = ["--quiet", "--n-val", "300", "--n-test", "300", "--hidden", "16,16"]
IMAGE = ["--data", "digits", "--flow", "glow", "--quiet", "--hidden", "8"]
IMAGE += ["--flow-options", '{"depth": 1}', "--eval-every", "10"]


def _metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ffjord_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ffjord")
    args = ["--flow", "ffjord", *TOY, "--steps", "6", "--eval-every", "3"]
    proc = run_cli(
        "train", *args, "--kinetic", "0.01", "--jacobian", "0.01", "--out", "run", cwd=cwd
    )
    assert_ok(proc)
    return cwd / "run"


def test_ffjord_trains_with_nfe_and_regularisers_in_the_metrics(ffjord_run: Path) -> None:
    rows = _metrics(ffjord_run)
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert r["train_nfe_forward"] > 0 and r["train_nfe_backward"] == 0  # no adjoint
        assert r["train_kinetic"] > 0 and r["train_jacobian"] > 0
        assert r["train_loss"] > r["train_nll"]  # the regularisers are in the loss
    cfg = json.loads((ffjord_run / "config.json").read_text())
    assert cfg["model"]["preset"] == "ffjord" and cfg["model"]["kwargs"]["hidden"] == [16, 16]
    assert (cfg["config"]["kinetic"], cfg["config"]["jacobian"]) == (0.01, 0.01)
    assert {p.name for p in ffjord_run.glob("*.png")} >= {"density.png", "loss.png"}


def test_ffjord_evaluates_and_resumes(ffjord_run: Path) -> None:
    proc = run_cli("eval", ffjord_run, "--json", cwd=ffjord_run.parent)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    assert got["n"] == 300 and math.isfinite(got["nll"])
    proc = run_cli(
        "train", "--resume", ffjord_run, "--steps", "9", "--quiet", cwd=ffjord_run.parent
    )
    assert_ok(proc)
    rows = _metrics(ffjord_run)
    assert [r["step"] for r in rows] == [3, 6, 9] and rows[-1]["train_nfe_forward"] > 0


def test_ffjord_options_pass_through(tmp_path: Path) -> None:
    args = ["--flow", "ffjord", *TOY, "--no-plots", "--steps", "4", "--eval-every", "2"]
    options = '{"method": "rk4", "solver_steps": 4, "adjoint": true}'
    proc = run_cli("train", *args, "--flow-options", options, "--out", "run", cwd=tmp_path)
    assert_ok(proc)
    kwargs = json.loads((tmp_path / "run" / "config.json").read_text())["model"]["kwargs"]
    assert (kwargs["method"], kwargs["solver_steps"], kwargs["adjoint"]) == ("rk4", 4, True)
    rows = _metrics(tmp_path / "run")
    assert rows[-1]["train_nfe_backward"] > 0  # the adjoint: solved backwards too
    assert rows[-1]["train_nfe_forward"] == 16  # rk4: 4 evaluations per step, 4 steps
    bad = run_cli("train", *args, "--flow-options", '{"bins": 3}', "--out", "x", cwd=tmp_path)
    assert_bad_input(bad, "bins", "max_nfe")


def test_flow_matching_run(tmp_path: Path) -> None:
    args = ["--flow", "ffjord", *TOY, "--no-plots", "--steps", "20", "--eval-every", "10"]
    proc = run_cli(
        "train", *args, "--objective", "flow-matching", "--ot", "--out", "run", cwd=tmp_path
    )
    assert_ok(proc)
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20]
    assert all("train_nfe_forward" not in r for r in rows)  # no ODE solve in training
    assert rows[-1]["val_nll"] < rows[0]["val_nll"] + 0.5 and math.isfinite(rows[-1]["val_nll"])
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    assert (cfg["objective"], cfg["ot"]) == ("flow-matching", True)
    # the objective's own defaults for what the user did not give (steps and eval_every given)
    assert (cfg["lr"], cfg["batch_size"]) == (1e-2, 512)
    assert (cfg["steps"], cfg["eval_every"]) == (20, 10)
    assert_ok(run_cli("eval", tmp_path / "run", cwd=tmp_path))


def test_objectives_that_do_not_apply_are_config_errors(tmp_path: Path) -> None:
    base = [*TOY, "--steps", "2"]
    bad = run_cli(
        "train", *base, "--flow", "nsf", "--objective", "flow-matching", "--out", "a", cwd=tmp_path
    )
    assert_bad_input(bad, "flow-matching", "nsf")
    bad = run_cli("train", *base, "--flow", "maf", "--kinetic", "0.1", "--out", "b", cwd=tmp_path)
    assert_bad_input(bad, "--kinetic", "maf")
    bad = run_cli("train", *base, "--flow", "ffjord", "--ot", "--out", "c", cwd=tmp_path)
    assert_bad_input(bad, "--ot")
    bad = run_cli("train", *base, "--dequantization", "variational", "--out", "d", cwd=tmp_path)
    assert_bad_input(bad, "variational", "images")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_solver_failure_is_one_line_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    args = ["--flow", "ffjord", *TOY, "--no-plots", "--steps", "5", "--eval-every", "2"]
    proc = run_cli("train", *args, "--flow-options", '{"max_nfe": 3}', "--out", "run", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "max_nfe" in proc.stderr and "step 1" in proc.stderr and "checkpoint" in proc.stderr
    state = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert state["counters"]["step"] == 0
    assert (tmp_path / "run" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def vd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("vd")
    options = '{"transforms": 1, "hidden": [16]}'
    args = [*IMAGE, "--steps", "20", "--dequantization", "variational"]
    proc = run_cli("train", *args, "--dequantizer-options", options, "--out", "run", cwd=cwd)
    assert_ok(proc)
    return cwd / "run"


def test_variational_dequantization_run_writes_the_dequantizer(vd_run: Path) -> None:
    record = json.loads((vd_run / "config.json").read_text())
    assert record["dequantizer"] == {
        "kind": "variational",
        "noise": "conv",
        "shape": [1, 8, 8],
        "levels": 17,
        "transforms": 1,
        "hidden": [16],
    }
    assert (vd_run / "dequantizer.safetensors").exists()
    assert not list(vd_run.glob("*.pt")) and not list(vd_run.glob("*.pkl"))
    rows = _metrics(vd_run)
    assert all("train_log_q" in r and "val_bpd" in r for r in rows)
    state = load_checkpoint(vd_run / "checkpoint.safetensors")
    assert state["objective"] is not None
    saved = safetensors.torch.load_file(vd_run / "dequantizer.safetensors")
    best = state["best_objective_state"]  # the weights file holds the best validated state
    assert set(saved) == set(best) and all(torch.equal(saved[k], best[k]) for k in saved)


def test_variational_dequantization_evaluates_both_estimates(vd_run: Path) -> None:
    proc = run_cli("eval", vd_run, "--json", "--samples", "8", cwd=vd_run.parent)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    assert got["dequantization"] == "variational" and got["samples"] == 8
    assert 0 < got["importance_bpd"] < got["bound_bpd"] < math.log2(17) + 1
    assert got["bound_bpd"] == pytest.approx(got["bpd"], abs=3 * got["bound_bpd_err"])
    text = run_cli("eval", vd_run, cwd=vd_run.parent)
    assert_ok(text)
    assert "importance-sampled" in text.stdout and "bound" in text.stdout


def test_variational_dequantization_resumes(vd_run: Path) -> None:
    before = (vd_run / "dequantizer.safetensors").read_bytes()
    proc = run_cli("train", "--resume", vd_run, "--steps", "30", "--quiet", cwd=vd_run.parent)
    assert_ok(proc)
    assert [r["step"] for r in _metrics(vd_run)] == [10, 20, 30]
    assert (vd_run / "dequantizer.safetensors").read_bytes() != before  # trained on


def test_uniform_image_run_evaluates_both_estimates(tmp_path: Path) -> None:
    proc = run_cli("train", *IMAGE, "--steps", "10", "--no-plots", "--out", "run", cwd=tmp_path)
    assert_ok(proc)
    got = json.loads(run_cli("eval", tmp_path / "run", "--json", cwd=tmp_path).stdout)
    assert got["dequantization"] == "uniform" and got["samples"] == 16
    assert got["importance_bpd"] <= got["bound_bpd"]
    assert got["bound_bpd"] == pytest.approx(got["bpd"], abs=3 * got["bound_bpd_err"])
