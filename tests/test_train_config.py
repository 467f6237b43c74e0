"""TrainConfig: the single source of the options, TOML layering and its error messages."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flowforge.train.config import (
    RESUME_KEYS,
    ConfigError,
    TrainConfig,
    add_arguments,
    flags_to_dict,
    parse_flag_value,
    read_toml,
)


def parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return flags_to_dict(parser.parse_args(list(argv)))


def test_every_field_has_a_flag_and_only_given_flags_are_returned() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == set(TrainConfig.option_names())
    assert parse() == {}


def test_flags_are_converted_to_field_types() -> None:
    got = parse("--hidden", "32,16", "--lr", "0.01", "--bins", "none", "--no-plots", "--quiet")
    assert got == {"hidden": (32, 16), "lr": 0.01, "bins": None, "plots": False, "quiet": True}
    assert parse("--flow-options", '{"coupling": true}') == {"flow_options": {"coupling": True}}


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--steps expects an integer, got 'ten'"):
        parse_flag_value("steps", "ten")


def test_layers_override_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('flow = "maf"\nsteps = 50\nhidden = [8, 8]\nlr = 1\n[flow_options]\n')
    cfg = TrainConfig.from_layers(read_toml(toml), {"steps": 70})
    assert (cfg.flow, cfg.steps, cfg.hidden, cfg.lr) == ("maf", 70, (8, 8), 1.0)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_steps_and_epochs_exclude_each_other() -> None:
    cfg = TrainConfig.from_layers({"epochs": 2.0}, {"steps": 10})
    assert (cfg.steps, cfg.epochs) == (10, None)
    cfg = TrainConfig.from_layers({"steps": 10}, {"epochs": 3})
    assert cfg.epochs == 3.0
    with pytest.raises(ConfigError, match="steps or epochs, not both"):
        TrainConfig.from_layers({"steps": 10, "epochs": 1.0})


def test_unknown_key_names_it_and_the_valid_keys() -> None:
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_layers({"learning_rate": 0.1}, source="c.toml: ")
    msg = str(e.value)
    assert msg.startswith("c.toml: unknown key 'learning_rate'; valid keys: data, ")
    assert all(k in msg for k in ("lr", "batch_size", "on_nan"))


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        ({"steps": "100"}, "steps must be an integer, got '100'"),
        ({"steps": True}, "steps must be an integer"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"hidden": [64, "a"]}, "hidden must be a list of integers"),
        ({"schedule": "linear"}, "schedule must be one of cosine, plateau, constant"),
        ({"on_nan": "ignore"}, "on_nan must be one of recover, stop"),
        ({"steps": 0}, "steps must be positive"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"logit_alpha": 0.5}, "logit_alpha must be in"),
        ({"nan_lr_factor": 1.0}, "nan_lr_factor must be in"),
        ({"flow": None}, "flow must not be empty"),
    ],
)
def test_bad_values_are_named(layer: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        TrainConfig.from_layers(layer)


def test_read_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("steps = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_toml(bad)


def test_resume_keys_are_fields() -> None:
    assert set(RESUME_KEYS) <= set(TrainConfig.option_names())


def test_the_config_is_composed_of_the_option_groups_in_order() -> None:
    """TrainConfig is the small groups, each in the module of its concept, read flat: its
    options are the groups' fields in the order data, model, objective, optimisation, run,
    tables (the order of --help and config.json), and a group's value is the config's."""
    import dataclasses

    from flowforge.train.config import (
        DataOptions,
        ModelOptions,
        ObjectiveOptions,
        OptimOptions,
        RunOptions,
        TableOptions,
    )

    groups = [DataOptions, ModelOptions, ObjectiveOptions, OptimOptions, RunOptions, TableOptions]
    names = [[f.name for f in dataclasses.fields(g)] for g in groups]
    assert TrainConfig.option_names() == [n for group in names for n in group]
    firsts = ["data", "flow", "objective", "steps", "seed", "size_from_data"]
    assert [group[0] for group in names] == firsts
    cfg = TrainConfig.from_layers({"lr": 3e-3, "flow": "maf", "whiten": True, "seed": 4})
    assert (cfg.lr, cfg.flow, cfg.whiten, cfg.seed) == (3e-3, "maf", True, 4)
    for g in groups:
        assert isinstance(cfg, g)
        assert g() == g(**{n: getattr(TrainConfig(), n) for n in g.__dataclass_fields__})
    assert list(cfg.to_dict()) == [*TrainConfig.option_names(), "given"]
