"""Class-conditional image flows from the command line: ``flowforge train --condition class``
(digits' labels as the per-split context), label dropout in the training batches, the class
given to every likelihood, and ``flowforge sample --class K --guidance G``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_util import assert_bad_input, assert_ok, run_cli, tiny_tarflow
from flowforge.data import load_dataset
from flowforge.data.sklearn_sets import class_context
from flowforge.runs import open_run

SMALL = tiny_tarflow(8)


@pytest.fixture(scope="module")
def class_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("classes")
    proc = run_cli(
        "train", "--data", "digits", "--flow", "tarflow", "--condition", "class", *SMALL,
        "--seed", "3", "--out", "run", cwd=cwd,
    )  # fmt: skip
    assert_ok(proc)
    return cwd / "run"


def test_each_row_gets_its_own_label() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.reshape(len(d.target), -1)
    for seed, n_test in ((0, None), (5, 0.3)):
        ds = class_context(load_dataset("digits", seed=seed, n_test=n_test), seed, None, n_test)
        for split in ("train", "val", "test"):
            rows = getattr(ds, split).reshape(-1, 64).numpy()
            labels = ds.context_of(split).argmax(-1).numpy()
            assert ds.context_of(split).sum(-1).eq(1).all()
            # the first image of the whole set equal to each row: its label
            match = (rows[:, None, :] == images[None, :, :]).all(-1).argmax(1)
            agree = (d.target[match] == labels).mean()
            assert agree > 0.99, (seed, split, agree)  # a few duplicate images differ


def test_class_run_records_its_classes_and_scores_given_them(class_run: Path) -> None:
    record = json.loads((class_run / "config.json").read_text())
    assert record["config"]["condition"] == "class"
    assert record["model"]["kwargs"]["context"] == 10
    assert record["model"]["kwargs"]["label_dropout"] == 0.1
    run = open_run(class_run)
    ds = class_context(load_dataset("digits", seed=3), seed=3)
    torch.manual_seed(0)
    u = (ds.test + torch.rand(ds.test.shape)) / 17
    c = ds.context_of("test")
    own = run.flow.log_prob(u, c)
    other = run.flow.log_prob(u, c.roll(1, -1))  # every row given the next class
    assert not torch.allclose(own, other)  # the class reaches the density
    results = json.loads((class_run / "results.json").read_text())
    assert math.isfinite(results["test"]["bpd"])
    proc = run_cli("eval", class_run, "--samples", "2", cwd=class_run.parent)
    assert_ok(proc)
    assert "bound" in proc.stdout


def test_dequantized_bound_gives_each_noise_its_row_class(class_run: Path) -> None:
    from flowforge.dequantization import UniformDequantizer, dequantized_log_likelihood

    run = open_run(class_run)
    v = load_dataset("digits", seed=3).test[:5]
    c = torch.eye(10)[torch.tensor([3, 1, 4, 1, 5])]
    deq = UniformDequantizer((1, 8, 8), 17)
    torch.manual_seed(1)
    res = dequantized_log_likelihood(run.flow, deq, v, samples=3, context=c)
    torch.manual_seed(1)  # the reference: each row's three noises one row at a time
    rep = v.repeat(3, 1, 1, 1)
    u, log_q = deq.sample(rep)
    w = run.flow.log_prob(u, c.repeat(3, 1)) - 64 * math.log(17) - log_q
    expected = w.double().reshape(3, 5).mean(0)
    torch.testing.assert_close(res.bound, expected, rtol=1e-6, atol=1e-6)


def test_sample_class_is_the_flow_given_that_class(class_run: Path) -> None:
    from flowforge.eval.score import sample_rows

    run = open_run(class_run)
    for label in (2, 7):
        x = sample_rows(run, 6, seed=4, label=label)
        torch.manual_seed(4)  # the reference: the preset's sampling given the one-hot class
        u = run.flow.sample(6, torch.eye(10)[label])
        assert torch.equal(x, (u * 17).floor().clamp(0, 16))
    turns = sample_rows(run, 12, seed=4)  # no class: the classes in turn
    torch.manual_seed(4)
    u = run.flow.sample(1, torch.eye(10)[torch.arange(12) % 10])[0]
    assert torch.equal(turns, (u * 17).floor().clamp(0, 16))


def test_sample_with_class_and_guidance_from_the_cli(class_run: Path) -> None:
    cwd = class_run.parent
    outs = {}
    for name, flags in {
        "three": ["--class", "3"],
        "five": ["--class", "5"],
        "guided": ["--class", "3", "--guidance", "2"],
    }.items():
        assert_ok(run_cli("sample", class_run, "-n", "6", "-o", f"{name}.npy", *flags, cwd=cwd))
        outs[name] = np.load(cwd / f"{name}.npy")
        assert outs[name].shape == (6, 1, 8, 8) and 0 <= outs[name].min() <= outs[name].max() <= 16
    assert not np.array_equal(outs["three"], outs["five"])
    assert not np.array_equal(outs["three"], outs["guided"])
    assert_ok(run_cli("sample", class_run, "-n", "20", "-o", "grid.png", cwd=cwd))


def test_score_gives_each_row_its_class(class_run: Path, tmp_path: Path) -> None:
    run = open_run(class_run)
    v = load_dataset("digits", seed=3).test[:6]  # (6, 1, 8, 8) levels
    labels = np.array([3, 1, 4, 1, 5, 9])
    pixels = v.reshape(6, -1).numpy()
    rows = np.concatenate([pixels, labels[:, None], labels[:, None] % 2], axis=1)
    names = [str(i) for i in range(64)] + ["digit", "odd"]
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", header=",".join(names), comments="")
    bare = np.concatenate([labels[:, None], pixels], axis=1)  # the class first; no header
    np.savetxt(tmp_path / "bare.csv", bare, delimiter=",")
    np.savetxt(tmp_path / "pixels.csv", pixels, delimiter=",")
    # the reference: seed 0's uniform noise, the flow given a one-hot class
    noise = torch.rand(v.shape, generator=torch.Generator().manual_seed(0))
    u = (v + noise) / 17
    with torch.no_grad():
        own = run.flow.log_prob(u, torch.eye(10)[labels]).double()
        three = run.flow.log_prob(u, torch.eye(10)[[3] * 6]).double()
    assert not torch.allclose(own, three)
    for flags, expected in (
        (["--input", "rows.csv", "--class-column", "digit", "--labels", "odd"], own),
        (["--input", "rows.csv", "--class-column", "digit", "--class", "3"], None),
        (["--input", "pixels.csv", "--class", "3"], three),
    ):
        proc = run_cli("score", class_run, *flags, "-o", "s.npy", cwd=tmp_path)
        if expected is None:  # --class and --class-column exclude each other
            assert proc.returncode == 2 and "not allowed with" in proc.stderr
            continue
        assert_ok(proc)
        got = torch.from_numpy(np.load(tmp_path / "s.npy"))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert_ok(run_cli("score", class_run, "-i", "bare.csv", "--class-column", "0", "-o", "b.npy",
                      cwd=tmp_path))  # fmt: skip
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "b.npy")), own, rtol=1e-5,
                               atol=1e-4)  # fmt: skip
    rows[2, -2] = 10
    np.savetxt(tmp_path / "bad.csv", rows, delimiter=",", header=",".join(names), comments="")
    proc = run_cli("score", class_run, "-i", "bad.csv", "--class-column", "digit", "--labels",
                   "odd", cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "row 3: expected a class in 0..9, got 10")
    proc = run_cli("score", class_run, "-i", "bad.csv", "--class-column", "odd", cwd=tmp_path)
    assert_bad_input(proc, "has 65 columns")  # the other label is taken for a pixel
    proc = run_cli("score", class_run, "-i", "pixels.csv", "--class", "10", cwd=tmp_path)
    assert_bad_input(proc, "expected a class in 0..9, got 10")


def test_bad_class_options_are_one_line(class_run: Path, tmp_path: Path) -> None:
    for k in ("10", "-1"):
        proc = run_cli("sample", class_run, "-n", "2", "--class", k, cwd=tmp_path)
        assert_bad_input(proc, f"expected a class in 0..9, got {k}")
    proc = run_cli("score", class_run, "--input", "x.csv", cwd=tmp_path)
    assert_bad_input(proc, "class-conditional", "--class K")
    proc = run_cli("train", "--data", "digits", "--flow", "tarflow", *SMALL[:-2], "--steps", "1",
                   "--flow-options", '{"blocks": 1, "width": 8}', "--out", "u", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    proc = run_cli("sample", tmp_path / "u", "-n", "2", "--class", "3", cwd=tmp_path)
    assert_bad_input(proc, "--class 3 needs a class-conditional run", "without classes")
    proc = run_cli("score", tmp_path / "u", "--input", "x.csv", "--class", "3", cwd=tmp_path)
    assert_bad_input(proc, "--class needs a class-conditional run", "without classes")
    for data, why in (("wine", "only digits have"), ("moons", "only digits have")):
        proc = run_cli("train", "--data", data, "--condition", "class", "--quiet", cwd=tmp_path)
        assert_bad_input(proc, why)
    proc = run_cli("train", "--data", "digits", "--flow", "tarflow", "--flow-options",
                   '{"label_dropout": 0.2}', "--quiet", cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "'label_dropout'", "no context")
    assert not (tmp_path / "runs").exists()


def test_label_dropout_nulls_training_classes_only() -> None:
    from flowforge.train.batches import TrainStream

    ds = class_context(load_dataset("digits"))
    plain = TrainStream(ds, 512, seed=0).next_batch()
    x, c = TrainStream(ds, 512, seed=0, label_dropout=0.25).next_batch()
    assert plain[1] is not None and c is not None
    dropped = c.sum(-1) == 0
    assert 0.15 < dropped.float().mean().item() < 0.35
    assert torch.equal(c[~dropped], plain[1][~dropped])  # the others keep their own class
    assert torch.equal(x, plain[0])  # the same rows, the same dequantization


def test_classifier_benchmark_scores_a_cli_run(class_run: Path, tmp_path: Path) -> None:
    from repo_scripts import load_script

    classes = load_script("benchmarks/tarflow_classes.py", "flowforge_bench_tarflow_classes")
    out = tmp_path / "r.json"
    rows = classes.main(
        ["--run", str(class_run), "--per-class", "2", "--guidance", "1", "--json", str(out)]
    )
    assert json.loads(out.read_text()) == rows
    assert rows[0]["accuracy"] > 0.9 and len(rows) == 3  # the ceiling, plain, guided
    assert all(0 <= r["accuracy"] <= 1 for r in rows)
    proc = run_cli("train", "--data", "digits", "--flow", "tarflow", "--condition", "class",
                   *SMALL, "--noise", "0.05", "--out", "n", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    noisy = str(tmp_path / "n")
    rows = classes.main(["--run", noisy, "--per-class", "1", "--guidance", "1"])
    names = [
        noisy,
        f"{noisy} --denoise",
        f"{noisy} --guidance 1",
        f"{noisy} --guidance 1 --denoise",
    ]
    assert [r["model"] for r in rows[1:]] == names  # a noisy run's samples denoised too


def test_glow_with_classes_is_conditioned_by_them(class_run: Path, tmp_path: Path) -> None:
    small = [*SMALL[:-2], "--flow-options", '{"levels": 1, "depth": 1, "hidden": [8, 8]}']
    proc = run_cli("train", "--data", "digits", "--flow", "glow", "--condition", "class", *small,
                   "--steps", "6", "--out", "g", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    run = open_run(tmp_path / "g")
    assert run.record["config"]["condition"] == "class" and run.spec.kwargs["context"] == 10
    assert "label_dropout" not in run.spec.kwargs  # TarFlow's only
    v = load_dataset("digits").test[:8]
    u = (v + torch.rand(v.shape, generator=torch.Generator().manual_seed(0))) / 17
    c = torch.eye(10)[torch.arange(8)]
    with torch.no_grad():  # the class reaches every coupling's network, hence the density
        own, other = run.flow.log_prob(u, c), run.flow.log_prob(u, c.roll(1, -1))
    assert torch.isfinite(own).all() and (own - other).abs().max() > 1e-3
    from flowforge.eval.score import sample_rows

    assert not torch.equal(
        sample_rows(run, 4, seed=1, label=2), sample_rows(run, 4, seed=1, label=7)
    )
    proc = run_cli("sample", tmp_path / "g", "-n", "2", "--class", "3", "--guidance", "1",
                   cwd=tmp_path)  # fmt: skip
    assert_bad_input(proc, "--guidance 1", "TarFlow")
    from repo_scripts import load_script

    classes = load_script("benchmarks/tarflow_classes.py", "flowforge_bench_tarflow_classes")
    glow = str(tmp_path / "g")
    rows = classes.main(["--run", str(class_run), glow, "--per-class", "1", "--guidance", "1"])
    names = [str(class_run), f"{class_run} --guidance 1", glow, f"{glow} --temperature 0.7"]
    assert [r["model"] for r in rows[1:]] == names  # side by side; Glow unguided, at T 0.7
