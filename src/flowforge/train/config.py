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

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from flowforge.runs.errors import ConfigError
from flowforge.train.coerce import coerce, plain_type
from flowforge.train.data_options import DataOptions
from flowforge.train.model_options import ModelOptions
from flowforge.train.objective_options import ObjectiveOptions
from flowforge.train.optim_options import OptimOptions
from flowforge.train.run_options import RunOptions
from flowforge.train.table_options import TableOptions

__all__ = [
    "AUTO",
    "RESUME_KEYS",
    "ConfigError",
    "DataOptions",
    "ModelOptions",
    "ObjectiveOptions",
    "OptimOptions",
    "RunOptions",
    "TableOptions",
    "TrainConfig",
    "field_type",
]

#: The ``--flow`` value that asks for the search over presets (:mod:`flowforge.train.auto`).
AUTO = "auto"

_FLAG_HELPERS = ("add_arguments", "flags_to_dict", "parse_flag_value", "read_toml")


def __getattr__(name: str) -> Any:
    """The flag and TOML helpers, which live in :mod:`flowforge.train.flags` (imported on first
    use, so that the dataclass needs neither argparse nor a TOML parser)."""
    if name in _FLAG_HELPERS:
        from flowforge.train import flags

        return getattr(flags, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# A dataclass's fields come from its bases in reverse order: the last base's first. The
# options therefore read data, model, objective, optimisation, run, tables: the order of the
# flags in --help and of the keys in config.json.
@dataclass
class TrainConfig(
    TableOptions, RunOptions, OptimOptions, ObjectiveOptions, ModelOptions, DataOptions
):
    """Every option of a training run, with its default, composed of the small option groups.

    Each group is a dataclass in the module of its concept, and a function that uses one group
    takes that one: :class:`~flowforge.train.data_options.DataOptions`,
    :class:`~flowforge.train.model_options.ModelOptions`,
    :class:`~flowforge.train.objective_options.ObjectiveOptions`,
    :class:`~flowforge.train.optim_options.OptimOptions`,
    :class:`~flowforge.train.run_options.RunOptions` and
    :class:`~flowforge.train.table_options.TableOptions`. A config reads flat (``cfg.lr``,
    ``cfg.flow``), and flags, TOML keys and ``config.json`` keys are the field names.

    Flags are the field names with ``-`` for ``_`` (``--batch-size``); a TOML config uses the
    field names as top-level keys. ``steps`` and ``epochs`` exclude each other: the later layer
    (flags over TOML over defaults) wins.
    """

    given: tuple[str, ...] = field(
        default=(),
        metadata={"help": "the options set by a layer (TOML, flags), in order", "internal": True},
    )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def option_names(cls) -> list[str]:
        """The valid option names, in declaration order (not the bookkeeping of ``given``)."""
        return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]

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
        if "given" in layer:  # bookkeeping of the layers, not an option a layer may set
            raise ConfigError(
                f"{source}unknown key 'given'; valid keys: {', '.join(self.option_names())}"
            )
        values = self.to_dict()
        if "steps" in layer:
            values["epochs"] = None
        values.update(layer)
        values["given"] = [*self.given, *(k for k in layer if k not in self.given)]
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
        d["given"] = list(self.given)
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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{source}{f.name} must be a finite number, got {value}")
        positive = ["n_val", "n_test", "transforms", "steps", "batch_size", "eval_every"]
        positive += ["eval_batch_size", "lr", "time_budget"]
        for key in positive:
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ConfigError(f"{source}{key} must be positive, got {getattr(self, key)}")
        non_negative = ["weight_decay", "min_lr", "clip_grad", "patience", "lr_patience"]
        non_negative += ["max_nan_recoveries", "threads", "warmup_steps"]
        non_negative += ["kinetic", "jacobian", "fm_sigma", "noise"]
        for key in non_negative:
            if getattr(self, key) < 0:
                raise ConfigError(f"{source}{key} must be >= 0, got {getattr(self, key)}")
        if not -(2**63) <= self.seed < 2**63:  # torch and numpy take 64-bit seeds
            raise ConfigError(f"{source}seed must be a 64-bit integer, got {self.seed}")
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
        if self.min_lr > self.lr:
            raise ConfigError(
                f"{source}min_lr ({self.min_lr:g}) must not be above lr ({self.lr:g}): it is "
                "the learning rate the cosine schedule ends at"
            )


RESUME_KEYS = ("steps", "epochs", "device", "quiet", "plots", "data_dir", "patience", "threads")
"""Options that ``--resume`` may change; every other one comes from the run's ``config.json``."""


def field_type(key: str) -> tuple[type, bool]:
    """The plain type of field ``key`` (``int`` for ``int | None``) and whether None is allowed."""
    return plain_type(TrainConfig, key)


def _coerce(key: str, value: Any, source: str) -> Any:
    """Check one option's value against its field's type and return it in canonical form."""
    if key == "given":  # bookkeeping: the names of the options that layers set
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{source}given must be a list of option names, got {value!r}")
        return tuple(value)
    return coerce(TrainConfig, key, value, source, TrainConfig.option_names())
