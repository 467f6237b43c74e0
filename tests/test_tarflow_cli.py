"""TarFlow from the command line (noise augmentation, denoised and guided samples) and its GPU
recipe script, smoke-tested on the CPU at a tiny size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_util import assert_bad_input, assert_ok, run_cli, tiny_tarflow
from flowforge.runs import open_run
from repo_scripts import load_script

SMALL = tiny_tarflow(6)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("tarflow")
    proc = run_cli(
        "train", "--data", "digits", "--flow", "tarflow", *SMALL, "--noise", "0.05", "--out",
        "run", cwd=cwd,
    )  # fmt: skip
    assert_ok(proc)
    return cwd / "run"


def test_noisy_run_maps_u_to_2u_minus_1_and_reports_clean_bits_per_dim(noisy_run: Path) -> None:
    record = json.loads((noisy_run / "config.json").read_text())
    assert record["config"]["noise"] == 0.05
    assert record["model"]["pretransform"] == "centre"
    assert record["model"]["kwargs"]["patch"] == 2 and record["model"]["kwargs"]["blocks"] == 2
    run = open_run(noisy_run)
    u = torch.rand(3, 1, 8, 8)
    inner = run.flow.bijection.bijections[1]  # type: ignore[union-attr,index]
    z, ladj = inner(2 * u - 1)
    expected = run.flow.base.log_prob(z) + ladj + 64 * math.log(2)  # the centring's Jacobian
    torch.testing.assert_close(run.flow.log_prob(u), expected)
    results = json.loads((noisy_run / "results.json").read_text())
    assert 0 < results["test"]["bpd"] < 12


def _dropouts(flow: torch.nn.Module) -> set[float]:
    return {m.p for m in flow.modules() if isinstance(m, torch.nn.Dropout)}


def _relative(flow: torch.nn.Module) -> int:
    from flowforge.nn.causal_transformer import RelativeBias

    return sum(isinstance(m, RelativeBias) for m in flow.modules())


def test_image_runs_get_dropout_and_relative_bias_and_old_runs_load_without(
    noisy_run: Path,
) -> None:
    from flowforge.runs.recipe import ModelSpec, build_flow
    from flowforge.train.model import TARFLOW_IMAGE_DROPOUT, TARFLOW_IMAGE_RELATIVE

    model = json.loads((noisy_run / "config.json").read_text())["model"]
    assert model["kwargs"]["dropout"] == TARFLOW_IMAGE_DROPOUT > 0  # saved with the run
    assert model["kwargs"]["relative"] is TARFLOW_IMAGE_RELATIVE is True
    flow = open_run(noisy_run).flow
    assert _dropouts(flow) == {TARFLOW_IMAGE_DROPOUT}
    assert _relative(flow) == 2 * model["kwargs"]["layers"]  # SMALL: 2 blocks
    for key, gone in (("dropout", _dropouts), ("relative", _relative)):
        old = {**model, "kwargs": {k: v for k, v in model["kwargs"].items() if k != key}}
        assert not gone(build_flow(ModelSpec.from_dict(old)))  # saved before: as trained


def test_noise_reaches_the_training_batches_only() -> None:
    from flowforge.data import load_dataset
    from flowforge.train.batches import TrainStream

    ds = load_dataset("digits")
    clean = TrainStream(ds, 32, seed=0).next()
    noisy = TrainStream(ds, 32, seed=0, noise=0.1).next()
    assert clean.min() >= 0 and clean.max() < 1
    assert 0.05 < (noisy - clean).std().item() < 0.2  # the same batch, the same dequantization


def test_sample_denoises_and_guides(noisy_run: Path) -> None:
    cwd = noisy_run.parent
    outs = {}
    for name, flags in {
        "plain": [],
        "denoised": ["--denoise"],
        "guided": ["--guidance", "1", "--attention-temperature", "2"],
    }.items():
        assert_ok(run_cli("sample", noisy_run, "-n", "8", "-o", f"{name}.npy", *flags, cwd=cwd))
        outs[name] = np.load(cwd / f"{name}.npy")
        assert outs[name].shape == (8, 1, 8, 8)
        assert outs[name].min() >= 0 and outs[name].max() <= 16
    assert not np.array_equal(outs["plain"], outs["denoised"])
    assert not np.array_equal(outs["plain"], outs["guided"])


def test_bad_sampling_and_noise_options_are_one_line(noisy_run: Path, tmp_path: Path) -> None:
    proc = run_cli("sample", noisy_run, "-n", "2", "--guidance", "1", "--attention-temperature",
                   "1", cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "attention temperature != 1")
    proc = run_cli("train", "--data", "digits", "--flow", "glow", "--quiet", "--steps", "2",
                   "--hidden", "8", "--out", "g", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    assert_bad_input(run_cli("sample", tmp_path / "g", "--denoise", cwd=tmp_path), "--noise > 0")
    assert_bad_input(
        run_cli("sample", tmp_path / "g", "--guidance", "1", cwd=tmp_path),
        "TransformerAutoregressive",
    )
    proc = run_cli("train", "--data", "wine", "--noise", "0.1", "--quiet", cwd=tmp_path)
    assert_bad_input(proc, "--noise augments uniformly dequantized images")
    proc = run_cli("train", "--data", "digits", "--noise", "-1", "--quiet", cwd=tmp_path)
    assert_bad_input(proc, "noise must be >= 0")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bf16_training_of_tarflow(tmp_path: Path) -> None:
    proc = run_cli(
        "train", "--data", "digits", "--flow", "tarflow", *SMALL, "--precision", "bf16",
        "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert_ok(proc)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert math.isfinite(results["test"]["bpd"])


def test_gpu_recipe_smoke_on_cpu(tmp_path: Path) -> None:
    recipe = load_script("benchmarks/tarflow_gpu.py", "flowforge_bench_tarflow_gpu")
    tiny = ["--shape", "3", "4", "4", "--steps", "3", "--width", "8", "--blocks", "2"]
    tiny += ["--layers", "1", "--heads", "2", "--batch", "4", "--device", "cpu", "--warmup", "1"]
    out = recipe.main(["--data", "synthetic", *tiny, "--bf16", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == out
    assert out["steps"] == 3 and out["images_per_second"] > 0 and out["peak_memory_mib"] > 0
    # random 8-bit images: an untrained flow is far from the 8 bits/dim of a uniform model
    assert 8 < out["test_bpd"] < 20 and math.isfinite(out["train_noisy_bpd_last"])
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    g = np.random.default_rng(0)
    for name, n in (("train_data_batch_1.npz", 6), ("val_data.npz", 3)):
        np.savez(folder / name, data=g.integers(0, 256, (n, 3072), dtype=np.uint8))
    train, test = recipe.load_images("imagenet32", tmp_path, (3, 32, 32))
    assert train.shape == (6, 3, 32, 32) and test.shape == (3, 3, 32, 32)
    with pytest.raises(SystemExit, match=r"val_data\.npz"):
        recipe.load_images("imagenet32", tmp_path / "nowhere", (3, 32, 32))


@pytest.mark.slow
def test_speed_and_comparison_scripts_smoke(tmp_path: Path) -> None:
    speed = load_script("benchmarks/speed_tarflow.py", "flowforge_bench_speed_tarflow")
    tiny = ["--shape", "1", "4", "4", "--blocks", "2", "--layers", "1", "--width", "16"]
    out = speed.main([*tiny, "--batch", "8", "--sample-batch", "4", "--repeats", "1"])
    assert set(out["median_ms"]) >= {"TarFlow sample (KV cache)", "TarFlow sample (uncached)"}
    assert all(v > 0 for v in out["ratios"].values())
    classes = load_script("benchmarks/tarflow_classes.py", "flowforge_bench_tarflow_classes")
    rows = classes.main(
        ["--seconds", "0.2", "--per-class", "1", "--width", "16", "--guidance", "2"]
    )
    assert rows[0]["accuracy"] > 0.9  # the SVC on real test digits
    assert len(rows) == 7 and all(0 <= r["accuracy"] <= 1 for r in rows)
    digits = load_script("benchmarks/tarflow_digits.py", "flowforge_bench_tarflow_digits")
    flags = '--flow tarflow --steps 2 --no-plots --flow-options \'{"blocks": 1, "width": 8}\''
    assert (
        digits.main(["--only", "--extra", f"t={flags}", "--json", str(tmp_path / "d.jsonl")]) == 0
    )
    (row,) = map(json.loads, (tmp_path / "d.jsonl").read_text().splitlines())
    assert row["steps"] == 2 and 0 < row["bpd"] < 12 and 0 < row["train_bpd"] < 12
    assert row["cpu_seconds"] > 0 and row["seed"] == 0


def test_tarflow_brings_its_training_defaults() -> None:
    from flowforge.train.model import IMAGE_TRAINING_DEFAULTS, preset_defaults

    defaults = preset_defaults("tarflow")
    assert defaults["lr"] == 6e-3 and defaults["ema_decay"] == 0.998
    assert defaults["epochs"] == 160
    assert defaults["batch_size"] == IMAGE_TRAINING_DEFAULTS["batch_size"]
    assert preset_defaults("glow") == IMAGE_TRAINING_DEFAULTS


def test_tarflow_on_a_table_is_its_vector_mode(tmp_path: Path) -> None:
    from flowforge.train.model import preset_defaults

    assert preset_defaults("tarflow", None, "wine") == {}  # a table's own defaults
    assert preset_defaults("tarflow", None, "digits")["lr"] == 6e-3
    tiny = ["--quiet", "--no-plots", "--steps", "4", "--eval-every", "2"]
    tiny += ["--flow-options", '{"blocks": 2, "layers": 1, "width": 8, "heads": 2}']
    proc = run_cli(
        "train", "--data", "wine", "--flow", "tarflow", *tiny, "--out", "w", cwd=tmp_path
    )
    assert_ok(proc)
    record = json.loads((tmp_path / "w" / "config.json").read_text())
    kwargs = record["model"]["kwargs"]
    assert kwargs["features"] == 13 and kwargs["patch"] == 1 and "shape" not in kwargs
    assert "dropout" not in kwargs  # the image runs' dropout is not a table's default
    assert "relative" not in kwargs  # nor their relative bias
    cfg = record["config"]  # not the image preset's training defaults
    assert cfg["ema_decay"] != 0.998 and cfg["warmup_steps"] != 200
    run = open_run(tmp_path / "w")
    assert _dropouts(run.flow) == set()
    x = torch.randn(5, 13, dtype=torch.float32)
    assert torch.isfinite(run.flow.log_prob(x)).all()
    assert_ok(run_cli("sample", tmp_path / "w", "-n", "3", "-o", "s.csv", cwd=tmp_path))
    proc = run_cli("train", "--data", "wine", "--flow", "tarflow", "--quiet", "--flow-options",
                   '{"patch": 2}', cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "divisible by patch 2")


def test_vector_benchmark_smoke(tmp_path: Path) -> None:
    bench = load_script("benchmarks/tarflow_vector.py", "flowforge_bench_tarflow_vector")
    out = tmp_path / "v.jsonl"
    tar = 'tarflow:{"blocks": 1, "width": 8, "dropout": 0.1}'
    args = ["--tables", "wine", "--flows", tar, "maf", "--seeds", "0", "--steps", "2"]
    assert bench.main([*args, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["flow"] for r in rows] == [tar, "maf"]
    assert rows[0]["parameters"] < 5_000  # its options, not the default width 32 x 4 blocks
    assert all(r["steps"] == 2 and math.isfinite(r["test_nll"]) for r in rows)
    assert "| wine |" in bench.table(out)
