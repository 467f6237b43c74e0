"""Options that do nothing for the chosen data, objective or flow: refused in one line.

A training option that the run cannot honour (a schedule's option under another schedule, an
image option on a table, a flow-matching run's option of the ODE solves it never makes in
training) used to be accepted without a word. :func:`check_applicable` names the first one the
user gave (a flag or a TOML key: ``cfg.given``, less the preset's own training defaults) and
why it does nothing. The value does not matter: ``--min-lr 0`` under ``--schedule plateau``
is refused like ``--min-lr 1e-5``, since it says something the run will not do.

Checked elsewhere: ``--ot`` / ``--fm-sigma`` / ``--kinetic`` / ``--jacobian`` and the
dequantizer's options (:func:`flowforge.train.model.objective_for`,
:func:`~flowforge.train.model.dequantizer_spec_for`), a preset's options it does not take and
a CNF's solver options its method ignores (:func:`~flowforge.train.model.spec_for`),
``--noise`` on data other than uniformly dequantized images, ``--columns`` / ``--header`` /
``--n-val`` on data that have none (:func:`flowforge.data.load_dataset`), and
``--time-budget`` without ``--flow auto`` (``flowforge train``).
"""

from __future__ import annotations

from flowforge.data import Dataset
from flowforge.data.registry import reads_data_dir
from flowforge.runs.errors import ConfigError
from flowforge.runs.recipe import idle_option
from flowforge.train.config import TrainConfig
from flowforge.train.model import QUANTIZED_KINDS, preset_defaults, takes_vectors

__all__ = ["CNF_TRAINING_ONLY", "check_applicable", "check_warmup", "user_given"]

#: The FFJORD options that act only on the ODE solves of likelihood training: flow matching
#: regresses the velocity on straight paths and solves nothing in training (its evaluation
#: takes the exact trace and the solver's ``method`` / ``rtol`` / ``atol`` / ``solver_steps`` /
#: ``max_nfe``, which stay meaningful).
CNF_TRAINING_ONLY = {
    "adjoint": "the adjoint backpropagates through ODE solves",
    "trace": "the trace estimator acts in the ODE solves of likelihood training",
    "learn_time": "flow matching trains the field, not the integration time",
}


def user_given(cfg: TrainConfig) -> list[str]:
    """The options a user set (flags, TOML keys): ``cfg.given`` less the training defaults of
    the preset and objective that hold their default value (``flowforge train`` puts those
    under the user's layers)."""
    defaults = {} if cfg.flow == "auto" else preset_defaults(cfg.flow, cfg.objective, cfg.data)
    return [k for k in cfg.given if not (k in defaults and getattr(cfg, k) == defaults[k])]


def check_applicable(cfg: TrainConfig, ds: Dataset) -> None:
    """Refuse the first option the user gave that does nothing for this run.

    Args:
        cfg: the run's options (before the sized defaults of a table).
        ds: its dataset.

    Raises:
        ConfigError: one line naming the option and why it does nothing.

    Example:
        >>> from flowforge.data import load_dataset
        >>> cfg = TrainConfig.from_layers({"schedule": "plateau", "min_lr": 1e-5})
        >>> check_applicable(cfg, load_dataset("moons", n_val=10, n_test=10))
        Traceback (most recent call last):
        ...
        flowforge.runs.errors.ConfigError: --min-lr is the learning rate the cosine schedule ends at; it does nothing with --schedule plateau
    """
    given = user_given(cfg)
    why = _why_unused(cfg, ds, given)
    if why is not None:
        raise ConfigError(why)


def _flag(key: str, cfg: TrainConfig) -> str:
    """The flag as given: ``--no-defensive`` for a switch set off, a choice with its value."""
    name, value = key.replace("_", "-"), getattr(cfg, key)
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}" if isinstance(value, str) else f"--{name}"


def _why_unused(cfg: TrainConfig, ds: Dataset, given: list[str]) -> str | None:
    """The message for the first given option that does nothing (``None``: none)."""
    quantized = ds.kind in QUANTIZED_KINDS
    table = ds.kind == "tabular" and ds.standardizer is not None and ds.train is not None
    vector = takes_vectors(cfg.flow) if cfg.flow != "auto" else True
    rules: list[tuple[str, bool, str]] = [
        ("min_lr", cfg.schedule == "cosine", "is the learning rate the cosine schedule ends at"),
        ("lr_factor", cfg.schedule == "plateau", "is the plateau schedule's factor"),
        ("lr_patience", cfg.schedule == "plateau", "is the plateau schedule's patience"),
        ("nan_lr_factor", cfg.on_nan == "recover", "acts when --on-nan recover recovers"),
        ("max_nan_recoveries", cfg.on_nan == "recover", "acts when --on-nan recover recovers"),
        ("data_dir", reads_data_dir(cfg.data), "is where the on-disk sets are read from"),
        (
            "logit_alpha",
            ds.kind == "image" and cfg.noise == 0,
            "is the logit pre-transform's constant",
        ),
        ("dequantization", quantized, "dequantizes integer levels (images, audio)"),
        (
            "condition",
            ds.kind == "audio" or cfg.condition == "class",
            "conditions an audio flow on mel frames",
        ),
        ("whiten", table and vector, "whitens a standardised table for a vector flow"),
        ("defensive", table and vector, "mixes a standardised table's flow with its Gaussian"),
        ("size_from_data", ds.kind == "tabular" and ds.train is not None, "sizes a table's run"),
    ]
    for key, applies, what in rules:
        if key in given and not applies:
            return f"{_flag(key, cfg)} {what}; it does nothing {_context(key, cfg, ds)}"
    options = dict(cfg.flow_options)
    options["context"] = ds.context_dim  # comes from the data (mel frames, classes)
    if "hidden" in given:
        options["hidden"] = cfg.hidden
    if cfg.flow == "ffjord" and cfg.objective == "flow-matching":
        options.setdefault("dynamics", "mlp")  # the command line's flow-matching default
    idle = None if cfg.flow == "auto" else idle_option(cfg.flow, options)
    if idle is not None:
        return idle
    if cfg.objective == "flow-matching":
        for key, what in CNF_TRAINING_ONLY.items():
            if key in cfg.flow_options:
                return (
                    f"flow option {key!r} does nothing with --objective flow-matching: {what}, "
                    "and flow matching solves none in training"
                )
    return None


def _context(key: str, cfg: TrainConfig, ds: Dataset) -> str:
    """What makes ``key`` do nothing, for the message."""
    if key in ("min_lr", "lr_factor", "lr_patience"):
        return f"with --schedule {cfg.schedule}"
    if key in ("nan_lr_factor", "max_nan_recoveries"):
        return f"with --on-nan {cfg.on_nan}"
    if key == "data_dir":
        return f"for {cfg.data!r}, which is not read from it"
    if key == "logit_alpha" and ds.kind == "audio":
        return f"for audio data ({ds.name!r}), whose flow takes the waveform 2u - 1"
    if key == "logit_alpha" and ds.kind in QUANTIZED_KINDS:
        return f"with --noise {cfg.noise:g}, which maps the values to 2u - 1 instead"
    if key in ("whiten", "defensive") and ds.kind == "tabular" and ds.standardizer is not None:
        return f"for the image flow {cfg.flow!r}"
    return f"for {ds.kind} data ({ds.name!r})"


def check_warmup(cfg: TrainConfig, total: int) -> str | None:
    """A warmup at least as long as the run: the learning rate never reaches ``--lr`` and the
    schedule never starts. Refused when the user gave ``--warmup-steps``; a preset's default
    warmup (200 steps for the image presets) on a short run gets the returned warning line.

    Raises:
        ConfigError: a given ``warmup_steps`` at or above ``total``.
    """
    if cfg.warmup_steps == 0 or cfg.warmup_steps < total:
        return None
    what = (
        f"--warmup-steps {cfg.warmup_steps} is not below the run's {total} steps: the learning "
        f"rate never reaches --lr {cfg.lr:g}"
    )
    if "warmup_steps" in user_given(cfg):
        raise ConfigError(what)
    return f"{what} (the preset's default warmup; give fewer --warmup-steps or more steps)"
