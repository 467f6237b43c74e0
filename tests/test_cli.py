"""``flowforge train / eval / sample / score / datasets``: the fixture's training run and the
non-finite data error go through ``python -m flowforge`` as subprocesses (the entry point, exit
status 2, what reaches the process's streams); the other commands run ``cli.main`` in this
process (:func:`cli_util.run_cli`), with the same exit status and output."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from cli_util import TINY, assert_bad_input, assert_ok, flowforge, run_cli
from flowforge.runs import load


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 8gaussians run with plots (the default data and flow)."""
    cwd = tmp_path_factory.mktemp("toy")
    args = [*TINY, "--steps", "40", "--eval-every", "20", "--plots", "--no-quiet", "--out", "run"]
    proc = flowforge("train", *args, cwd=cwd)
    assert_ok(proc)
    assert "test NLL:" in proc.stdout and "run directory: run" in proc.stdout
    # the progress bar: step count, loss, validation NLL, speed; and no warnings
    assert all(s in proc.stderr for s in ("40/40", "loss=", "val_nll=", "step/s"))
    assert "Warning" not in proc.stderr
    return cwd / "run"


def test_train_writes_a_complete_run_directory(toy_run: Path) -> None:
    names = {p.name for p in toy_run.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "checkpoint.safetensors",
        "model.safetensors.sha256",
        "checkpoint.safetensors.sha256",
        "metrics.jsonl",
        "results.json",
        "loss.png",
        "density.png",
    }
    record = json.loads((toy_run / "config.json").read_text())
    assert record["config"]["data"] == "8gaussians" and record["model"]["preset"] == "nsf"
    assert record["model"]["kwargs"]["features"] == 2 and "torch" in record["versions"]
    rows = [json.loads(line) for line in (toy_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [20, 40]
    assert {"step", "train_loss", "val_nll", "lr", "seconds"} <= set(rows[0])
    results = json.loads((toy_run / "results.json").read_text())
    assert math.isfinite(results["test"]["nll"]) and results["steps"] == 40


def test_eval_text_and_json(toy_run: Path) -> None:
    proc = run_cli("eval", toy_run, cwd=toy_run.parent)
    assert_ok(proc)
    assert proc.stdout.startswith("test NLL: ") and "nats (500 rows" in proc.stdout
    results = json.loads((toy_run / "results.json").read_text())
    assert float(proc.stdout.split()[2]) == pytest.approx(results["test"]["nll"], abs=1e-4)
    proc = run_cli("eval", toy_run, "--json", "--split", "val", cwd=toy_run.parent)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    assert got["split"] == "val" and got["n"] == 500 and got["bpd"] is None
    assert got["nll_err"] > 0


def test_sample_to_npy_and_png(toy_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.npy"
    assert_ok(
        run_cli("sample", toy_run, "-n", "7", "-o", out, "--temperature", "0.5", cwd=tmp_path)
    )
    x = np.load(out)
    assert x.shape == (7, 2) and np.isfinite(x).all()
    assert_ok(run_cli("sample", toy_run, "-n", "200", "-o", tmp_path / "s.png", cwd=tmp_path))
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_score_matches_load_in_python(toy_run: Path, tmp_path: Path) -> None:
    rows = np.array([[0.0, 2.8], [2.0, 2.0], [0.0, 0.0]])
    np.savetxt(tmp_path / "in.csv", rows, delimiter=",")
    out = tmp_path / "scores.csv"
    assert_ok(run_cli("score", toy_run, "--input", tmp_path / "in.csv", "-o", out, cwd=tmp_path))
    lines = out.read_text().splitlines()
    assert lines[0] == "log_likelihood"
    scores = np.array([float(v) for v in lines[1:]])
    flow = load(toy_run)
    expected = flow.log_prob(torch.tensor(rows, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_datasets_lists_availability_and_expected_files(tmp_path: Path) -> None:
    proc = run_cli("datasets", "--data-dir", tmp_path, "--json", cwd=tmp_path)
    assert_ok(proc)
    info = {d["name"]: d for d in json.loads(proc.stdout)}
    assert info["8gaussians"]["available"] and info["8gaussians"]["dim"] == 2
    assert info["digits"]["dim"] == 64
    assert not info["power"]["available"]
    assert str(tmp_path / "power" / "data.npy") in info["power"]["files"]
    proc = run_cli("datasets", "--data-dir", tmp_path, cwd=tmp_path)
    assert_ok(proc)
    assert "expects: " + str(tmp_path / "miniboone" / "data.npy") in proc.stdout


# -- bad input: one line on stderr, exit status 2, nothing written -----------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--data", "nosuchdata"], ["nosuchdata"]),
        (["--flow", "glowworm"], ["invalid choice: 'glowworm'", "nsf", "maf"]),
        (["--data", "missing.csv"], ["file not found", "missing.csv"]),
        (["--steps", "ten"], ["--steps expects an integer"]),
    ],
)
def test_train_bad_input(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    assert_bad_input(run_cli("train", *TINY, "--steps", "5", *args, cwd=tmp_path), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_train_nan_in_user_data_names_row_and_column(tmp_path: Path) -> None:
    rows = ["a,b,c"] + [f"{i},{i % 7},{i % 3}" for i in range(40)]
    rows[4] = "3,nan,1"  # line 5 of the file
    (tmp_path / "nan.csv").write_text("\n".join(rows) + "\n")
    proc = flowforge("train", *TINY, "--data", "nan.csv", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, "nan.csv", "row 5", "column 'b'", "not finite")
    assert not (tmp_path / "r").exists()


def test_bad_config_key_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('flow = "maf"\nlearning_rate = 0.1\n')
    proc = run_cli("train", "--config", "c.toml", cwd=tmp_path)
    assert_bad_input(proc, "c.toml", "unknown key 'learning_rate'", "valid keys:", "lr")
    (tmp_path / "d.toml").write_text("steps = 'many'\n")
    assert_bad_input(run_cli("train", "--config", "d.toml", cwd=tmp_path), "steps must be")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "d.toml"]


def test_existing_output_folder_is_not_overwritten(toy_run: Path) -> None:
    proc = run_cli("train", *TINY, "--out", toy_run, cwd=toy_run.parent)
    assert_bad_input(proc, "already exists", f"--resume {toy_run}")


def test_score_bad_input(toy_run: Path, tmp_path: Path) -> None:
    np.savetxt(tmp_path / "three.csv", np.zeros((4, 3)), delimiter=",")
    proc = run_cli("score", toy_run, "--input", "three.csv", "-o", "s.csv", cwd=tmp_path)
    assert_bad_input(proc, "3 columns", "trained on 2-dimensional data")
    (tmp_path / "text.csv").write_text("1,2\n3,four\n")
    proc = run_cli("score", toy_run, "--input", "text.csv", "-o", "s.csv", cwd=tmp_path)
    assert_bad_input(proc, "text.csv", "row 2", "four")
    proc = run_cli("score", toy_run, "--input", "none.csv", "-o", "s.csv", cwd=tmp_path)
    assert_bad_input(proc, "file not found", "none.csv")
    assert not (tmp_path / "s.csv").exists()


def test_corrupted_or_foreign_runs_are_rejected(toy_run: Path, tmp_path: Path) -> None:
    assert_bad_input(run_cli("eval", tmp_path / "nope", cwd=tmp_path), "no run directory")
    bad = tmp_path / "bad"
    shutil.copytree(toy_run, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert_bad_input(run_cli("eval", bad, cwd=tmp_path), "model.safetensors is corrupted")
    save_file({"w": torch.ones(1)}, str(weights))  # somebody else's safetensors file
    assert_bad_input(run_cli("eval", bad, cwd=tmp_path), "without flowforge metadata")
    (bad / "model.safetensors.sha256").unlink()  # the copy beside it is not what loading trusts
    proc = run_cli("sample", bad, "-n", "3", "-o", "x.npy", cwd=tmp_path)
    assert_bad_input(proc, "model.safetensors", "without flowforge metadata")
    assert not (tmp_path / "x.npy").exists()
