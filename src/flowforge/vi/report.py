"""The diagnostics a VI run records and prints (``results.json``, ``flowforge vi`` / ``eval``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from flowforge.core import Flow
from flowforge.vi.diagnostics import diagnose, grid_log_normalizer
from flowforge.vi.targets import Target

__all__ = ["diagnostics_dict", "format_diagnostics"]


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


@torch.no_grad()
def diagnostics_dict(
    flow: Flow, target: Target, samples: int, seed: int, grid_points: int = 801
) -> dict[str, Any]:
    """The diagnostics of ``q = flow`` against ``target``, JSON-able (non-finite: ``None``).

    Keys: ``samples``, ``seed``, ``elbo``, ``elbo_stderr``, ``log_z_is``,
    ``log_z_is_stderr``, ``ess``, ``ess_fraction``, ``pareto_k``; with a known normaliser
    ``log_z_true``; for a 2-D target with bounds ``log_z_grid`` (trapezoidal rule) and
    ``kl_grid = log_z_grid - elbo``. Seeded, so the same flow gives the same numbers.
    """
    was_training = flow.training
    flow.eval()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        d = diagnose(flow, target, samples)
    finally:
        torch.random.set_rng_state(state)
        flow.train(was_training)
    out: dict[str, Any] = {
        "samples": samples,
        "seed": seed,
        "elbo": _finite(d.elbo.value),
        "elbo_stderr": _finite(d.elbo.stderr),
        "log_z_is": _finite(d.log_z.value),
        "log_z_is_stderr": _finite(d.log_z.stderr),
        "ess": _finite(d.ess),
        "ess_fraction": _finite(d.ess_fraction),
        "pareto_k": _finite(d.pareto_k),
    }
    if target.log_normalizer is not None:
        out["log_z_true"] = float(target.log_normalizer)
    if target.features == 2 and target.bounds is not None:
        log_z = grid_log_normalizer(target, target.bounds, grid_points)
        out["log_z_grid"] = log_z
        out["kl_grid"] = None if out["elbo"] is None else log_z - out["elbo"]
    return out


def format_diagnostics(d: dict[str, Any]) -> list[str]:
    """The lines ``flowforge vi`` and ``flowforge eval`` print for :func:`diagnostics_dict`."""

    def num(key: str, digits: int = 4) -> str:
        v = d.get(key)
        return "n/a" if v is None else f"{v:.{digits}f}"

    n = d["samples"]
    lines = [
        f"ELBO: {num('elbo')} ± {num('elbo_stderr')} nats ({n} samples from q, 1 standard error)",
        f"IS log Z: {num('log_z_is')} ± {num('log_z_is_stderr')} nats",
        f"ESS: {num('ess', 1)} of {n} ({num('ess_fraction', 3)})",
    ]
    k = d.get("pareto_k")
    verdict = (
        "n/a"
        if k is None
        else "reliable"
        if k < 0.5
        else "usable"
        if k < 0.7
        else "unreliable: q misses mass"
    )
    lines.append(f"Pareto-k: {num('pareto_k', 3)} ({verdict})")
    if "log_z_true" in d:
        lines.append(f"true log Z: {num('log_z_true')}")
    if "log_z_grid" in d:
        lines.append(
            f"grid log Z: {num('log_z_grid')}; KL(q || p) = log Z - ELBO: {num('kl_grid')} nats"
        )
    return lines
