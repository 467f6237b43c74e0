"""``flowforge vi``: checkpoints and ``--resume``, ``--device``, and the learning-rate default
that keeps IAF finite on the funnel and the banana."""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cli_util import assert_bad_input, assert_ok, run_cli, start
from flowforge.runs import ConfigError, RunError
from flowforge.train.checkpoint import load_checkpoint
from flowforge.vi.run import VIConfig, resume_vi, run_vi

SMALL = VIConfig(
    target="u2",
    flow="planar",
    transforms=3,
    steps=30,
    samples=16,
    eval_samples=50,
    checkpoint_every=10,
    plots=False,
    quiet=True,
)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _elbos(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(int(r["step"]), r["elbo"]) for r in rows]


def _interrupt_at(step: int):
    def callback(s: int, record: dict[str, float]) -> None:
        if s == step:
            raise KeyboardInterrupt

    return callback


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    run_vi(replace(SMALL, out=str(out)))
    return out


def test_interrupted_run_resumes_to_the_uninterrupted_result(
    reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match=f"--resume {out}"):
        run_vi(replace(SMALL, out=str(out)), callback=_interrupt_at(24))
    assert not (out / "results.json").exists()
    assert load_checkpoint(out / "checkpoint.safetensors")["step"] == 20  # the last interval
    assert [s for s, _ in _elbos(out)] == list(range(20))
    steps: list[int] = []
    result = resume_vi(out, callback=lambda s, r: steps.append(s))
    assert steps == list(range(20, 30))  # continued from the checkpoint, not from 0
    assert result.results["resumed_from"] == 20
    assert _elbos(out) == _elbos(reference)  # same samples, schedule and optimizer state
    ref, got = _weights(reference), _weights(out)
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    done = json.loads((reference / "results.json").read_text())["diagnostics"]
    assert result.results["diagnostics"] == done
    assert not (out / "checkpoint.safetensors").exists()  # removed once complete
    with pytest.raises(RunError, match="complete"):
        resume_vi(out)


def test_resume_restores_the_random_generator(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_vi(replace(SMALL, out=str(out)), callback=_interrupt_at(12))
    torch.manual_seed(1234)  # another generator state before resuming
    resume_vi(out)
    assert _elbos(out) == _elbos(reference)


def test_interrupt_while_writing_the_results_leaves_a_resumable_run(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flowforge.vi.plots as plots

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_samples_over_density", boom)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_vi(replace(SMALL, out=str(out), plots=True))
    assert not (out / "results.json").exists()
    assert load_checkpoint(out / "checkpoint.safetensors")["step"] == SMALL.steps
    monkeypatch.undo()
    steps: list[int] = []
    resume_vi(out, {"plots": False}, callback=lambda s, r: steps.append(s))
    assert steps == []  # every step was done: only the results are written
    assert _elbos(out) == _elbos(reference)
    assert json.loads((out / "config.json").read_text())["config"]["plots"] is False


def test_resume_refusals(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_vi(replace(SMALL, out=str(out)), callback=_interrupt_at(15))
    with pytest.raises(ConfigError, match="--steps cannot change when resuming"):
        resume_vi(out, {"steps": 100})
    with pytest.raises(ConfigError, match=r"already exists.*--resume"):
        run_vi(replace(SMALL, out=str(out)))
    (out / "checkpoint.safetensors").unlink()
    with pytest.raises(RunError, match="checkpoint"):
        resume_vi(out)


def test_a_non_finite_fresh_run_leaves_nothing_and_default_lr(tmp_path: Path) -> None:
    cfg = replace(SMALL, out=str(tmp_path / "run"), lr=1e30, steps=30)  # 6 NaNs in 25 steps
    with pytest.raises(FloatingPointError):
        run_vi(cfg)
    assert list(tmp_path.iterdir()) == []
    assert VIConfig(flow="planar").learning_rate == 1e-2
    assert VIConfig(flow="iaf").learning_rate == 1e-3
    assert VIConfig(flow="iaf", lr=5e-3).learning_rate == 5e-3


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("vi", "--device", "cuda", "--steps", "2", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, "no CUDA device")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_fit_on_cuda_resumes_and_writes_cpu_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = replace(SMALL, out=str(out), device="cuda")
    with pytest.raises(KeyboardInterrupt):
        run_vi(cfg, callback=_interrupt_at(24))
    result = resume_vi(out)
    assert result.results["diagnostics"]["elbo"] is not None
    ref = tmp_path / "ref"
    run_vi(replace(cfg, out=str(ref)))
    assert _elbos(out) == _elbos(ref)  # the CUDA generator is restored too


@pytest.mark.parametrize("target", ["funnel", "banana"])
def test_iaf_with_the_default_lr_stays_finite(target: str, tmp_path: Path) -> None:
    # At the old default lr 1e-2 both diverged at step 1 (funnel: inf, banana: nan).
    cfg = VIConfig(target=target, flow="iaf", steps=12, samples=64, eval_samples=100)
    result = run_vi(replace(cfg, quiet=True, plots=False, out=str(tmp_path / "run")))
    assert result.results["lr"] == 1e-3
    assert all(math.isfinite(e) for _, e in _elbos(tmp_path / "run"))


class _Stop(Exception):
    pass


def test_a_draw_that_overflows_is_skipped_and_the_fit_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seed 2 of the funnel's IAF at the default lr drew a sample whose ``log p~`` overflowed at
    step 7 (a NaN loss, and the run was lost): it is skipped, the flow goes back to its last
    snapshot with half the learning rate, and every step after is finite."""
    seen: list[dict[str, float]] = []

    def stop_at_12(step: int, record: dict[str, float]) -> None:
        seen.append(record)
        if step == 11:
            raise _Stop

    cfg = VIConfig(target="funnel", flow="iaf", steps=150, samples=128, seed=2, quiet=True)
    with pytest.raises(_Stop):
        run_vi(replace(cfg, plots=False, out=str(tmp_path / "run")), callback=stop_at_12)
    assert [r["step"] for r in seen] == list(range(12))
    assert all(math.isfinite(r["loss"]) for r in seen)
    err = capsys.readouterr().err
    assert "step 7: the loss is nan: skipped, restored the state of step 0" in err, err
    assert seen[8]["lr"] < 0.6 * seen[6]["lr"]  # halved


@pytest.mark.slow
@pytest.mark.parametrize(("target", "gap"), [("funnel", 0.5), ("banana", 0.5)])
def test_iaf_with_the_default_lr_reaches_the_evidence(
    target: str, gap: float, tmp_path: Path
) -> None:
    # measured with 300 steps, 128 samples: ELBO -0.20 (funnel, log Z = 0), 1.60 (banana, 1.84)
    cfg = VIConfig(target=target, flow="iaf", steps=300, samples=128, eval_samples=2000)
    result = run_vi(replace(cfg, quiet=True, plots=False, out=str(tmp_path / "run")))
    d = result.results["diagnostics"]
    assert d["log_z_true"] - gap < d["elbo"] < d["log_z_true"]


@pytest.mark.slow
def test_killed_cli_run_resumes(reference: Path, tmp_path: Path) -> None:
    args = ["--target", "u2", "--flow", "planar", "--transforms", "3", "--samples", "16"]
    args += ["--eval-samples", "50", "--no-plots", "--quiet", "--seed", "0"]
    steps = 800
    proc = start(
        "vi", *args, "--steps", str(steps), "--checkpoint-every", "10", "--out", "run", cwd=tmp_path
    )
    checkpoint = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not checkpoint.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()  # closes the pipes
    assert proc.returncode == -signal.SIGKILL, output
    assert not (tmp_path / "run" / "results.json").exists()
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 0 < killed_at < steps
    assert_ok(run_cli("vi", "--resume", "run", "--quiet", cwd=tmp_path))  # the killed: a process
    ref = tmp_path / "ref"
    cfg = replace(SMALL, steps=steps, out=str(ref), checkpoint_every=1000)
    run_vi(cfg)
    assert _elbos(tmp_path / "run") == _elbos(ref)
    a, b = _weights(tmp_path / "run"), _weights(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)
