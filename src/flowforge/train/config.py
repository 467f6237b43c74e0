"""The training configuration: one dataclass that defines every option of ``flowforge train``.

:class:`TrainConfig` is the single source of truth: the command-line flags, the keys of a
``--config FILE.toml`` and the ``config`` block of a run's ``config.json`` are all derived from
its fields. Unknown keys and values of the wrong type raise :class:`ConfigError` with a message
that names the key and, where it helps, the valid choices.

Example:
    >>> cfg = TrainConfig.from_layers({"steps": 200}, {"lr": 3e-3})
    >>> cfg.steps, cfg.lr, cfg.flow
    (200, 0.003, 'nsf')
    >>> try:
    ...     TrainConfig.from_layers({"batch_sise": 64})
    ... except ConfigError as e:
    ...     print(str(e)[:52])
    unknown key 'batch_sise'; valid keys: data, data_dir
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

from flowforge.runs.errors import ConfigError

__all__ = [
    "RESUME_KEYS",
    "ConfigError",
    "TrainConfig",
    "add_arguments",
    "flags_to_dict",
    "parse_flag_value",
    "read_toml",
]


def _doc(help: str, choices: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Field metadata: the flag's help text and, for string options, the valid choices."""
    return {"help": help} if choices is None else {"help": help, "choices": choices}


@dataclass
class TrainConfig:
    """Every option of a training run, with its default.

    Flags are the field names with ``-`` for ``_`` (``--batch-size``); a TOML config uses the
    field names as top-level keys. ``steps`` and ``epochs`` exclude each other: the later layer
    (flags over TOML over defaults) wins.
    """

    # data
    data: str = field(
        default="8gaussians",
        metadata=_doc("dataset name (see `flowforge datasets`) or a .csv/.npy file"),
    )
    data_dir: str | None = field(
        default=None, metadata=_doc("folder with downloaded datasets (default $FLOWFORGE_DATA)")
    )
    columns: str | None = field(
        default=None,
        metadata=_doc("user files: columns to use, names or 0-based indices, e.g. a,b,7"),
    )
    header: bool | None = field(
        default=None,
        metadata=_doc(
            "user CSV files: the first row is column names (--header) or data (--no-header); "
            "default: a header when any cell is not a number or the row is the column numbers "
            "0..D-1 or 1..D (D >= 3); the run records which was used"
        ),
    )
    n_val: float | None = field(
        default=None,
        metadata=_doc(
            "validation rows: user files and scikit-learn tables: a count or a fraction below 1 "
            "of the rows (default 0.1); 2-D toy data: fresh samples (default 10000); refused "
            "for the on-disk benchmark and image sets, which keep their published splits"
        ),
    )
    n_test: float | None = field(
        default=None, metadata=_doc("test rows: like --n-val (default 0.1, toy data 10000)")
    )
    logit_alpha: float = field(
        default=1e-6, metadata=_doc("images: logit pre-transform constant a in s = a + (1-2a)u")
    )
    # flow
    flow: str = field(default="nsf", metadata=_doc("flow preset"))
    transforms: int | None = field(
        default=None,
        metadata=_doc("vector presets: number of transforms (default: the preset's CLI default)"),
    )
    hidden: tuple[int, ...] | None = field(
        default=None,
        metadata=_doc(
            "hidden layer widths, e.g. 64,64 (image presets: one number of channels; default: "
            "the preset's CLI default)"
        ),
    )
    bins: int | None = field(
        default=None, metadata=_doc("spline bins (NSF only; default the preset's)")
    )
    flow_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "other preset keyword arguments, as a JSON/TOML table, e.g. "
            '\'{"levels": 2, "steps": 8}\' for glow'
        ),
    )
    # objective
    objective: str = field(
        default="likelihood",
        metadata=_doc(
            "what training minimises: maximum likelihood, or flow matching (ffjord with one "
            "block: the CNF's velocity regressed on straight paths, no ODE solve in training)",
            ("likelihood", "flow-matching"),
        ),
    )
    kinetic: float = field(
        default=0.0,
        metadata=_doc("ffjord, likelihood: RNODE weight of the kinetic energy (0: off)"),
    )
    jacobian: float = field(
        default=0.0,
        metadata=_doc("ffjord, likelihood: RNODE weight of the Jacobian Frobenius norm (0: off)"),
    )
    ot: bool = field(
        default=False,
        metadata=_doc("flow matching: pair data and base samples by mini-batch optimal transport"),
    )
    fm_sigma: float = field(
        default=0.0, metadata=_doc("flow matching: noise around the straight paths (0: none)")
    )
    dequantization: str = field(
        default="uniform",
        metadata=_doc(
            "images: uniform noise, or a learned noise flow q(u | x) trained jointly "
            "(variational; validated by the variational bound)",
            ("uniform", "variational"),
        ),
    )
    dequantizer_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "variational dequantization: the noise flow's options, e.g. "
            '\'{"transforms": 2, "hidden": [64, 64]}\''
        ),
    )
    # optimisation
    steps: int = field(default=1500, metadata=_doc("gradient steps (excludes --epochs)"))
    epochs: float | None = field(
        default=None, metadata=_doc("passes over the training set (excludes --steps)")
    )
    batch_size: int = field(default=256, metadata=_doc("batch size"))
    lr: float = field(default=2e-3, metadata=_doc("peak learning rate"))
    optimizer: str = field(default="adam", metadata=_doc("optimizer", choices=("adam", "adamw")))
    weight_decay: float = field(default=0.0, metadata=_doc("weight decay (decoupled for adamw)"))
    schedule: str = field(
        default="cosine", metadata=_doc("learning-rate schedule", ("cosine", "plateau", "constant"))
    )
    min_lr: float = field(default=0.0, metadata=_doc("cosine: final learning rate"))
    lr_factor: float = field(
        default=0.5, metadata=_doc("plateau: factor applied after lr_patience bad evaluations")
    )
    lr_patience: int = field(
        default=3, metadata=_doc("plateau: evaluations without improvement before lowering")
    )
    warmup_steps: int = field(
        default=0,
        metadata=_doc("linear learning-rate warmup over the first N steps, before the schedule"),
    )
    ema_decay: float = field(
        default=0.0,
        metadata=_doc(
            "exponential moving average of the weights (e.g. 0.999; 0 disables): the average is "
            "what is validated, kept as best and saved"
        ),
    )
    clip_grad: float = field(
        default=5.0, metadata=_doc("gradient-norm clipping threshold (0 disables)")
    )
    eval_every: int = field(default=100, metadata=_doc("validate and checkpoint every N steps"))
    eval_batch_size: int = field(default=4096, metadata=_doc("batch size for validation and test"))
    patience: int = field(
        default=0, metadata=_doc("early stopping: evaluations without improvement (0 disables)")
    )
    restore_best: bool = field(
        default=True, metadata=_doc("end with the weights of the best validation NLL")
    )
    on_nan: str = field(
        default="recover", metadata=_doc("on a non-finite loss", choices=("recover", "stop"))
    )
    nan_lr_factor: float = field(
        default=0.5, metadata=_doc("recover: learning-rate factor after a non-finite loss")
    )
    max_nan_recoveries: int = field(
        default=5, metadata=_doc("recover: stop after this many in a row")
    )
    # run
    seed: int = field(
        default=0, metadata=_doc("seed of everything random (data, initialisation, noise)")
    )
    device: str = field(default="auto", metadata=_doc("device", choices=("cpu", "cuda", "auto")))
    threads: int = field(
        default=0,
        metadata=_doc(
            "CPU threads (0: automatic, 1 for small networks where more threads only add overhead)"
        ),
    )
    out: str | None = field(
        default=None, metadata=_doc("run directory (default runs/<data>-<flow>-<timestamp>)")
    )
    plots: bool = field(default=True, metadata=_doc("write PNG plots at the end"))
    quiet: bool = field(default=False, metadata=_doc("no progress bar"))

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        """The valid option names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_layers(cls, *layers: dict[str, Any], source: str = "") -> TrainConfig:
        """Build a config from dictionaries applied in order over the defaults.

        Args:
            *layers: option dictionaries (for example a TOML file, then the flags); a later layer
                overrides an earlier one. Setting ``steps`` in a layer clears ``epochs`` from the
                earlier ones and vice versa.
            source: a prefix for error messages (``"config.toml: "``).

        Raises:
            ConfigError: on an unknown key, a value of the wrong type or an invalid value.
        """
        cfg = cls()
        for layer in layers:
            cfg = cfg.updated(layer, source)
        return cfg

    def updated(self, layer: dict[str, Any], source: str = "") -> TrainConfig:
        """A validated copy with the options of ``layer`` applied (``steps`` clears ``epochs``).

        Raises:
            ConfigError: as :meth:`from_layers`.
        """
        if "steps" in layer and layer.get("epochs") is not None:
            raise ConfigError(f"{source}give steps or epochs, not both")
        values = self.to_dict()
        if "steps" in layer:
            values["epochs"] = None
        values.update(layer)
        return TrainConfig.from_dict(values, source)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> TrainConfig:
        """Rebuild a config saved with :meth:`to_dict` (for example from ``config.json``).

        A saved config holds both ``steps`` and ``epochs``; ``epochs`` decides when it is set.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"{source}expected a table of options, got {type(d).__name__}")
        cfg = cls(**{key: _coerce(key, value, source) for key, value in d.items()})
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dictionary of every option (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with some options changed (values are type-checked like TOML keys)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def column_list(self) -> list[str] | None:
        """``columns`` split at the commas (``None``: every column)."""
        if self.columns is None:
            return None
        return [c.strip() for c in self.columns.split(",") if c.strip()]

    # -- checks -------------------------------------------------------------------------------

    def validate(self, source: str = "") -> None:
        """Check ranges and cross-field rules; raise :class:`ConfigError` on the first problem."""
        positive = ["n_val", "n_test", "transforms", "steps", "batch_size", "eval_every"]
        positive += ["eval_batch_size", "lr"]
        for key in positive:
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{source}{key} must be positive, got {getattr(self, key)}")
        non_negative = ["weight_decay", "min_lr", "clip_grad", "patience", "lr_patience"]
        non_negative += ["max_nan_recoveries", "threads", "warmup_steps"]
        non_negative += ["kinetic", "jacobian", "fm_sigma"]
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}{key} must be >= 0, got {getattr(self, key)}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"{source}epochs must be positive, got {self.epochs}")
        if self.hidden is not None and not (self.hidden and all(h > 0 for h in self.hidden)):
            raise ConfigError(f"{source}hidden widths must be positive, got {list(self.hidden)}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"{source}ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.bins is not None and self.bins < 1:
            raise ConfigError(f"{source}bins must be positive, got {self.bins}")
        for key in ("lr_factor", "nan_lr_factor"):
            if not 0 < getattr(self, key) < 1:
                raise ConfigError(f"{source}{key} must be in (0, 1), got {getattr(self, key)}")
        if not 0 < self.logit_alpha < 0.5:
            raise ConfigError(f"{source}logit_alpha must be in (0, 0.5), got {self.logit_alpha}")
        if not self.data:
            raise ConfigError(f"{source}data must not be empty")


RESUME_KEYS = ("steps", "epochs", "device", "quiet", "plots", "data_dir", "patience", "threads")
"""Options that ``--resume`` may change; every other one comes from the run's ``config.json``."""


def _base_type(key: str) -> tuple[type, bool]:
    """The plain type of field ``key`` (``int`` for ``int | None``) and whether None is allowed."""
    hint = typing.get_type_hints(TrainConfig)[key]
    optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint, optional


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check one option's value against its field's type and return it in canonical form."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    if key not in fields:
        raise ConfigError(f"{source}unknown key {key!r}; valid keys: {', '.join(fields)}")
    base, optional = _base_type(key)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}{key} must not be empty")
    choices = fields[key].metadata.get("choices")
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str)
    elif base is tuple:
        ok = isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        value = tuple(value) if ok else value
    else:  # dict
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if not ok:
        want = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
        want |= {tuple: "a list of integers", dict: "a table"}
        raise ConfigError(f"{source}{key} must be {want[base]}, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{source}{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a flat option dictionary (keys are checked later).

    Raises:
        ConfigError: if the file is missing or is not valid TOML.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None


def parse_flag_value(key: str, text: str) -> Any:
    """Convert a command-line string to the Python value that field ``key`` expects.

    Example:
        >>> parse_flag_value("hidden", "64,64"), parse_flag_value("bins", "none")
        ((64, 64), None)
    """
    base, optional = _base_type(key)
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is tuple:
            return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        if base is dict:
            value = json.loads(text)
            if not isinstance(value, dict):
                raise ValueError
            return value
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: "integers separated by commas"}
        kind[dict] = "a JSON object"
        raise ConfigError(f"--{key.replace('_', '-')} expects {kind[base]}, got {text!r}") from None
    return text


def add_arguments(
    parser: argparse.ArgumentParser, choices: dict[str, Sequence[str]] | None = None
) -> None:
    """Add one flag per :class:`TrainConfig` field to ``parser``.

    Args:
        parser: the parser of ``flowforge train``.
        choices: valid values of string options known only at run time (``{"flow": [...]}``).

    Flags default to ``argparse.SUPPRESS``, so the parsed namespace holds only the options the
    user gave; :func:`flags_to_dict` turns it into a layer for :meth:`TrainConfig.from_layers`.
    """
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        base, _ = _base_type(f.name)
        default = getattr(TrainConfig(), f.name)
        text = f.metadata["help"]
        if base is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
            continue
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        valid = (choices or {}).get(f.name, f.metadata.get("choices"))
        parser.add_argument(
            flag,
            dest=f.name,
            metavar=f.name.upper() if valid is None else None,
            choices=valid,
            default=argparse.SUPPRESS,
            help=text if default is None else f"{text} (default: {shown})",
        )


def flags_to_dict(namespace: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` options present in a parsed namespace, converted to values."""
    given = vars(namespace)
    out: dict[str, Any] = {}
    for key in TrainConfig.option_names():
        if key in given:
            value = given[key]
            out[key] = parse_flag_value(key, value) if isinstance(value, str) else value
    return out
