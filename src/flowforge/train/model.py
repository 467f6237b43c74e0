"""What a run trains: a preset flow plus the fixed pre-transforms of its data, from a JSON spec.

The trained model is a genuine :class:`flowforge.Flow` over the data as the user knows it:

- 2-D toy and on-disk tabular data: the preset itself;
- user and scikit-learn tabular data: ``Standardize`` (training statistics) then the preset, so
  ``log_prob`` is the log-density of the data in its original units;
- images: flattened to ``D = C*H*W`` values ``u`` in ``[0, 1)`` (uniformly dequantized pixels),
  ``Logit(alpha)`` then the preset, so ``log_prob(u)`` includes the logit's log-Jacobian, as
  bits/dim requires.

:class:`ModelSpec` holds everything needed to rebuild that flow; it is saved in ``config.json``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from flowforge.core import Bijection, Compose, Flow
from flowforge.flows import PRESETS
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.transforms import Logit
from flowforge.transforms.standardize import Standardize

__all__ = ["ModelSpec", "build_flow", "check_flow_name", "spec_for"]


@dataclass
class ModelSpec:
    """The recipe of a trained flow (JSON-able through :meth:`to_dict`).

    Attributes:
        preset: a key of :data:`flowforge.flows.PRESETS`.
        kwargs: the preset's keyword arguments (``features``, ``transforms``, ``hidden``, ...).
        kind: the data kind, ``"toy"``, ``"tabular"`` or ``"image"``.
        data_shape: the event shape of one example as the dataset stores it (``(1, 8, 8)``);
            the flow itself works on the flattened ``(D,)`` vector.
        levels: images: quantisation levels ``K`` per value.
        logit_alpha: images: the logit pre-transform constant.
        standardizer: ``Standardizer.to_dict()`` when the data were standardised, else ``None``.
        columns: user data: the column names, in order.
    """

    preset: str
    kwargs: dict[str, Any]
    kind: str
    data_shape: tuple[int, ...]
    levels: int | None = None
    logit_alpha: float | None = None
    standardizer: dict[str, Any] | None = None
    columns: list[str] | None = field(default=None)

    @property
    def features(self) -> int:
        """``D``, the number of values of one example."""
        return math.prod(self.data_shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dictionary."""
        d = asdict(self)
        d["data_shape"] = list(self.data_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Rebuild from :meth:`to_dict` output."""
        d = dict(d)
        d["data_shape"] = tuple(d["data_shape"])
        if isinstance(d["kwargs"].get("hidden"), list):
            d["kwargs"] = {**d["kwargs"], "hidden": tuple(d["kwargs"]["hidden"])}
        return cls(**d)


def check_flow_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown flow {name!r}; valid flows: {', '.join(sorted(PRESETS))}")


def spec_for(cfg: TrainConfig, ds: Any) -> ModelSpec:
    """The spec of the flow that ``cfg`` asks for on dataset ``ds``.

    Args:
        cfg: the training configuration (flow name, size, extra preset options).
        ds: a :class:`flowforge.data.Dataset`.

    Raises:
        ConfigError: on an unknown flow or an option the preset does not take.
    """
    check_flow_name(cfg.flow)
    cls = PRESETS[cfg.flow]
    kwargs: dict[str, Any] = {
        "features": ds.dim,
        "context": 0,
        "transforms": cfg.transforms,
        "hidden": tuple(cfg.hidden),
    }
    if cfg.bins is not None:
        kwargs["bins"] = cfg.bins
    kwargs.update(cfg.flow_options)
    accepted = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in kwargs if k not in accepted and not takes_any]
    if unknown:
        valid = [k for k in accepted if k not in ("self", "base")]
        raise ConfigError(
            f"flow {cfg.flow!r} takes no option {unknown[0]!r}; valid: {', '.join(valid)}"
        )
    image = ds.kind == "image"
    return ModelSpec(
        preset=cfg.flow,
        kwargs=kwargs,
        kind=ds.kind,
        data_shape=tuple(ds.event_shape),
        levels=ds.levels if image else None,
        logit_alpha=cfg.logit_alpha if image else None,
        standardizer=ds.standardizer.to_dict() if ds.standardizer is not None else None,
        columns=list(ds.columns) if getattr(ds, "columns", None) else None,
    )


def build_flow(spec: ModelSpec) -> Flow:
    """Build the (untrained) flow of ``spec``; seed torch first for a reproducible init.

    Raises:
        ConfigError: if the preset rejects its options.
    """
    check_flow_name(spec.preset)
    try:
        preset = PRESETS[spec.preset](**spec.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build flow {spec.preset!r}: {e}") from None
    pre: list[Bijection] = []
    if spec.standardizer is not None:
        mean = torch.tensor(spec.standardizer["mean"], dtype=torch.float64)
        std = torch.tensor(spec.standardizer["std"], dtype=torch.float64)
        pre.append(Standardize(mean.reshape(-1), std.reshape(-1)))
    if spec.kind == "image":
        pre.append(Logit(float(spec.logit_alpha or 0.0), (spec.features,)))
    if not pre:
        return preset
    return Flow(Compose([*pre, preset.bijection]), preset.base)
