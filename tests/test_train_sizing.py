"""Issue 11: defaults sized from the table, and options that fail at parse time in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_util import assert_bad_input, assert_ok, flowforge, run_cli
from flowforge.data import Dataset, load_dataset
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.sizing import SMALL_ROWS, size_for_data


def _table(rows: int, cols: int) -> Dataset:
    z = torch.zeros(rows, cols)
    return Dataset("t", "tabular", (cols,), z, z[:10], z[:10])


def test_small_tables_get_a_batch_within_the_rows_and_early_stopping() -> None:
    cfg, chosen = size_for_data(TrainConfig.from_layers({"flow": "maf"}), _table(142, 13))
    assert (cfg.batch_size, cfg.eval_every, cfg.patience) == (142, 1, 50)
    assert cfg.restore_best
    assert (cfg.hidden, cfg.transforms, cfg.lr, cfg.weight_decay) == ((32, 32), 1, 1e-3, 1e-3)
    assert chosen == {k: getattr(cfg, k) for k in chosen}
    cfg, _ = size_for_data(TrainConfig.from_layers({"flow": "realnvp"}), _table(142, 13))
    assert cfg.transforms == 3
    cfg, _ = size_for_data(TrainConfig.from_layers({"flow": "nsf"}), _table(1000, 30))
    assert (cfg.batch_size, cfg.eval_every, cfg.hidden) == (256, 4, (60, 60))
    # width from the columns, clipped to 64
    cfg, _ = size_for_data(TrainConfig.from_layers({"flow": "nsf"}), _table(500, 200))
    assert cfg.hidden == (64, 64)


def test_large_tables_keep_the_size_and_validate_every_100_steps() -> None:
    cfg, chosen = size_for_data(TrainConfig(), _table(SMALL_ROWS * 100, 6))
    assert (cfg.batch_size, cfg.eval_every, cfg.patience) == (256, 100, 10)
    assert cfg.hidden is None and cfg.transforms is None and cfg.lr == TrainConfig().lr
    assert set(chosen) == {"patience"}


def test_given_options_win() -> None:
    given = {"flow": "maf", "batch_size": 32, "patience": 0, "hidden": (8,), "lr": 0.01}
    cfg, chosen = size_for_data(TrainConfig.from_layers(given), _table(142, 13))
    assert (cfg.batch_size, cfg.patience, cfg.hidden, cfg.lr) == (32, 0, (8,), 0.01)
    assert cfg.eval_every == 5  # one epoch of the given batch size
    assert set(chosen) == {"eval_every", "transforms", "weight_decay"}
    # a value equal to the fixed default, given, still wins
    cfg, _ = size_for_data(TrainConfig.from_layers({"batch_size": 256}), _table(142, 13))
    assert cfg.batch_size == 256


def test_toy_data_images_and_the_switch_keep_the_fixed_defaults() -> None:
    toy = load_dataset("8gaussians", n_val=20, n_test=20)
    assert size_for_data(TrainConfig(), toy) == (TrainConfig(), {})
    img = Dataset("i", "image", (1, 2, 2), torch.zeros(9, 1, 2, 2), torch.zeros(2, 1, 2, 2),
                  torch.zeros(2, 1, 2, 2), levels=2)  # fmt: skip
    assert size_for_data(TrainConfig(), img)[1] == {}
    off = TrainConfig.from_layers({"size_from_data": False})
    assert size_for_data(off, _table(142, 13)) == (off, {})


def test_config_records_the_layers_keys() -> None:
    cfg = TrainConfig.from_layers({"flow": "maf"}, {"lr": 0.01, "steps": 5})
    assert cfg.given == ("flow", "lr", "steps")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert "given" not in TrainConfig.option_names()
    with pytest.raises(ConfigError, match="unknown key 'given'"):
        TrainConfig.from_layers({"given": ["lr"]})


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"lr": float("nan")}, "lr must be a finite number, got nan"),
        ({"lr": float("inf")}, "lr must be a finite number, got inf"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"lr": 1e-3, "min_lr": 1e-2}, r"min_lr \(0.01\) must not be above lr \(0.001\)"),
        ({"hidden": []}, r"hidden widths must be positive, got \[\]"),
    ],
)
def test_bad_numbers_are_config_errors(layer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_layers(layer)


def _csv(path: Path, rows: int = 120) -> Path:
    x = np.random.default_rng(0).normal(size=(rows, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3],
                                                                      [0, 0, 1.0]])  # fmt: skip
    path.write_text("a,b,c\n" + "".join(f"{r[0]:.5f},{r[1]:.5f},{r[2]:.5f}\n" for r in x))
    return path


def test_cli_prints_and_saves_the_sized_defaults(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv")
    args = ["--data", "t.csv", "--flow", "maf", "--quiet", "--no-plots", "--steps", "40"]
    proc = run_cli("train", *args, "--transforms", "1", "--out", "r", cwd=tmp_path)
    assert_ok(proc)
    assert (
        "defaults for 96 training rows x 3 columns: --batch-size 96 --eval-every 1" in proc.stdout
    )
    record = json.loads((tmp_path / "r" / "config.json").read_text())
    sized = record["sized_from_data"]
    assert sized["batch_size"] == 96 and sized["patience"] == 50 and "transforms" not in sized
    assert record["config"]["batch_size"] == 96 and record["config"]["transforms"] == 1
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == results["steps"]  # validated every epoch (one step each)
    # flags win, and the switch keeps the fixed defaults
    proc = run_cli("train", *args, "--batch-size", "40", "--no-size-from-data", "--steps", "3",
                   "--out", "r2", cwd=tmp_path)  # fmt: skip
    assert_ok(proc)
    assert "defaults for" not in proc.stdout
    record = json.loads((tmp_path / "r2" / "config.json").read_text())
    assert record["config"]["batch_size"] == 40 and record["config"]["patience"] == 0


@pytest.mark.parametrize(
    # real: a python -m flowforge process (one case: the entry point's exit 2), else cli.main here
    ("flags", "fragment", "real"),
    [
        (["--lr", "nan"], "lr must be a finite number", True),
        (["--lr", "inf"], "lr must be a finite number", False),
        (["--weight-decay", "nan"], "weight_decay must be a finite number", False),
        (
            ["--lr", "0.001", "--min-lr", "0.01"],
            "min_lr (0.01) must not be above lr (0.001)",
            False,
        ),
        (["--hidden", ""], "--hidden expects integers separated by commas, got ''", False),
        (["--hidden", ","], "--hidden expects integers separated by commas, got ','", False),
    ],
)
def test_cli_bad_numbers_exit_2_in_one_line(
    tmp_path: Path, flags: list[str], fragment: str, real: bool
) -> None:
    proc = (flowforge if real else run_cli)("train", *flags, "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, fragment)
    assert not (tmp_path / "r").exists()


def test_cli_empty_hidden_in_toml_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("hidden = []\n")
    proc = run_cli("train", "--config", "c.toml", "--out", "r", cwd=tmp_path)
    assert_bad_input(proc, "hidden widths must be positive, got []")
