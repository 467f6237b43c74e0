"""Which flow a training run asks for: its options and dataset turned into a :class:`ModelSpec`.

Each preset declares its own options by its signature: the vector presets take ``features``,
``context``, ``transforms``, ``hidden`` (a tuple of widths) and their own extras; the image
presets take ``shape``, ``context``, ``levels``, ``depth``, ``hidden`` (one number of channels)
and theirs. The data decide ``features`` / ``shape`` and ``context`` (0, or the size of the
dataset's per-example context: an audio segment's mel frames, whose bands are WaveGlow's
``frame_features``); every other option
comes from :data:`PRESET_SIZES` (the command line's default size of each preset), then
``--transforms``, ``--hidden``, ``--bins`` and ``--flow-options``, and an option the preset does
not take is a :class:`ConfigError` naming the valid ones.

Image presets also change the defaults of a few training options (:func:`preset_defaults`):
the command line applies them under the user's TOML file and flags.

The spec itself (and rebuilding a flow from it) is :mod:`flowforge.runs.recipe`, so that loading a
run needs nothing from training.
"""

from __future__ import annotations

import inspect
import itertools
import math
from typing import Any

import torch
from torch import nn

from flowforge.core.memory import too_big
from flowforge.data.audio import MEL_BANDS
from flowforge.data.base import QUANTIZED_KINDS
from flowforge.data.images import IMAGE_DATASETS
from flowforge.data.sklearn_sets import SKLEARN_DATASETS
from flowforge.dequantization import NOISE_FLOWS, Dequantizer
from flowforge.flows import PRESETS
from flowforge.flows.ffjord import FLOW_MATCHING, FLOW_MATCHING_OT
from flowforge.runs.defensive import defensive_entry
from flowforge.runs.recipe import (
    LEGACY_KWARGS,
    PAIRED_HIDDEN,
    RENAMED_KWARGS,
    ModelSpec,
    check_flow_name,
    renamed,
    whiten_entry,
)
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.losses import (
    CNFLikelihood,
    FlowMatching,
    MaximumLikelihood,
    Objective,
    VariationalDequantization,
)
from flowforge.train.objective_options import ObjectiveOptions
from flowforge.train.table_options import TableOptions
from flowforge.transforms.cnf_solve import FIXED_STEP, tolerance_floor
from flowforge.transforms.continuous import CNF
from flowforge.transforms.whiten import Whiten, start_whiten

__all__ = [
    "AUDIO_PRESETS",
    "AUDIO_TRAINING_DEFAULTS",
    "DEQUANTIZER_SIZE",
    "FLOW_MATCHING_DEFAULTS",
    "IMAGE_TRAINING_DEFAULTS",
    "PRESET_SIZES",
    "PRESET_TRAINING_DEFAULTS",
    "TARFLOW_IMAGE_DROPOUT",
    "TARFLOW_IMAGE_RELATIVE",
    "VOCODER_ANCHORED",
    "VOCODER_SOURCE",
    "dequantizer_spec_for",
    "is_image_data",
    "is_image_preset",
    "objective_for",
    "preset_defaults",
    "preset_options",
    "spec_for",
    "takes_vectors",
]

_VECTOR_SIZE: dict[str, Any] = {"transforms": 5, "hidden": (64, 64)}

#: The size each preset gets from the command line unless the options say otherwise (chosen for
#: 2-D data and the scikit-learn sets on 2 CPU cores; the presets' own defaults are larger).
PRESET_SIZES: dict[str, dict[str, Any]] = {
    "nice": _VECTOR_SIZE,
    "realnvp": _VECTOR_SIZE,
    "maf": _VECTOR_SIZE,
    "iaf": _VECTOR_SIZE,
    "nsf": _VECTOR_SIZE,
    "glow": {"levels": 2, "depth": 4, "hidden": (64, 64)},
    "multiscale_realnvp": {"levels": 2, "depth": 3, "hidden": (64, 64)},
    "ffjord": {"transforms": 1, "hidden": (64, 64, 64)},
    "tarflow": {"patch": 2, "blocks": 4, "layers": 2, "width": 32, "heads": 2},
    # 0.2M parameters: ~0.5 s a step of 8 segments of 4,096 samples on one CPU thread
    "waveglow": {"depth": 8, "hidden": 32, "layers": 3},
}

#: The label dropout of a class-conditional TarFlow run (``--condition class``): the share of
#: training rows whose class is nulled, so that class guidance has an unconditional model to
#: extrapolate from (the TarFlow paper's 0.1).
CLASS_LABEL_DROPOUT = 0.1

#: The dropout of a TarFlow run on images (the transformers' attention and MLP outputs,
#: training mode only; the flow option ``dropout``). On digits at 150 epochs it closes most of
#: TarFlow's train/test gap: test bits/dim 1.957 / 1.963 against 1.982 / 1.975 without (seeds
#: 0 / 1; benchmarks/results/tarflow_digits.md). Images only: a table's TarFlow (its vector
#: mode) keeps the flow's default 0. Not in :data:`PRESET_SIZES`, which sizes both modes; an old
#: run's saved options have no ``dropout`` and load with the flow's default 0, as they trained.
TARFLOW_IMAGE_DROPOUT = 0.2

#: A WaveGlow vocoder centred on a source (``source != "none"``): no per-channel offsets and
#: anchored couplings (``offsets=False, anchored=True``), so the flow maps ``z = 0`` to the
#: estimate exactly and a draw is the estimate plus the flow's spread. The per-channel offsets
#: and the couplings' shifts at ``z = 0`` put lines at the multiples of ``rate / group`` into
#: the draw, which left the vocoder (draw + mel gain) behind the estimate + the same gain.
#: Anchored, examples/vocoder.py's runs (200 steps) beat it on test LSD by 0.036 +- 0.024 /
#: 0.033 +- 0.018 / 0.003 +- 0.033 dB (seeds 0 / 1 / 2, paired over 16 segments), where stop
#: 34's flow trailed by 0.10 / 0.07 / 0.13 (benchmarks/results/vocoder.md, issue 27); each
#: coupling's network runs twice (1.75x a training step). Set when neither option is given
#: (``offsets`` alone given: ``anchored = not offsets``) and saved with the run; an old run's
#: saved options have neither and load with the flow's defaults (offsets, not anchored), as
#: they trained.
VOCODER_ANCHORED = {"offsets": False, "anchored": True}

#: The source of a mel-conditioned WaveGlow (a vocoder) when ``--flow-options`` names none:
#: the flow is centred on Griffin-Lim's waveform from the mel, its magnitudes refined by a
#: network of 128 channels fitted before the flow trains (``flowforge.train.vocoder_source``),
#: and anchored (:data:`VOCODER_ANCHORED`). examples/vocoder.py's runs of it (200 steps) beat
#: Griffin-Lim's test LSD by 1.38 / 1.29 / 1.27 dB and the estimate + the same mel gain by
#: 0.036 / 0.033 / 0.003 dB (seeds 0 / 1 / 2; benchmarks/results/vocoder.md, issue 27).
#: ``source_refine`` is set only with a source (``{"source": "none"}`` gives the plain flow).
#: Saved with each new run; a run saved before has no ``source`` and rebuilds with the flow's
#: own default (``"none"``), as it trained. Unconditional runs (``--condition none``) have no
#: mel and no source.
VOCODER_SOURCE: dict[str, Any] = {"source": "griffin-lim", "source_refine": 128}

#: Whether a TarFlow run on images adds a learned relative position bias to its attention
#: logits (the flow option ``relative``: one bias per head and offset of two patches on the
#: image's grid of patches, :class:`~flowforge.nn.causal_transformer.RelativeBias`). On
#: digits at the budget of multiscale RealNVP's 150 epochs it is the first TarFlow setting
#: below RealNVP's five-seed mean (benchmarks/results/tarflow_digits.md, stop 35). Images only,
#: like :data:`TARFLOW_IMAGE_DROPOUT`; an old run's saved options have no ``relative`` and load
#: with the flow's default ``False``, as they trained.
TARFLOW_IMAGE_RELATIVE = True

#: The command line's default noise flow of variational dequantization: 4 checkerboard
#: couplings of 16 channels given conv features of the image (8k parameters on 8x8 digits;
#: it beats uniform noise at equal steps, examples/dequantization_digits.py). Options:
#: ``noise`` ("conv" or "realnvp", a conditional RealNVP given the flattened levels),
#: ``transforms``, ``hidden`` (channels for "conv", widths for "realnvp").
DEQUANTIZER_SIZE: dict[str, Any] = {"noise": "conv", "transforms": 4, "hidden": (16,)}

#: Training defaults of the image presets (Glow diverges without warmup on some seeds; the
#: average of the weights generalises better than the last weights on small image sets).
IMAGE_TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 150.0,
    "batch_size": 64,
    "lr": 1e-3,
    "warmup_steps": 200,
    "clip_grad": 50.0,
    "logit_alpha": 1e-3,
    "ema_decay": 0.999,
    "eval_every": 250,
}

#: A preset's own changes to :data:`IMAGE_TRAINING_DEFAULTS`. TarFlow on digits (the sizes
#: above; benchmarks/results/tarflow_digits.md): test 1.993 bits/dim at lr 2e-3 with a 0.998
#: average against 2.038 at lr 1e-3 with 0.999 (150 epochs, seed 0); lr 4e-3 against 2e-3 at
#: 68 epochs (the CPU seconds of multiscale RealNVP's 50): 2.027 / 2.031 against 2.074 / 2.083
#: (seeds 0 / 1), and 2.203 against 2.242 at 30 epochs. 170 epochs: with its dropout
#: (:data:`TARFLOW_IMAGE_DROPOUT`) a TarFlow step costs 0.86x a multiscale RealNVP step, so 170
#: TarFlow epochs take the CPU of RealNVP's 150. Since stop 35, lr 6e-3 and 160 epochs with
#: :data:`TARFLOW_IMAGE_RELATIVE` (whose step costs 1.095x, so 160 epochs cost the 170 before
#: it): on digits, seeds 0 / 4, test 1.937 / 2.007 against 1.943 / 2.016 at lr 4e-3 with it and
#: 1.947 / 2.042 at stop 33's defaults (benchmarks/results/tarflow_digits.md).
PRESET_TRAINING_DEFAULTS: dict[str, dict[str, Any]] = {
    "tarflow": {"lr": 6e-3, "ema_decay": 0.998, "epochs": 160.0},
}

#: Training defaults of the audio presets (waveglow) on 16-bit audio segments: a few hundred
#: steps of small batches are minutes on a CPU. No average of the weights: over runs this
#: short the bias-corrected average still weighs the first steps as much as the last. The
#: speech vocoder after 200 steps, the raw weights against their average on the same
#: trajectory: validation 2.408 against 2.301 nats/sample at 0.99 (seed 0), 2.490 against 2.156
#: at 0.999 (seed 1); LSD 5.44 against 5.47 and 5.81 against 6.00 dB.
AUDIO_TRAINING_DEFAULTS: dict[str, Any] = {
    "steps": 500,
    "batch_size": 8,
    "lr": 1e-3,
    "warmup_steps": 50,
    "clip_grad": 50.0,
    "ema_decay": 0.0,
    "eval_every": 100,
}

# Flow matching regresses a velocity without solving an ODE: each step is cheap, so it wants
# more, larger steps than maximum likelihood, and validation (exact ODE solves) less often.
# Measured on 8gaussians: 2.860 test NLL in 46 s; with the shared defaults 3.363 in 8 min.
FLOW_MATCHING_DEFAULTS: dict[str, Any] = {
    "steps": 3000,
    "lr": 1e-2,
    "batch_size": 512,
    "eval_every": 500,
}

_DATA_ARGS = ("features", "shape", "context", "frame_features", "sample_rate")

#: Presets on sequences ``(C, T)`` (audio), whose training defaults are :data:`AUDIO_TRAINING_DEFAULTS`.
AUDIO_PRESETS = ("waveglow",)

#: The fixed map from audio's dequantized levels ``u`` in ``[0, 1)`` to what the preset sees
#: (a :class:`~flowforge.runs.recipe.ModelSpec` ``pretransform``): ``2u - 1``, the waveform
#: itself. Measured against the image logit (alpha 1e-3) on the speech set
#: (benchmarks/audio_pretransform.py, 150 steps of the vocoder): test 2.337 +- 0.094 against
#: 2.340 +- 0.092 nats per sample, LSD 18.02 against 17.98 dB, the validation curves within
#: 0.02 nats per sample: a tie, since speech stays where the logit is nearly linear (median
#: |x| 0.02; the 99th percentile 0.41, slope 1.19 times the centre's) and WaveGlow's ActNorm
#: absorbs the scale. The waveform needs no constant, keeps the density in the field's units
#: exactly, and does not stretch the loudest samples (slope 91 times the centre's at the set's
#: peak 0.9965).
AUDIO_PRETRANSFORM = "centre"


def _signature(name: str) -> dict[str, inspect.Parameter]:
    check_flow_name(name)
    params = inspect.signature(PRESETS[name]).parameters
    old = RENAMED_KWARGS.get(name, {})  # the deprecated old names stay out of the options
    return {k: p for k, p in params.items() if k not in ("self", "base") and k not in old}


def is_image_preset(name: str) -> bool:
    """Whether preset ``name`` takes images (``shape=``); TarFlow takes images and vectors
    (:func:`takes_vectors`)."""
    return "shape" in _signature(name)


def takes_vectors(name: str) -> bool:
    """Whether preset ``name`` takes vectors (``features=``): every preset but the image-only
    ones; TarFlow takes both, and a table gets its vector mode.

    Example:
        >>> takes_vectors("maf"), takes_vectors("tarflow"), takes_vectors("glow")
        (True, True, False)
    """
    return "features" in _signature(name)


def is_image_data(data: str) -> bool:
    """Whether the data option names a built-in image set (a file is a table).

    Example:
        >>> is_image_data("digits"), is_image_data("wine"), is_image_data("rows.csv")
        (True, False, False)
    """
    key = data.lower()
    return key in IMAGE_DATASETS or SKLEARN_DATASETS.get(key, ("",))[0] == "image"


def preset_options(name: str) -> list[str]:
    """The options of preset ``name`` that a run may set (all but the data's), in order.

    Example:
        >>> preset_options("glow")
        ['levels', 'depth', 'hidden', 'lu']
    """
    return [k for k in _signature(name) if k not in _DATA_ARGS]


def preset_defaults(
    name: str, objective: str | None = None, data: str | None = None
) -> dict[str, Any]:
    """Training options whose command-line default differs for preset ``name`` trained with
    ``objective`` on ``data`` (a layer for :meth:`TrainConfig.from_layers`, under the user's
    own): a preset that takes images and vectors (TarFlow) gets the image defaults on image
    data (or ``data=None``) only."""
    if objective == "flow-matching":
        return dict(FLOW_MATCHING_DEFAULTS)
    if name in AUDIO_PRESETS:
        return dict(AUDIO_TRAINING_DEFAULTS)
    if not is_image_preset(name):
        return {}
    if data is not None and takes_vectors(name) and not is_image_data(data):
        return {}
    return {**IMAGE_TRAINING_DEFAULTS, **PRESET_TRAINING_DEFAULTS.get(name, {})}


def _hidden(name: str, value: Any, default: Any) -> Any:
    """``hidden`` in the form the preset takes: a channel count (waveglow) or a tuple of widths.

    For the conv presets (:data:`~flowforge.runs.recipe.PAIRED_HIDDEN`) one number ``N``
    (``--hidden 64``) is ``(N, N)``, the two hidden layers it always meant there.
    """
    if isinstance(default, int):  # waveglow: one number of channels
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ConfigError(
                    f"flow {name!r} takes hidden as one number of channels, got {list(value)}"
                )
            value = value[0]
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    value = tuple(value) if isinstance(value, list) else value
    if name in PAIRED_HIDDEN and isinstance(value, tuple) and len(value) == 1:
        value = (value[0], value[0])
    return value


def _parameter_floor(name: str, kwargs: dict[str, Any]) -> int:
    """A lower bound on the parameters of preset ``name`` built with ``kwargs``: its networks'
    products of consecutive hidden widths (image presets: one ``H x H`` convolution per
    coupling); 0 for a preset without networks."""
    params = _signature(name)

    def arg(key: str) -> Any:
        if key in kwargs:
            return kwargs[key]
        return params[key].default if key in params else None

    hidden = arg("hidden")
    if hidden is None:
        return 0
    widths = [int(hidden)] if isinstance(hidden, int) else [int(h) for h in hidden]
    if "shape" in params:
        return int(arg("levels") or 1) * int(arg("depth") or 1) * max(widths) ** 2
    # a network sees at least half the features and gives at least P parameters for each of
    # half of them (P = 2 for an affine layer, 3 * bins - 1 for a spline)
    half = max(1, int(arg("features") or 1) // 2)
    per_dim = 3 * int(arg("bins")) - 1 if arg("bins") is not None else 2
    per_net = sum(a * b for a, b in itertools.pairwise(widths))
    per_net += widths[0] * half + widths[-1] * half * per_dim
    per_net += int(arg("residual_blocks") or 0) * len(widths) * max(widths) ** 2
    return int(arg("transforms") or 1) * per_net


def _activation_floor(name: str, kwargs: dict[str, Any], batch: int) -> int:
    """A lower bound on the float32 values of one hidden layer's activations for a batch: the
    widest layer (image presets: at the first level's resolution)."""
    params = _signature(name)
    if "hidden" not in params:
        return 0
    hidden = kwargs.get("hidden", params["hidden"].default)
    width = int(hidden) if isinstance(hidden, int) else max(int(h) for h in hidden)
    shape = kwargs.get("shape")
    if shape is None:
        pixels = 1
    elif len(shape) == 2:  # a sequence (C, T) squeezed into groups of samples (waveglow)
        group = kwargs.get("group", params["group"].default if "group" in params else 1)
        pixels = int(shape[1]) // max(1, int(group))
    else:  # an image, squeezed once
        pixels = (int(shape[1]) * int(shape[2])) // 4
    return batch * width * max(1, pixels)


def _check_size(name: str, kwargs: dict[str, Any], batch: int) -> None:
    """Refuse, in one line, a flow whose training cannot fit in this machine's memory: its
    weights, their gradients and Adam's two moments in float32 (from a lower bound on the
    parameters), and one hidden layer's activations for a batch."""
    try:
        floor = _parameter_floor(name, kwargs)
        acts = _activation_floor(name, kwargs, batch)
    except (TypeError, ValueError):  # not numbers: the preset names the bad option
        return
    why = too_big(16.0 * floor, f"training {floor:.3g} parameters (weights, gradients, Adam)")
    why = why or too_big(4.0 * acts, f"one hidden layer's activations for a batch of {batch}")
    if why is not None:
        shown = {k: kwargs[k] for k in ("transforms", "hidden", "residual_blocks") if k in kwargs}
        raise ConfigError(f"flow {name!r} with {shown} cannot fit: {why}")


def _check_solver_options(name: str, given: dict[str, Any], params: dict[str, Any]) -> None:
    """A CNF preset's solver options: each one used by the chosen method, and the adaptive
    tolerances at or above what float32 training resolves (``32 eps``: smaller ones were
    silently raised, while config.json recorded the asked value)."""
    if "method" not in params:
        return
    method = given.get("method", params["method"].default)
    adaptive = method not in FIXED_STEP
    unused: list[str] = [k for k in ("rtol", "atol") if k in given] if not adaptive else []
    unused += ["solver_steps"] if adaptive and "solver_steps" in given else []
    if unused:
        uses = "rtol and atol (not solver_steps)" if adaptive else "solver_steps (not rtol or atol)"
        raise ConfigError(
            f"flow {name!r}: option {unused[0]!r} does nothing with method {method!r}, which "
            f"takes {uses}"
        )
    floor = tolerance_floor(torch.float32)
    for key in ("rtol", "atol"):
        value: Any = given.get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if adaptive and number and not (math.isfinite(value) and value >= floor):
            raise ConfigError(
                f"flow {name!r}: expected {key} >= {floor:.2g} (32 eps of float32, the "
                f"smallest tolerance a float32 solve resolves), got {value!r}"
            )


def spec_for(cfg: TrainConfig, ds: Any) -> ModelSpec:
    """The spec of the flow that ``cfg`` asks for on dataset ``ds``.

    Args:
        cfg: the training configuration (flow name, size, extra preset options).
        ds: a :class:`flowforge.data.Dataset`.

    Raises:
        ConfigError: on an unknown flow, an option the preset does not take, an image preset
            on data that are not images, or a size whose training cannot fit in memory.
    """
    params = _signature(cfg.flow)
    options = preset_options(cfg.flow)
    kwargs: dict[str, Any] = {k: v for k, v in PRESET_SIZES.get(cfg.flow, {}).items()}
    given: dict[str, Any] = {}
    if cfg.transforms is not None:
        given["transforms"] = cfg.transforms
    if cfg.hidden is not None:
        given["hidden"] = cfg.hidden
    if cfg.bins is not None:
        given["bins"] = cfg.bins
    given.update(renamed(cfg.flow, cfg.flow_options))  # an old config's old option names
    for key in given:
        if key not in options:
            what = "comes from the data" if key in _DATA_ARGS else "is not an option of it"
            raise ConfigError(
                f"flow {cfg.flow!r} takes no option {key!r} ({what}); valid: {', '.join(options)}"
            )
    _check_solver_options(cfg.flow, given, params)
    kwargs.update(given)
    if cfg.flow == "ffjord" and cfg.objective == "flow-matching":
        # Flow matching evaluates the velocity once a step: the plain MLP on [z, t] costs 0.7x
        # the concat-squash layers' CPU a step (benchmarks/results/cnf_issue24.md, stop 30);
        # without OT pairs GELU and one Fourier time pair learn faster than tanh on t (stop
        # 35); with OT pairs tanh on 1 - t (reverse_time, stop 35b). Stored in the run's spec,
        # so a run saved without them (tanh, t alone) rebuilds as it trained.
        defaults = FLOW_MATCHING_OT if cfg.ot else FLOW_MATCHING
        kwargs.setdefault("dynamics", defaults["dynamics"])
        if kwargs["dynamics"] == "mlp":
            for key, value in defaults.items():
                kwargs.setdefault(key, value)
    for key in LEGACY_KWARGS.get(cfg.flow, {}):  # stored: an old run loads the old default
        kwargs.setdefault(key, params[key].default)
    if "hidden" in kwargs:
        kwargs["hidden"] = _hidden(cfg.flow, kwargs["hidden"], params["hidden"].default)
    image = ds.kind in QUANTIZED_KINDS  # images and audio: levels, in their own shape
    if cfg.noise > 0 and (ds.kind != "image" or cfg.dequantization != "uniform"):
        what = "variational dequantization" if ds.kind == "image" else f"{ds.kind} data"
        raise ConfigError(
            f"--noise augments uniformly dequantized images; it cannot be used with {what}"
        )
    if "features" in params and "shape" in params and not image and "patch" not in given:
        kwargs["patch"] = 1  # TarFlow on a table: each column a token, any number of columns
    if "shape" in params and (image or "features" not in params):
        if not image or len(ds.event_shape) not in (2, 3):
            what = (
                "an audio flow: it needs audio segments (1, T)"
                if cfg.flow in AUDIO_PRESETS
                else "an image flow: it needs images (C, H, W)"
            )
            raise ConfigError(
                f"flow {cfg.flow!r} is {what}, and "
                f"{ds.name!r} has events of shape {tuple(ds.event_shape)}; use a vector flow "
                f"({', '.join(k for k in PRESETS if not is_image_preset(k))})"
            )
        data_args: dict[str, Any] = {"shape": list(ds.event_shape)}
    else:
        data_args = {"features": ds.dim}
    if "context" in params:  # the dataset's per-example context (audio: its mel frames)
        data_args["context"] = ds.context_dim
    elif ds.context_dim:
        raise ConfigError(f"flow {cfg.flow!r} takes no context, and {ds.name!r} has one")
    if cfg.flow == "tarflow" and "shape" in data_args:
        kwargs.setdefault("dropout", TARFLOW_IMAGE_DROPOUT)
        kwargs.setdefault("relative", TARFLOW_IMAGE_RELATIVE)
    if cfg.flow == "tarflow" and ds.context_dim:  # classes: train the null context too
        kwargs.setdefault("label_dropout", CLASS_LABEL_DROPOUT)
    if cfg.flow == "waveglow" and ds.context_dim and ds.sample_rate:  # a vocoder: its source
        kwargs.setdefault("source", VOCODER_SOURCE["source"])
        if kwargs["source"] != "none":
            kwargs.setdefault("source_refine", VOCODER_SOURCE["source_refine"])
    if cfg.flow == "waveglow" and kwargs.get("source", "none") != "none":
        kwargs.setdefault("offsets", VOCODER_ANCHORED["offsets"])
        kwargs.setdefault("anchored", VOCODER_ANCHORED["anchored"] and not kwargs["offsets"])
    if "frame_features" in params and ds.context_dim:  # the context is mel frames (F, frames)
        data_args["frame_features"] = MEL_BANDS
    if "sample_rate" in params and ds.sample_rate:  # a vocoder's source: its mel filterbank
        data_args["sample_rate"] = int(ds.sample_rate)
    _check_size(cfg.flow, {**data_args, **kwargs}, cfg.batch_size)
    start = _start_of(cfg, ds) if ds.kind == "tabular" and "features" in data_args else None
    return ModelSpec(
        preset=cfg.flow,
        kwargs={**data_args, **kwargs},
        kind=ds.kind,
        data_shape=tuple(ds.event_shape),
        levels=ds.levels if image else None,
        logit_alpha=cfg.logit_alpha if image and ds.kind != "audio" else None,
        standardizer=ds.standardizer.to_dict() if ds.standardizer is not None else None,
        columns=list(ds.columns) if getattr(ds, "columns", None) else None,
        whiten=whiten_entry(*start) if start is not None and cfg.whiten else None,
        defensive=defensive_entry(*start) if start is not None and cfg.defensive else None,
        pretransform=_pretransform(cfg, ds),
    )


def _pretransform(cfg: TrainConfig, ds: Any) -> str:
    """The fixed map of a run's dequantized levels: audio's :data:`AUDIO_PRETRANSFORM`, the
    logit for images, ``2u - 1`` for images trained with noise (whose values leave [0, 1))."""
    if ds.kind == "audio":
        return AUDIO_PRETRANSFORM
    return "centre" if ds.kind == "image" and cfg.noise > 0 else "logit"


def _start_of(cfg: TableOptions, ds: Any) -> tuple[Whiten, float, str] | None:
    """The Gaussian start of a standardised table with at least 2 training rows, when
    ``--whiten`` or ``--defensive`` asks for it: the whitening of its (standardised) training
    rows (:func:`~flowforge.transforms.whiten.start_whiten`: the shrinkage chosen by the
    validation rows unless the rows are rank deficient); else ``None``."""
    train = getattr(ds, "train", None)
    if not (cfg.whiten or cfg.defensive) or ds.standardizer is None or ds.kind != "tabular":
        return None
    if train is None or train.shape[0] < 2:
        return None
    val = getattr(ds, "val", None)
    val = None if val is None else val.reshape(val.shape[0], -1)
    return start_whiten(train.reshape(train.shape[0], -1), val)


def dequantizer_spec_for(cfg: ObjectiveOptions, ds: Any) -> dict[str, Any] | None:
    """The recipe of the learned dequantizer that ``cfg`` asks for (``None``: uniform noise).

    The recipe is JSON (saved in ``config.json``, rebuilt by
    :func:`flowforge.runs.recipe.build_dequantizer`): :data:`DEQUANTIZER_SIZE` updated by
    ``dequantizer_options``.

    Raises:
        ConfigError: variational dequantization of data that are not images, an unknown or
            invalid option, or options without ``dequantization = variational``.
    """
    if cfg.dequantization != "variational":
        if cfg.dequantizer_options:
            raise ConfigError("dequantizer_options need --dequantization variational")
        return None
    if ds.kind != "image" or ds.levels is None:
        raise ConfigError(
            f"--dequantization variational is for images of integer levels; {ds.name!r} is "
            f"{ds.kind} data"
        )
    opts = {**DEQUANTIZER_SIZE, **cfg.dequantizer_options}
    unknown = sorted(set(opts) - set(DEQUANTIZER_SIZE))
    if unknown:
        raise ConfigError(
            f"the dequantizer takes no option {unknown[0]!r}; valid: {', '.join(DEQUANTIZER_SIZE)}"
        )
    if opts["noise"] not in NOISE_FLOWS:
        raise ConfigError(
            f"dequantizer noise must be one of {', '.join(NOISE_FLOWS)}, got {opts['noise']!r}"
        )
    transforms, hidden = opts["transforms"], opts["hidden"]
    hidden = [hidden] if isinstance(hidden, int) and not isinstance(hidden, bool) else hidden
    if not (isinstance(transforms, int) and not isinstance(transforms, bool) and transforms > 0):
        raise ConfigError(f"dequantizer transforms must be a positive integer, got {transforms!r}")
    ok = isinstance(hidden, (list, tuple)) and len(hidden) > 0
    if not ok or not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ConfigError(f"dequantizer hidden must be positive integers, got {hidden!r}")
    return {
        "kind": "variational",
        "noise": opts["noise"],
        "shape": list(ds.event_shape),
        "levels": int(ds.levels),
        "transforms": transforms,
        "hidden": list(hidden),
    }


def objective_for(cfg: TrainConfig, flow: nn.Module, dequantizer: Dequantizer | None) -> Objective:
    """What a run of ``cfg`` minimises, for its built ``flow`` (and learned dequantizer).

    Maximum likelihood (:class:`CNFLikelihood` with the RNODE weights for a continuous flow,
    :class:`VariationalDequantization` with a learned dequantizer) or :class:`FlowMatching`.

    Raises:
        ConfigError: an objective or option that does not apply to the flow (flow matching of a
            flow that is not one CNF, RNODE weights of a discrete flow, ``ot`` without flow
            matching, variational dequantization with flow matching or RNODE weights).
    """
    cnf = any(isinstance(m, CNF) for m in flow.modules())
    rnode = cfg.kinetic > 0 or cfg.jacobian > 0
    if cfg.objective == "flow-matching":
        if not cnf:
            raise ConfigError(
                f"--objective flow-matching trains a continuous flow (ffjord); flow {cfg.flow!r} "
                "is not one: train it with --objective likelihood"
            )
        if rnode:
            raise ConfigError(
                "--kinetic / --jacobian regularise the ODE solves of likelihood training; flow "
                "matching solves none (use --objective likelihood)"
            )
        if dequantizer is not None:
            raise ConfigError(
                "--dequantization variational trains the dequantizer by likelihood; it cannot "
                "be combined with --objective flow-matching"
            )
        fm = FlowMatching(ot=cfg.ot, sigma=cfg.fm_sigma)
        try:
            fm.split(flow)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"--objective flow-matching: {e}") from None
        return fm
    if cfg.ot or cfg.fm_sigma > 0:
        raise ConfigError("--ot and --fm-sigma are options of --objective flow-matching")
    if rnode and not cnf:
        raise ConfigError(
            f"--kinetic / --jacobian regularise a continuous flow (ffjord); flow {cfg.flow!r} "
            "is not one"
        )
    if dequantizer is not None:
        if rnode:
            raise ConfigError(
                "--kinetic / --jacobian cannot be combined with --dequantization variational"
            )
        return VariationalDequantization(dequantizer)
    if cnf:
        return CNFLikelihood(kinetic=cfg.kinetic, jacobian=cfg.jacobian)
    return MaximumLikelihood()
