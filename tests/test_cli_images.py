"""``flowforge train / eval / sample / score`` on image runs with an image preset: ``cli.main`` in
this process (:func:`cli_util.run_cli`), except an image sample scored by real processes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cli_util import assert_bad_input, assert_ok, flowforge, run_cli
from flowforge.runs import open_run
from flowforge.train.model import IMAGE_TRAINING_DEFAULTS

SMALL = ["--quiet", "--hidden", "8", "--flow-options", '{"depth": 1}']


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Glow on digits with the image presets' defaults (warmup, average, ...)."""
    cwd = tmp_path_factory.mktemp("glow")
    args = ["--data", "digits", "--flow", "glow", *SMALL, "--steps", "10", "--eval-every", "5"]
    proc = run_cli("train", *args, "--out", "run", cwd=cwd)
    assert_ok(proc)
    assert "test bits/dim:" in proc.stdout
    return cwd / "run"


def test_image_presets_bring_their_training_defaults(glow_run: Path) -> None:
    record = json.loads((glow_run / "config.json").read_text())
    cfg, model = record["config"], record["model"]
    assert record["format_version"] == 2
    for key, value in IMAGE_TRAINING_DEFAULTS.items():
        if key not in ("epochs", "eval_every"):  # the flags of the fixture set these
            assert cfg[key] == value, key
    assert (cfg["steps"], cfg["epochs"], cfg["eval_every"]) == (10, None, 5)
    assert cfg["warmup_steps"] > 0 and cfg["ema_decay"] > 0  # on by default for images
    assert model["kwargs"] == {
        "shape": [1, 8, 8],
        "context": 0,
        "levels": 2,
        "depth": 1,
        "hidden": [8, 8],
    }
    assert model["data_shape"] == [1, 8, 8]
    rows = [json.loads(line) for line in (glow_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10] and all("val_bpd" in r for r in rows)
    # the learning rate is still warming up at step 10
    warmup, lr = IMAGE_TRAINING_DEFAULTS["warmup_steps"], IMAGE_TRAINING_DEFAULTS["lr"]
    assert rows[-1]["lr"] == pytest.approx(lr * 11 / warmup)


def test_eval_reports_bits_per_dim(glow_run: Path) -> None:
    proc = run_cli("eval", glow_run, "--json", cwd=glow_run.parent)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    d, k = 64, 17
    assert got["n"] == 180 and 0 < got["bpd"] < math.log2(k) + 1
    assert got["bpd"] == pytest.approx((got["nll"] + d * math.log(k)) / (d * math.log(2)))
    assert got["bpd_err"] == pytest.approx(got["nll_err"] / (d * math.log(2)))
    results = json.loads((glow_run / "results.json").read_text())
    assert got["bpd"] == pytest.approx(results["test"]["bpd"], abs=1e-6)
    text = run_cli("eval", glow_run, cwd=glow_run.parent).stdout
    assert "test bits/dim: " in text and "(2 standard errors)" in text


def test_sample_and_score_use_the_image_shape(glow_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.npy"  # sampled and scored by real processes, the rest in this one
    assert_ok(flowforge("sample", glow_run, "-n", "5", "-o", out, "--temperature", "0.7",
                        cwd=tmp_path))  # fmt: skip
    levels = np.load(out)
    assert levels.shape == (5, 1, 8, 8) and levels.min() >= 0 and levels.max() <= 16
    assert np.array_equal(levels, np.floor(levels))
    assert_ok(run_cli("sample", glow_run, "-n", "16", "-o", tmp_path / "s.png", cwd=tmp_path))
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    # the samples scored as images (.npy) and as flattened rows (.csv) agree
    assert_ok(flowforge("score", glow_run, "-i", out, "-o", tmp_path / "a.npy", cwd=tmp_path))
    assert_ok(run_cli("sample", glow_run, "-n", "5", "-o", tmp_path / "s.csv",
                      "--temperature", "0.7", cwd=tmp_path))  # fmt: skip
    assert_ok(run_cli("score", glow_run, "-i", "s.csv", "-o", tmp_path / "b.npy", cwd=tmp_path))
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (5,) and np.allclose(a, b) and np.isfinite(a).all()
    run = open_run(glow_run)
    assert run.flow.event_shape == (1, 8, 8)
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 4, 4)))
    proc = run_cli("score", glow_run, "-i", "bad.npy", cwd=tmp_path)
    assert_bad_input(proc, "shape (2, 1, 4, 4)", "images (1, 8, 8), or 64 columns")


def test_score_takes_integer_levels_only(glow_run: Path, tmp_path: Path) -> None:
    """One pixel format: integer levels 0..K-1; 0.5, 3.4 and [0, 1) floats are refused (they
    were floored: 0.5 scored as 0), and so is an empty array."""
    levels = np.random.default_rng(0).integers(0, 17, size=(3, 1, 8, 8))
    np.save(tmp_path / "ok.npy", levels.astype(np.uint8))
    assert_ok(run_cli("score", glow_run, "-i", "ok.npy", cwd=tmp_path))
    for value in (0.5, 3.4):
        x = levels.astype(np.float64)
        x[1, 0, 2, 3] = value
        np.save(tmp_path / "frac.npy", x)
        proc = run_cli("score", glow_run, "-i", "frac.npy", cwd=tmp_path)
        assert_bad_input(proc, f"value {value} is not a pixel level", "integer levels 0..16")
    np.save(tmp_path / "unit.npy", levels / 17.0)  # what the flow itself takes
    proc = run_cli("score", glow_run, "-i", "unit.npy", cwd=tmp_path)
    assert_bad_input(proc, "not floats in [0, 1)")
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8)))
    assert_bad_input(run_cli("score", glow_run, "-i", "empty.npy", cwd=tmp_path), "no rows")


def test_the_run_has_a_picture_of_samples_at_temperatures(tmp_path: Path) -> None:
    args = ["--data", "digits", "--flow", "glow", *SMALL, "--steps", "2", "--plots"]
    assert_ok(run_cli("train", *args, "--out", "run", cwd=tmp_path))
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"samples.png", "loss.png", "config.json", "model.safetensors"} <= names
    assert (tmp_path / "run" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_image_preset_errors_are_one_line(tmp_path: Path) -> None:
    proc = run_cli("train", "--data", "moons", "--flow", "glow", "--quiet", cwd=tmp_path)
    assert_bad_input(proc, "'glow' is an image flow", "(2,)")
    proc = run_cli("train", "--data", "digits", "--flow", "glow", "--transforms", "3", cwd=tmp_path)
    assert_bad_input(proc, "takes no option 'transforms'", "valid: levels, depth, hidden, lu")
    proc = run_cli("train", "--data", "digits", "--flow", "glow",
                     "--flow-options", '{"stepz": 3}', cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "takes no option 'stepz'", "valid: levels, depth, hidden, lu")
    assert list(tmp_path.iterdir()) == []
