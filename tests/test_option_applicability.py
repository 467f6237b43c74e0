"""Options that do nothing for the chosen data, objective or flow are refused in one line
(issue 22): each was accepted without a word before. The same options where they do act, and
the presets' own training defaults, are still taken."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cli_util import TINY, TINY_TABLE, assert_bad_input, assert_ok, run_cli
from flowforge.data import Dataset, load_dataset
from flowforge.data.base import fit_standardize
from flowforge.runs.errors import ConfigError
from flowforge.train.applicable import check_applicable, user_given
from flowforge.train.config import TrainConfig
from flowforge.train.model import preset_defaults


def _toy() -> Dataset:
    return load_dataset("moons", n_val=10, n_test=10)


def _table() -> Dataset:
    x = torch.randn(60, 3, generator=torch.Generator().manual_seed(0)).double().numpy()
    std, (a, b, c) = fit_standardize(x[:40], x[40:50], x[50:])
    return Dataset("t", "tabular", (3,), a, b, c, standardizer=std)


def _image() -> Dataset:
    x = torch.randint(0, 17, (8, 1, 8, 8)).float()
    return Dataset("digits", "image", (1, 8, 8), x, x, x, levels=17)


def _cli_cfg(*layers: dict[str, object]) -> TrainConfig:
    """The options as ``flowforge train`` layers them: the preset's and objective's training
    defaults under the user's."""
    asked = TrainConfig.from_layers(*layers)
    return TrainConfig.from_layers(preset_defaults(asked.flow, asked.objective), *layers)


@pytest.mark.parametrize(
    ("layer", "data", "expected"),
    [
        # a schedule's option under another schedule
        ({"schedule": "plateau", "min_lr": 0.0}, _toy, "--min-lr .* with --schedule plateau"),
        ({"lr_factor": 0.3}, _toy, "--lr-factor .* with --schedule cosine"),
        ({"schedule": "constant", "lr_patience": 2}, _toy, "--lr-patience .* constant"),
        # a recovery option without recovery
        ({"on_nan": "stop", "nan_lr_factor": 0.2}, _toy, "--nan-lr-factor .* --on-nan stop"),
        ({"on_nan": "stop", "max_nan_recoveries": 9}, _toy, "--max-nan-recoveries"),
        # data options on data that have none of it
        ({"data_dir": "/somewhere"}, _toy, "--data-dir .* '8gaussians', which is not read from it"),
        ({"logit_alpha": 0.01}, _table, "--logit-alpha .* for tabular data"),
        ({"dequantization": "uniform"}, _toy, "--dequantization .* for toy data"),
        ({"whiten": True}, _toy, "--whiten .* for toy data"),
        ({"defensive": False}, _image, "--no-defensive .* for image data"),
        ({"flow": "glow", "whiten": False}, _image, "--no-whiten .* for image data"),
        ({"size_from_data": False}, _toy, "--no-size-from-data .* for toy data"),
        # an image option that another image option switches off
        ({"flow": "glow", "noise": 0.05, "logit_alpha": 0.01}, _image, "with --noise 0.05"),
        # the ODE solves of likelihood training under flow matching
        (
            {"flow": "ffjord", "objective": "flow-matching", "flow_options": {"adjoint": False}},
            _toy,
            "'adjoint' does nothing with --objective flow-matching",
        ),
        (
            {"flow": "ffjord", "objective": "flow-matching", "flow_options": {"trace": "exact"}},
            _toy,
            "'trace' does nothing",
        ),
        (
            {"flow": "ffjord", "objective": "flow-matching", "flow_options": {"learn_time": True}},
            _toy,
            "flow matching trains the field, not the integration time",
        ),
        # an option of the other dynamics (flow matching's default is the plain MLP)
        (
            {"flow": "ffjord", "objective": "flow-matching", "flow_options": {"gate_bias": 1.0}},
            _toy,
            "'gate_bias' .* dynamics are 'mlp'",
        ),
        (
            {"flow": "ffjord", "flow_options": {"reverse_time": True}},
            _toy,
            "'reverse_time' .* dynamics are 'concatsquash'",
        ),
    ],
)
def test_an_option_that_does_nothing_is_refused(
    layer: dict[str, object], data: object, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        check_applicable(_cli_cfg(layer), data())  # type: ignore[operator]


@pytest.mark.parametrize(
    ("layer", "data"),
    [
        ({"schedule": "plateau", "lr_factor": 0.3, "lr_patience": 2}, _toy),
        ({"min_lr": 1e-5}, _toy),
        ({"on_nan": "recover", "nan_lr_factor": 0.2, "max_nan_recoveries": 2}, _toy),
        ({"data_dir": "/somewhere", "data": "power"}, _toy),
        ({"whiten": True, "defensive": False, "size_from_data": False}, _table),
        ({"flow": "glow", "logit_alpha": 0.01, "dequantization": "variational"}, _image),
        ({"flow": "glow", "noise": 0.05}, _image),  # logit_alpha from the image defaults
        ({"flow": "ffjord", "objective": "flow-matching", "flow_options": {"rtol": 1e-4}}, _toy),
        ({"flow": "ffjord", "flow_options": {"adjoint": False, "trace": "exact"}}, _toy),
        (
            {"flow": "ffjord", "objective": "flow-matching", "flow_options": {"reverse_time": 1}},
            _toy,
        ),
        ({"flow": "ffjord", "flow_options": {"dynamics": "mlp", "reverse_time": True}}, _toy),
    ],
)
def test_the_same_options_where_they_act_are_taken(layer: dict[str, object], data: object) -> None:
    check_applicable(_cli_cfg(layer), data())  # type: ignore[operator]


def test_preset_defaults_are_not_the_users() -> None:
    cfg = _cli_cfg({"flow": "tarflow", "data": "digits", "noise": 0.05})
    assert "logit_alpha" in cfg.given  # set by the image presets' defaults layer
    assert user_given(cfg) == ["flow", "data", "noise"]
    cfg = _cli_cfg({"flow": "tarflow", "data": "digits", "logit_alpha": 0.01, "lr": 6e-3})
    assert "logit_alpha" in user_given(cfg)
    assert "lr" not in user_given(cfg)  # the preset's own value, whoever set it


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--schedule", "plateau", "--min-lr", "0"], "--min-lr is the learning rate"),
        (["--time-budget", "10"], "--time-budget is the time of the --flow auto search"),
        (["--no-defensive"], "--no-defensive mixes a standardised table"),
    ],
)
def test_the_cli_refuses_in_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    proc = run_cli("train", *TINY, "--steps", "2", *args, "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, expected)
    assert list(tmp_path.iterdir()) == []


def test_the_cli_takes_them_where_they_act(tmp_path: Path) -> None:
    args = ["--data", "wine", *TINY_TABLE, "--steps", "2", "--no-defensive", "--no-whiten"]
    assert_ok(run_cli("train", *args, "--schedule", "plateau", "--lr-factor", "0.3",
                      "--out", "run", cwd=tmp_path))  # fmt: skip


def test_vi_refuses_iwae_k_without_iwae(tmp_path: Path) -> None:
    tiny = ["--steps", "2", "--samples", "8", "--eval-samples", "50", "--transforms", "2"]
    proc = run_cli("vi", *tiny, "--iwae-k", "4", "--out", "vi", cwd=tmp_path)
    assert_bad_input(proc, "--iwae-k is the number of draws of an IWAE estimate", "elbo")
    assert list(tmp_path.iterdir()) == []
    args = [*tiny, "--no-plots", "--objective", "iwae", "--iwae-k", "2", "--out", "vi"]
    assert_ok(run_cli("vi", *args, cwd=tmp_path))
