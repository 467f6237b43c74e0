"""``flowforge vi``: a VI run directory that ``eval``, ``sample`` and ``ff.load`` understand
(``cli.main`` in this process: :func:`cli_util.run_cli`)."""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

import flowforge as ff
from cli_util import assert_bad_input, assert_ok, run_cli
from flowforge import cli
from flowforge.runs import ConfigError
from flowforge.vi import targets
from flowforge.vi.run import VIConfig, diagnostics_dict, run_vi

SMALL = ["--transforms", "4", "--steps", "150", "--samples", "64", "--eval-samples", "1000"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def vi_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("vi")
    proc = run_cli("vi", "--target", "u1", "--flow", "planar", *SMALL, "--out", "run", cwd=cwd)
    assert_ok(proc)
    assert "ELBO:" in proc.stdout and "run directory: run" in proc.stdout
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    return cwd / "run"


def test_vi_writes_every_file(vi_run: Path) -> None:
    names = {p.name for p in vi_run.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "model.safetensors.sha256",
        "metrics.jsonl",
        "results.json",
        "density.png",
        "elbo.png",
    }
    assert not [p for p in vi_run.parent.iterdir() if p.name.startswith(".")]  # no staging left
    record = json.loads((vi_run / "config.json").read_text())
    assert record["task"] == "vi" and record["target"]["name"] == "u1"
    assert record["model"]["preset"] == "planar" and record["model"]["kwargs"]["transforms"] == 4
    assert record["config"]["objective"] == "elbo" and record["config"]["steps"] == 150
    rows = [json.loads(line) for line in (vi_run / "metrics.jsonl").read_text().splitlines()]
    assert [int(r["step"]) for r in rows] == list(range(150))
    assert all(math.isfinite(r["elbo"]) for r in rows)
    # annealed for the first quarter, then the real target
    assert rows[0]["beta"] < 0.1 and rows[-1]["beta"] == 1.0
    d = json.loads((vi_run / "results.json").read_text())["diagnostics"]
    assert d["samples"] == 1000 and 0 < d["ess"] <= 1000 and d["pareto_k"] is not None
    # the ELBO is a lower bound: the grid KL is positive, and log Z is U1's (about 1.877)
    assert abs(d["log_z_grid"] - 1.8775) < 1e-3
    assert d["kl_grid"] == pytest.approx(d["log_z_grid"] - d["elbo"])
    assert d["kl_grid"] > -3 * d["elbo_stderr"] and d["log_z_is"] > d["elbo"]
    for png in ("density.png", "elbo.png"):
        assert (vi_run / png).read_bytes()[:8] == PNG


def test_eval_recomputes_the_diagnostics(vi_run: Path) -> None:
    results = json.loads((vi_run / "results.json").read_text())["diagnostics"]
    proc = run_cli("eval", vi_run, "--json", cwd=vi_run.parent)
    assert_ok(proc)
    got = json.loads(proc.stdout)
    for key, value in results.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    text = run_cli("eval", vi_run, cwd=vi_run.parent)
    assert_ok(text)
    assert f"ELBO: {results['elbo']:.4f} ± {results['elbo_stderr']:.4f}" in text.stdout
    assert f"Pareto-k: {results['pareto_k']:.3f}" in text.stdout
    assert f"KL(q || p) = log Z - ELBO: {results['kl_grid']:.4f}" in text.stdout
    more = json.loads(run_cli("eval", vi_run, "--json", "--samples", "500", cwd=vi_run).stdout)
    assert more["samples"] == 500 and more["elbo"] != results["elbo"]


def test_sample_writes_samples_of_q(vi_run: Path, tmp_path: Path) -> None:
    assert_ok(run_cli("sample", vi_run, "-n", "300", "-o", tmp_path / "s.npy", cwd=tmp_path))
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (300, 2) and np.isfinite(x).all()
    assert 1.0 < np.linalg.norm(x, axis=1).mean() < 3.0  # on U1's ring of radius 2
    assert_ok(run_cli("sample", vi_run, "-n", "50", "-o", tmp_path / "s.png", cwd=tmp_path))
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG


def test_load_returns_the_fitted_flow(vi_run: Path) -> None:
    flow = ff.load(vi_run)
    assert isinstance(flow, ff.flows.Planar) and not flow.training
    results = json.loads((vi_run / "results.json").read_text())["diagnostics"]
    again = diagnostics_dict(flow, targets.Energy("u1"), 1000, 0)
    assert again["elbo"] == pytest.approx(results["elbo"], rel=1e-6)


def test_existing_output_is_kept_unless_overwrite(vi_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(vi_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    tiny = ["--transforms", "2", "--steps", "3", "--samples", "8", "--eval-samples", "50"]
    proc = run_cli("vi", *tiny, "--quiet", "--no-plots", "--out", run, cwd=tmp_path)
    assert_bad_input(proc, "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    proc = run_cli("vi", *tiny, "--quiet", "--no-plots", "--overwrite", "--out", run, cwd=tmp_path)
    assert_ok(proc)
    assert json.loads((run / "config.json").read_text())["config"]["steps"] == 3
    assert "density.png" not in {p.name for p in run.iterdir()}  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--target", "u9"], ["invalid choice: 'u9'", "u1"]),
        (["--flow", "glow"], ["image flow", "planar"]),
        (["--steps", "0"], ["steps must be a positive integer, got 0"]),
        (["--steps", "ten"], ["--steps", "'ten'"]),
        (["--lr", "nan"], ["lr must be a positive number, got nan"]),
        (["--iwae-k", "0"], ["iwae_k"]),
        (["--eval-samples", "10"], ["eval_samples"]),
        (["--target-options", "[1]"], ["JSON object"]),
        (["--target", "funnel", "--target-options", '{"width": 1}'], ["funnel", "width"]),
        (["--flow-options", '{"bins": 4}'], ["planar", "bins"]),
    ],
)
def test_bad_input_is_one_line(args: list[str], fragments: list[str], tmp_path: Path) -> None:
    proc = run_cli("vi", *args, "--out", "x", cwd=tmp_path)
    assert_bad_input(proc, *fragments)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_config_file_and_flags(tmp_path: Path) -> None:
    (tmp_path / "vi.toml").write_text(
        'target = "banana"\nflow = "radial"\ntransforms = 2\nsteps = 9\nsamples = 8\n'
        'eval_samples = 100\nplots = false\nquiet = true\nobjective = "iwae"\niwae_k = 3\n'
    )
    proc = run_cli("vi", "--config", "vi.toml", "--steps", "5", "--out", "r", cwd=tmp_path)
    assert_ok(proc)
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["config"]["steps"] == 5 and record["config"]["iwae_k"] == 3
    assert record["target"]["name"] == "banana" and record["model"]["preset"] == "radial"
    rows = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 5 and "iwae" in json.loads(rows[0])  # the IWAE objective ran
    (tmp_path / "bad.toml").write_text("stepz = 3\n")
    bad = run_cli("vi", "--config", "bad.toml", "--out", "b", cwd=tmp_path)
    assert_bad_input(bad, "bad.toml", "unknown option 'stepz'")


def _nan_target() -> targets.Target:
    return targets.as_target(lambda x: x.sum(-1) * math.nan, 2)


def test_non_finite_loss_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(targets.TARGETS, "nan", _nan_target)
    out = tmp_path / "run"
    rc = cli.main(["vi", "--target", "nan", "--steps", "3", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()  # five recoveries (each one line), then the error
    assert rc == 1 and "nan" in lines[-1] and len(lines) == 6, err
    assert all("skipped, restored the state of step 0" in line for line in lines[:-1])
    assert list(tmp_path.iterdir()) == []


def test_unknown_objective_is_refused(tmp_path: Path) -> None:
    # interruption and resuming: tests/test_vi_resume.py
    with pytest.raises(ConfigError, match="objective"):
        run_vi(VIConfig(objective="kl", out=str(tmp_path / "x")))
    assert list(tmp_path.iterdir()) == []


def _readme_vi_block() -> list[str]:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    marker = "<!-- the vi commands below are run by tests/test_cli_vi.py -->"
    block = text.split(marker, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_readme_vi_commands_run(tmp_path: Path) -> None:
    lines = _readme_vi_block()
    assert lines and all(line.startswith("flowforge ") for line in lines)
    for line in lines:
        args = shlex.split(line)[1:]
        # half the steps, given after the README's own as a user would (the last one wins)
        extra = []
        if args[0] == "vi":
            extra = ["--quiet", "--steps", str(int(args[args.index("--steps") + 1]) // 2)]
        assert_ok(run_cli(*args, *extra, cwd=tmp_path))
    results = json.loads((tmp_path / "runs" / "u1" / "results.json").read_text())
    assert results["steps"] == 500
    # 500 steps of planar-32 fit U1: KL 0.07 (0.04 at the README's 1,000, 0.13 at 300)
    assert results["diagnostics"]["kl_grid"] < 0.3
    assert (tmp_path / "u1.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(("flow", "expected"), [("ffjord", 1), ("planar", 32), ("iaf", 32)])
def test_each_preset_gets_its_own_number_of_transforms(
    tmp_path: Path, flow: str, expected: int
) -> None:
    """Without --transforms, 32 layers, but one CNF for ffjord (it stacked 32 CNFs: 277 s for
    5 steps)."""
    tiny = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--no-plots"]
    assert_ok(
        run_cli("vi", "--target", "banana", "--flow", flow, *tiny, "--out", "r", cwd=tmp_path)
    )
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    assert record["model"]["kwargs"]["transforms"] == expected
