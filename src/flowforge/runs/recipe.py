"""A flow's recipe: a preset plus the fixed pre-transforms of its data, rebuilt from JSON.

The trained model is a genuine :class:`flowforge.Flow` over the data as the user knows it:

- 2-D toy and on-disk tabular data: the preset itself;
- user and scikit-learn tabular data: ``Standardize`` (training statistics) then the preset,
  so ``log_prob`` is the log-density of the data in its original units; runs that whiten
  (``ModelSpec.whiten``, the default of new table runs) end with a fixed ``Whiten`` (the
  Cholesky factor of the training rows' shrunk correlation) after the preset's layers, so the
  untrained flow is the training rows' full-covariance Gaussian;
- images: ``(*, C, H, W)`` values ``u`` in ``[0, 1)`` (dequantized pixels, the dataset's own
  event shape), ``Logit(alpha, (C, H, W))`` (runs trained with Gaussian noise augmentation,
  whose inputs leave ``[0, 1)``: the fixed ``u -> 2u - 1``) then the preset, so ``log_prob(u)`` includes the
  logit's log-Jacobian, as bits/dim requires. An image preset (Glow, multiscale RealNVP) takes
  the ``(C, H, W)`` logits as they are; a vector preset (MAF, NSF, ...) gets them through
  ``Reshape((C, H, W), (D,))``, so the flow's event shape is the image's either way.

:class:`ModelSpec` holds everything needed to rebuild that flow; it is saved in ``config.json``
and :func:`build_flow` rebuilds it. Which spec a training run asks for is decided by
:func:`flowforge.train.model.spec_for`.

Example:
    >>> spec = ModelSpec("maf", {"features": 3, "transforms": 1, "hidden": (8,)}, "toy", (3,))
    >>> ModelSpec.from_dict(spec.to_dict()) == spec, type(build_flow(spec)).__name__
    (True, 'MAF')
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from flowforge.core import Bijection, Compose, Flow
from flowforge.data.base import QUANTIZED_KINDS
from flowforge.dequantization import VariationalDequantizer
from flowforge.flows import PRESETS
from flowforge.runs.errors import ConfigError
from flowforge.transforms import Logit, Reshape
from flowforge.transforms.standardize import Standardize
from flowforge.transforms.whiten import Whiten

__all__ = [
    "DEQUANTIZER_FILE",
    "PAIRED_HIDDEN",
    "ModelSpec",
    "build_dequantizer",
    "build_flow",
    "check_flow_name",
    "idle_option",
    "tril_of",
    "tril_rows",
    "whiten_entry",
]

#: Presets whose ``hidden`` sizes only the context network of each layer uses (``context > 0``):
#: the runs of ``flowforge train`` and ``vi`` are unconditional, so there it does nothing.
CONTEXT_ONLY_HIDDEN = ("planar", "radial", "sylvester")


def idle_option(preset: str, options: dict[str, Any]) -> str | None:
    """Why one of a preset's ``options`` does nothing in an unconditional run (``None``: each
    acts). The CLI's runs refuse it.

    Example:
        >>> idle_option("planar", {"hidden": (8,)})
        "option 'hidden' of flow 'planar' sizes each layer's context network, and this run has no context"
        >>> idle_option("maf", {"hidden": (8,)}) is None
        True
        >>> idle_option("ffjord", {"dynamics": "mlp", "gate_bias": 1.0})
        "option 'gate_bias' of flow 'ffjord' shapes the concat-squash dynamics, and this run's dynamics are 'mlp'"
        >>> idle_option("ffjord", {"reverse_time": True})
        "option 'reverse_time' of flow 'ffjord' shapes the plain-MLP dynamics, and this run's dynamics are 'concatsquash'"
    """
    if preset in CONTEXT_ONLY_HIDDEN and "hidden" in options and not options.get("context"):
        return (
            f"option 'hidden' of flow {preset!r} sizes each layer's context network, and this "
            "run has no context"
        )
    if preset == "tarflow" and options.get("label_dropout") and not options.get("context"):
        return (
            "option 'label_dropout' of flow 'tarflow' nulls the class of training rows, and "
            "this run has no context (--condition class gives digits' classes)"
        )
    if preset == "ffjord" and options.get("dynamics") == "mlp":
        for key in ("zero_last", "gate_bias"):
            if key in options:
                return (
                    f"option {key!r} of flow 'ffjord' shapes the concat-squash dynamics, and "
                    "this run's dynamics are 'mlp'"
                )
    if preset == "ffjord" and options.get("dynamics") != "mlp" and "reverse_time" in options:
        return (
            "option 'reverse_time' of flow 'ffjord' shapes the plain-MLP dynamics, and this "
            "run's dynamics are 'concatsquash'"
        )
    return None


#: The weights of a run's learned dequantizer (variational dequantization), next to the flow's.
DEQUANTIZER_FILE = "dequantizer.safetensors"


@dataclass
class ModelSpec:
    """The recipe of a trained flow (JSON-able through :meth:`to_dict`).

    Attributes:
        preset: a key of :data:`flowforge.flows.PRESETS`.
        kwargs: the preset's keyword arguments (``features``, ``transforms``, ``hidden``, ...).
        kind: the data kind, ``"toy"``, ``"tabular"`` or ``"image"``.
        data_shape: the event shape of one example as the dataset stores it (``(1, 8, 8)``),
            which is the event shape of the flow (run format 2; format 1 flattened images).
        levels: images: quantisation levels ``K`` per value.
        logit_alpha: images: the logit pre-transform constant.
        standardizer: ``Standardizer.to_dict()`` when the data were standardised, else ``None``.
        columns: user data: the column names, in order.
        pretransform: images and audio: ``"logit"`` (``Logit(logit_alpha)``) or ``"centre"``
            (``2u - 1``, a fixed ``Standardize`` with mean and standard deviation 0.5: image
            runs trained on noisy values ``u``, which the logit is not defined for, and audio
            runs, whose flow takes the waveform itself; audio runs written before it: logit).
        whiten: standardised tables that whiten: ``{"method": "ledoit-wolf" | "validated" | "cross-validated",
            "shrinkage": s,
            "position": "last" | "first", "tril": rows}``, the lower-triangular rows (row ``i``
            has ``i + 1`` values) of the Cholesky factor in standardised units, after the
            preset's layers (``"last"``) or before them (``"first"``, also when absent);
            ``None`` (runs written before it): none.
        defensive: standardised tables: the defensive mixture with the Gaussian start
            (:mod:`flowforge.runs.defensive`: weight, shrinkage, Cholesky rows); ``None`` (runs
            written before it, ``--no-defensive``): the plain flow.
    """

    preset: str
    kwargs: dict[str, Any]
    kind: str
    data_shape: tuple[int, ...]
    levels: int | None = None
    logit_alpha: float | None = None
    standardizer: dict[str, Any] | None = None
    columns: list[str] | None = field(default=None)
    whiten: dict[str, Any] | None = field(default=None)
    pretransform: str = "logit"
    defensive: dict[str, Any] | None = field(default=None)

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
        d["kwargs"] = {**LEGACY_KWARGS.get(d["preset"], {}), **renamed(d["preset"], d["kwargs"])}
        return cls(**d)


#: Preset options whose default changed after runs were saved without them: the value an old
#: run was built with, filled in on load, so a rebuilt run (its initialisation included, for a
#: rerun from its config) is the one it trained. New runs store these options
#: (``flowforge.train.model.spec_for``). FFJORD's dynamics start with a random last layer and
#: open gates since issue 24, and a run saved before ``dynamics`` existed has concat-squash
#: dynamics (flow matching's runs default to the plain MLP since); it trains without the adjoint
#: since issue 24, stop 34 (evaluation never uses the adjoint, so an old run scores the same).
#: A WaveGlow vocoder's
#: Griffin-Lim source inverts the mel by accelerated least squares since issue 27.
LEGACY_KWARGS: dict[str, dict[str, Any]] = {
    "ffjord": {
        "zero_last": True,
        "gate_bias": 0.0,
        "dynamics": "concatsquash",
        "adjoint": True,
    },
    "waveglow": {"source_nnls": "projected"},
}

#: Preset options renamed after runs were saved with the old name: ``steps`` means optimisation
#: steps only, so Glow's, the multiscale RealNVP's and WaveGlow's steps of flow per level are
#: ``depth`` and a fixed-step CNF's solver steps ``solver_steps``. An old config.json (its
#: model kwargs and its flow options) loads under the new names (:func:`renamed`).
RENAMED_KWARGS: dict[str, dict[str, str]] = {
    "glow": {"steps": "depth"},
    "multiscale_realnvp": {"steps": "depth"},
    "waveglow": {"steps": "depth"},
    "ffjord": {"steps": "solver_steps"},
}


#: Presets whose ``hidden`` was one number ``h`` of channels (conv nets of exactly two hidden
#: layers) and is now the sequence of the hidden layers' channels: an old config.json's ``h``
#: (its model kwargs and its flow options) loads as ``(h, h)`` (:func:`renamed`), the same net,
#: without the library's deprecation warning.
PAIRED_HIDDEN = ("glow", "multiscale_realnvp")


def renamed(preset: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` of ``preset`` with every old option name (:data:`RENAMED_KWARGS`) replaced by
    its new one, in place (a new name given too wins), and an old single ``hidden`` number of
    a conv preset (:data:`PAIRED_HIDDEN`) as the pair of widths it meant.

    Example:
        >>> renamed("glow", {"levels": 2, "steps": 4, "hidden": 64})
        {'levels': 2, 'depth': 4, 'hidden': (64, 64)}
    """
    names = RENAMED_KWARGS.get(preset, {})
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        new = names.get(key)
        if new is None:
            out[key] = value
        elif new not in kwargs:
            out[new] = value
    hidden = out.get("hidden")
    if preset in PAIRED_HIDDEN and isinstance(hidden, int) and not isinstance(hidden, bool):
        out["hidden"] = (hidden, hidden)
    return out


def check_flow_name(name: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown flow {name!r}; valid flows: {', '.join(sorted(PRESETS))}")


def _check_standardizer(std: Any, features: int) -> None:
    """A run's saved training statistics: ``mean`` and ``std``, each ``features`` finite
    numbers, ``std > 0`` (an edited config.json is checked before it builds anything)."""
    expected = f"expected mean and std, each a list of {features} finite numbers with std > 0"
    if not isinstance(std, dict):
        raise ConfigError(f"model.standardizer: {expected}, got {type(std).__name__}")
    for key in ("mean", "std"):
        values = std.get(key)
        if not isinstance(values, list) or len(values) != features:
            raise ConfigError(f"model.standardizer: {expected}; {key} is {str(values)[:60]}")
        for i, v in enumerate(values):
            number = isinstance(v, int | float) and not isinstance(v, bool)
            if not (number and math.isfinite(v) and (key == "mean" or v > 0)):
                raise ConfigError(f"model.standardizer: {expected}; {key}[{i}] is {v!r}")


def build_flow(spec: ModelSpec) -> Flow:
    """Build the (untrained) flow of ``spec``; seed torch first for a reproducible init.

    Raises:
        ConfigError: if the preset is unknown or rejects its options, or the saved training
            statistics are not ``features`` finite numbers (``std > 0``).
    """
    check_flow_name(spec.preset)
    if spec.standardizer is not None:
        _check_standardizer(spec.standardizer, spec.features)
    try:
        preset = PRESETS[spec.preset](**spec.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build flow {spec.preset!r}: {e}") from None
    pre: list[Bijection] = []
    post: list[Bijection] = []
    if spec.standardizer is not None:
        mean = torch.tensor(spec.standardizer["mean"], dtype=torch.float64)
        std = torch.tensor(spec.standardizer["std"], dtype=torch.float64)
        pre.append(Standardize(mean.reshape(-1), std.reshape(-1)))
    if spec.whiten is not None:
        last = spec.whiten.get("position", "first") == "last"
        (post if last else pre).append(_whiten_of(spec.whiten, spec.features))
    if spec.kind in QUANTIZED_KINDS:  # images and audio: dequantized levels in [0, 1)
        if spec.pretransform == "centre":
            half = torch.full(spec.data_shape, 0.5, dtype=torch.float64)
            pre.append(Standardize(half, half))  # u -> 2u - 1
        elif spec.pretransform == "logit":
            pre.append(Logit(float(spec.logit_alpha or 0.0), spec.data_shape))
        else:
            raise ConfigError(
                f"unknown image pretransform {spec.pretransform!r}; expected logit or centre"
            )
        if tuple(preset.event_shape) != spec.data_shape:  # a vector preset on images
            pre.append(Reshape(spec.data_shape, preset.event_shape))
    if not pre and not post:
        return preset
    inner = Compose([preset.bijection, *post]) if post else preset.bijection  # one model after
    # the pre-transforms, as without post; a conditional preset keeps its context size
    return Flow(Compose([*pre, inner]), preset.base, context=preset.context)


#: Where a new recipe puts its whitening: ``"last"``, after the preset's layers (they see the
#: standardised columns, the fixed map turns their output into the full-covariance Gaussian),
#: or ``"first"``, right after ``Standardize`` (the layers see whitened rows).
WHITEN_POSITION = "last"


def whiten_entry(whiten: Whiten, shrinkage: float, method: str = "ledoit-wolf") -> dict[str, Any]:
    """The JSON form of a whitening for :attr:`ModelSpec.whiten` (float64 values), at
    :data:`WHITEN_POSITION`; ``method`` names how the shrinkage was chosen (``"ledoit-wolf"``,
    ``"validated"`` or ``"cross-validated"``)."""
    return {
        "method": method,
        "shrinkage": float(shrinkage),
        "position": WHITEN_POSITION,
        "tril": tril_rows(whiten),
    }


def tril_rows(whiten: Whiten) -> list[list[float]]:
    """The lower-triangular rows of a whitening's factor (row ``i`` has ``i + 1`` values)."""
    tril = whiten.tril.double()
    return [tril[i, : i + 1].tolist() for i in range(tril.shape[0])]


def tril_of(rows: Any, features: int) -> torch.Tensor:
    """The ``(D, D)`` float64 factor of :func:`tril_rows` output.

    Raises:
        ValueError: rows of the wrong lengths.
    """
    tril = torch.zeros(features, features, dtype=torch.float64)
    if len(rows) != features or any(len(r) != i + 1 for i, r in enumerate(rows)):
        raise ValueError(f"expected {features} rows of 1..{features} values")
    for i, r in enumerate(rows):
        tril[i, : i + 1] = torch.tensor(r, dtype=torch.float64)
    return tril


def _whiten_of(entry: dict[str, Any], features: int) -> Whiten:
    try:
        return Whiten(tril_of(entry["tril"], features))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot build the whitening of the recipe: {e}") from None


def build_dequantizer(spec: dict[str, Any]) -> VariationalDequantizer:
    """Build the (untrained) dequantizer of a run record's ``"dequantizer"`` entry.

    The entry is JSON: ``{"kind": "variational", "noise": "conv" | "realnvp", "shape": [C, H,
    W], "levels": K, "transforms": T, "hidden": [H, ...]}`` (no ``"noise"``: ``"realnvp"``);
    the weights are in :data:`DEQUANTIZER_FILE`.

    Example:
        >>> spec = {"kind": "variational", "shape": [1, 2, 2], "levels": 17,
        ...         "transforms": 1, "hidden": [8]}
        >>> build_dequantizer(spec).levels
        17

    Raises:
        ConfigError: if the entry is malformed.
    """
    try:
        if spec["kind"] != "variational":
            raise ValueError(f"unknown dequantizer kind {spec['kind']!r}")
        return VariationalDequantizer(
            tuple(int(s) for s in spec["shape"]),
            int(spec["levels"]),
            transforms=int(spec["transforms"]),
            hidden=tuple(int(h) for h in spec["hidden"]),
            noise=str(spec.get("noise", "realnvp")),  # runs written before "noise" existed
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot build the dequantizer {spec!r}: {type(e).__name__}: {e}") from e
