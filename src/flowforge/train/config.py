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
from flowforge.train.data_options import DataOptions, _doc

__all__ = [
    "AUTO",
    "RESUME_KEYS",
    "ConfigError",
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


@dataclass
class TrainConfig(DataOptions):
    """Every option of a training run, with its default.

    Flags are the field names with ``-`` for ``_`` (``--batch-size``); a TOML config uses the
    field names as top-level keys. ``steps`` and ``epochs`` exclude each other: the later layer
    (flags over TOML over defaults) wins. The data options come first, from
    :class:`~flowforge.train.data_options.DataOptions`.
    """

    # flow
    flow: str = field(
        default="nsf",
        metadata=_doc(
            "flow preset, or auto: try presets and sizes within --time-budget and keep the "
            "one of the best validation NLL (the trials and their table under RUN/trials, "
            "RUN/auto.json)"
        ),
    )
    time_budget: float = field(
        default=300.0, metadata=_doc("--flow auto: seconds the search may take")
    )
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
            '\'{"levels": 2, "steps": 8}\' for glow or '
            '\'{"dropout": 0.1, "residual_blocks": 2}\' for the vector presets'
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
    noise: float = field(
        default=0.0,
        metadata=_doc(
            "images: standard deviation of Gaussian noise added to each training batch's "
            "dequantized values u in [0, 1) (TarFlow's noise augmentation; the run then maps u "
            "to 2u - 1 instead of the logit; validation and test stay clean); 0: none"
        ),
    )
    dequantizer_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "variational dequantization: the noise flow's options, e.g. "
            '\'{"noise": "conv", "transforms": 4, "hidden": 16}\''
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
    precision: str = field(
        default="float32",
        metadata=_doc(
            "training arithmetic of the networks: float32, or bf16 autocast (log-dets, bases "
            "and log_prob stay float32; validation and test in float32)",
            choices=("float32", "bf16"),
        ),
    )
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
    size_from_data: bool = field(
        default=True,
        metadata=_doc(
            "tables with a training set: choose the options you do not give (batch size, "
            "validation frequency, early stopping, width, weight decay) from the rows and "
            "columns, print the choice and save it in the run (--no-size-from-data: the fixed "
            "defaults shown here)"
        ),
    )
    whiten: bool = field(
        default=False,
        metadata=_doc(
            "standardised tables: whiten the standardised rows with the Cholesky factor of "
            "their shrunk correlation, so that the untrained flow is the training rows' "
            "full-covariance Gaussian (chosen on by the sized defaults of a table; "
            "--no-whiten keeps the per-column standardisation only)"
        ),
    )
    defensive: bool = field(
        default=True,
        metadata=_doc(
            "standardised tables: the model is the mixture (1 - w) flow + w Gaussian start, w "
            "chosen on the M validation rows (at least max(0.01, 1/(M+2))), so no row scores more than "
            "log(1/w) nats below the Gaussian start (--no-defensive: the flow alone)"
        ),
    )
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
