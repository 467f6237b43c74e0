"""A table run's defensive mixture, as its recipe stores it: the Gaussian start and its weight.

A standardised table's model is ``(1 - w) p_flow + w p_start``
(:class:`~flowforge.core.defensive.DefensiveMixture`), ``p_start`` the Gaussian a whitened flow
starts from: ``Standardize`` with the run's statistics, then the fixed
:class:`~flowforge.transforms.whiten.Whiten` of the standardised training rows' shrunk
covariance, then a standard normal. So no row ever scores below ``log w + log p_start(x)``.

:attr:`ModelSpec.defensive <flowforge.runs.recipe.ModelSpec>` holds ``{"weight": w,
"weight_from": ..., "shrinkage": s, "method": "validated" | "cross-validated" |
"ledoit-wolf", "tril": rows}`` (the Cholesky factor as
:func:`~flowforge.runs.recipe.whiten_entry` stores it). ``weight_from`` is ``"minimum"``
(:data:`~flowforge.core.defensive.MIN_WEIGHT`) until a training run ends and chooses ``w`` on
its ``M`` validation rows (:func:`~flowforge.core.defensive.defensive_weight`):
``"validation"`` (where the rows show the mixture better than the start beyond two standard
errors: the weight, from the maximum-likelihood one, at least
:func:`~flowforge.core.defensive.minimum_weight` ``(M)``, up to 1, whose gain less two
standard errors is largest), or ``"start: no-gain"`` / ``"start:
few-rows"`` (``w = 1``: the model is the start), with ``validation_rows``,
``validation_gain`` and ``validation_gain_error`` (nats per row); an interrupted run keeps the
minimum. Runs written before it have no entry and load as the plain flow. The weights file holds the flow's
weights only, as before: the fallback is all in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from flowforge.core import Compose, Flow
from flowforge.core.defensive import (
    MIN_WEIGHT,
    DefensiveMixture,
    WeightChoice,
    defensive_weight,
)
from flowforge.distributions.base import StandardNormal
from flowforge.runs.errors import ConfigError
from flowforge.runs.recipe import ModelSpec, tril_of, tril_rows
from flowforge.transforms.standardize import Standardize
from flowforge.transforms.whiten import Whiten

__all__ = ["build_fallback", "defend", "defensive_entry", "model_flow", "validated_spec"]


def defensive_entry(whiten: Whiten, shrinkage: float, method: str) -> dict[str, Any]:
    """The JSON entry of a defensive mixture whose fallback is the Gaussian ``whiten`` of the
    standardised training rows, at the minimum weight (until :func:`validated_spec`)."""
    return {
        "weight": MIN_WEIGHT,
        "weight_from": "minimum",
        "shrinkage": float(shrinkage),
        "method": method,
        "tril": tril_rows(whiten),
    }


def build_fallback(spec: ModelSpec) -> Flow:
    """The fallback of ``spec``'s defensive entry: ``Standardize``, ``Whiten``, standard normal.

    Raises:
        ConfigError: no entry, no standardisation, or a malformed entry.
    """
    if spec.defensive is None or spec.standardizer is None:
        raise ConfigError("a defensive mixture needs a standardised table's recipe")
    try:
        mean = torch.tensor(spec.standardizer["mean"], dtype=torch.float64).reshape(-1)
        std = torch.tensor(spec.standardizer["std"], dtype=torch.float64).reshape(-1)
        whiten = Whiten(tril_of(spec.defensive["tril"], spec.features))
        bij = Compose([Standardize(mean, std), whiten])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot build the defensive fallback of the recipe: {e}") from None
    return Flow(bij, StandardNormal(spec.features))


def defend(flow: Flow, spec: ModelSpec) -> Flow | DefensiveMixture:
    """``flow`` inside the defensive mixture of ``spec`` (``flow`` itself when it has none),
    with the flow's dtype and device.

    Raises:
        ConfigError: a malformed entry.
    """
    if spec.defensive is None:
        return flow
    try:
        weight = float(spec.defensive["weight"])
        fallback = build_fallback(spec)
        ref = next((p for p in flow.parameters() if p.is_floating_point()), None)
        if ref is not None:
            fallback = fallback.to(ref)
        return DefensiveMixture(flow, fallback, weight)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot build the defensive mixture of the recipe: {e}") from None


def model_flow(model: Flow | DefensiveMixture) -> Flow:
    """The trained flow of a run's model (the mixture's ``.flow``, or the flow itself)."""
    return model.flow if isinstance(model, DefensiveMixture) else model


def validated_spec(
    spec: ModelSpec, lp_flow: torch.Tensor, lp_fallback: torch.Tensor
) -> tuple[ModelSpec, WeightChoice | None]:
    """``spec`` with the weight :func:`~flowforge.core.defensive.defensive_weight` chooses on
    ``M`` validation rows, given the flow's and the fallback's log-densities of them (in the
    same units): where the rows show the mixture better than the Gaussian start, the weight
    whose gain over it less two standard errors is largest, else ``1`` (the start alone); and
    that choice.
    ``(spec, None)`` when it has no defensive entry or there are no rows."""
    if spec.defensive is None or lp_flow.numel() == 0:
        return spec, None
    choice = defensive_weight(lp_flow, lp_fallback)
    entry = {
        **spec.defensive,
        "weight": choice.weight,
        "weight_from": "validation" if choice.reason == "validation" else f"start: {choice.reason}",
        "validation_rows": choice.rows,
        "validation_gain": None if math.isnan(choice.gain) else choice.gain,
        "validation_gain_error": None if math.isnan(choice.error) else choice.error,
    }
    return dataclasses.replace(spec, defensive=entry), choice
