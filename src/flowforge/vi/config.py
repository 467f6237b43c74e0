"""The options of ``flowforge vi`` (:class:`VIConfig`) and the targets they name.

This module is not imported by ``import flowforge`` (it reads TOML through the tool's reader).
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from flowforge.core.memory import too_big
from flowforge.flows import PRESETS
from flowforge.runs import ConfigError, check_flow_name
from flowforge.vi.targets import TARGETS, Target

__all__ = [
    "DEVICES",
    "OBJECTIVES",
    "RESUME_KEYS",
    "VI_TASK",
    "VIConfig",
    "build_target",
    "default_lr",
    "read_vi_toml",
]

VI_TASK = "vi"
OBJECTIVES = ("elbo", "stl", "iwae")
DEVICES = ("cpu", "cuda", "auto")
#: The options ``flowforge vi --resume RUN`` may change (the rest come from the run).
RESUME_KEYS = ("device", "quiet", "plots", "checkpoint_every")
#: Presets whose layers have a handful of parameters each: Adam at 1e-2 suits them.
FEW_PARAMETER_FLOWS = ("planar", "radial", "sylvester")


def default_lr(flow: str) -> float:
    """Adam's learning rate when none is given: 1e-2 for planar, radial and Sylvester flows
    (a few parameters per layer), 1e-3 for flows whose layers are networks (IAF, MAF, NSF, ...).

    At 1e-2, Adam's first steps move every weight of a MADE by about the learning rate, all
    in the direction that widens ``q`` (under annealing the entropy term dominates), so an
    IAF's scale grows about 25-fold in each coordinate after two steps and the funnel's
    ``exp(-v) x^2`` overflows (banana: NaN), a non-finite loss at step 1.

    Example:
        >>> default_lr("planar"), default_lr("iaf")
        (0.01, 0.001)
    """
    return 1e-2 if flow in FEW_PARAMETER_FLOWS else 1e-3


def default_transforms(flow: str) -> int:
    """The number of transforms when none is given: 32, except for a continuous flow, whose
    every transform is an ODE solve: its preset's own default (FFJORD 1; 32 stacked CNFs
    took 277 s for 5 steps).

    Example:
        >>> default_transforms("planar"), default_transforms("iaf"), default_transforms("ffjord")
        (32, 32, 1)
    """
    check_flow_name(flow)
    params = inspect.signature(PRESETS[flow]).parameters
    if "method" in params:  # an ODE solver's option: a CNF
        return int(params["transforms"].default)
    return 32


@dataclass(frozen=True)
class VIConfig:
    """The options of ``flowforge vi`` (the keys of its ``--config FILE.toml``).

    Attributes:
        target: a key of :data:`flowforge.vi.targets.TARGETS`.
        target_options: keyword arguments of the target's constructor (``{"features": 5}``).
        flow: a key of :data:`flowforge.flows.PRESETS` (a vector flow that samples).
        transforms: the preset's number of transforms (``None``: :func:`default_transforms`
            of the flow).
        hidden: the preset's hidden sizes (``None``: its default).
        flow_options: further keyword arguments of the preset.
        steps: optimisation steps.
        samples: draws per step (IWAE: estimates per step, ``iwae_k`` draws each).
        lr: Adam's learning rate, cosine decay to 0 (``None``: :func:`default_lr` of the flow).
        objective: ``"elbo"``, ``"stl"`` (path derivative) or ``"iwae"``.
        iwae_k: ``K`` of the IWAE objective.
        anneal: steps of annealing ``beta log p~`` from 0.01 to 1 (``None``: a quarter of
            ``steps``; 0: none).
        eval_samples: draws from ``q`` for the diagnostics.
        seed: seeds the initialisation, the fit and the diagnostics.
        device: where to fit, ``"cpu"``, ``"cuda"`` or ``"auto"`` (the diagnostics, plots
            and weights are computed and written on the CPU).
        checkpoint_every: steps between checkpoints (the whole state: flow, optimizer,
            step, random generator), which ``flowforge vi --resume RUN`` continues from.
        out: the run directory (``None``: ``runs/vi-TARGET-FLOW-STAMP``).
        overwrite: replace an existing, non-empty ``out``.
        plots: write ``density.png`` and ``elbo.png``.
        quiet: no progress bar.
    """

    target: str = "u1"
    target_options: dict[str, Any] = field(default_factory=dict)
    flow: str = "planar"
    transforms: int | None = None
    hidden: tuple[int, ...] | None = None
    flow_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 2000
    samples: int = 256
    lr: float | None = None
    objective: str = "elbo"
    iwae_k: int = 8
    anneal: int | None = None
    eval_samples: int = 4096
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 100
    out: str | None = None
    overwrite: bool = False
    plots: bool = True
    quiet: bool = False

    @classmethod
    def from_dict(cls, options: dict[str, Any], source: str = "") -> VIConfig:
        """Build from a dictionary (a TOML file, flags), checking keys and values.

        Raises:
            ConfigError: on an unknown key or a bad value, naming it.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise ConfigError(
                f"{source}unknown option {unknown[0]!r}; valid options: {', '.join(names)}"
            )
        d = dict(options)
        if isinstance(d.get("hidden"), list):
            d["hidden"] = tuple(d["hidden"])
        cfg = cls(**d)
        cfg.check(source)
        return cfg

    def check(self, source: str = "") -> None:
        """Raise :class:`ConfigError` naming the first bad value."""

        def bad(key: str, what: str, value: Any) -> ConfigError:
            return ConfigError(f"{source}{key} must be {what}, got {value!r}")

        for key in ("transforms", "steps", "samples", "iwae_k", "eval_samples", "checkpoint_every"):
            value = getattr(self, key)
            if key == "transforms" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, "a positive integer", value)
            if value >= 2**63:  # --steps 10**30 ran (forever): torch and JSON take 64 bits
                raise bad(key, "a 64-bit integer (at most 2**63 - 1)", value)
        if self.hidden is not None and any(isinstance(h, int) and h >= 2**63 for h in self.hidden):
            raise bad("hidden", "64-bit integer widths (at most 2**63 - 1)", list(self.hidden))
        k = self.iwae_k if self.objective == "iwae" else 1
        for key, draws in (("samples", self.samples * k), ("eval_samples", self.eval_samples)):
            why = too_big(16.0 * draws, f"{draws} draws from q")  # two float32 columns, a floor
            if why is not None:  # 10**12 was an allocation traceback
                given = (
                    f"samples {self.samples} x iwae_k {k}"
                    if key == "samples" and k > 1
                    else (f"{key} {getattr(self, key)}")
                )
                raise ConfigError(f"{source}{given}: {why}")
        if self.eval_samples < 25:
            raise bad("eval_samples", "at least 25 (Pareto-k needs a tail)", self.eval_samples)
        if self.lr is not None and (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not (math.isfinite(self.lr) and self.lr > 0)
        ):
            raise bad("lr", "a positive number", self.lr)
        if self.device not in DEVICES:
            raise bad("device", f"one of {', '.join(DEVICES)}", self.device)
        if self.anneal is not None and (
            isinstance(self.anneal, bool) or not isinstance(self.anneal, int) or self.anneal < 0
        ):
            raise bad("anneal", "a non-negative integer", self.anneal)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise bad("seed", "an integer", self.seed)
        if not -(2**63) <= self.seed < 2**63:  # torch takes 64-bit seeds
            raise bad("seed", "a 64-bit integer", self.seed)
        if self.anneal is not None and self.anneal > self.steps:
            raise ConfigError(
                f"{source}anneal ({self.anneal} steps) must not exceed steps ({self.steps}): "
                "the annealing would be cut short at the end of the run"
            )
        if self.objective not in OBJECTIVES:
            raise bad("objective", f"one of {', '.join(OBJECTIVES)}", self.objective)
        if self.target not in TARGETS:
            raise ConfigError(
                f"{source}unknown target {self.target!r}; valid targets: {', '.join(TARGETS)}"
            )
        check_flow_name(self.flow)
        if self.hidden is not None and not (
            isinstance(self.hidden, tuple)
            and self.hidden
            and all(isinstance(h, int) and h > 0 for h in self.hidden)
        ):
            raise bad("hidden", "positive integers", self.hidden)
        for key in ("target_options", "flow_options"):
            if not isinstance(getattr(self, key), dict):
                raise bad(key, "a table (JSON object)", getattr(self, key))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary."""
        d = asdict(self)
        d["hidden"] = None if self.hidden is None else list(self.hidden)
        return d

    @property
    def learning_rate(self) -> float:
        """The learning rate actually used (``lr``, or :func:`default_lr` of the flow)."""
        return float(self.lr) if self.lr is not None else default_lr(self.flow)

    @property
    def anneal_steps(self) -> int:
        """The annealing steps actually used."""
        return self.steps // 4 if self.anneal is None else min(self.anneal, self.steps)


def build_target(name: str, options: dict[str, Any] | None = None) -> Target:
    """The target ``TARGETS[name](**options)``.

    Raises:
        ConfigError: unknown name or options the target does not take.
    """
    if name not in TARGETS:
        raise ConfigError(f"unknown target {name!r}; valid targets: {', '.join(TARGETS)}")
    try:
        return TARGETS[name](**(options or {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build target {name!r} with {options or {}}: {e}") from None


def read_vi_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The options of a ``--config FILE.toml`` (checked by :meth:`VIConfig.from_dict`).

    Raises:
        ConfigError: missing file or invalid TOML.
    """
    from flowforge.runs.options import read_toml  # the one TOML reader of the tool

    return read_toml(Path(path))
