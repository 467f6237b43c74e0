"""Per-row log-likelihoods of new data under a trained run, and samples from it.

Rows are in the data's own units: user and scikit-learn tabular data unstandardised (the
run's training statistics are applied inside the flow, so the score is ``log p`` of the raw
row), images as pixel levels ``0 .. K-1``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from flowforge.data import DataError, dequantize
from flowforge.eval.likelihood import log_likelihoods
from flowforge.runs import Run

__all__ = ["sample_rows", "score_rows"]


def score_rows(
    run: Run, x: np.ndarray, *, origin: str = "input", seed: int = 0, batch_size: int = 4096
) -> Tensor:
    """``log p`` (nats) of each row of ``x`` under the run's flow.

    Args:
        run: an opened run.
        x: ``(N, D)`` rows in the data's units (images: levels ``0 .. K-1``, flattened).
        origin: the file name for error messages.
        seed: images: the seed of the uniform dequantization noise; the score is then
            ``log p(u)`` of the dequantized row, so ``-mean`` is the NLL that ``eval`` reports.
        batch_size: rows per forward pass.

    Returns:
        ``(N,)`` float64.

    Raises:
        DataError: wrong number of columns, or image levels outside ``0 .. K-1``.
    """
    spec = run.spec
    if x.ndim != 2 or x.shape[1] != spec.features:
        found = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
        raise DataError(
            f"{origin} has {found} columns; the run was trained on {spec.features}-dimensional data"
        )
    t = torch.as_tensor(x, dtype=torch.float32)
    if spec.kind == "image":
        levels = int(spec.levels or 0)
        bad = np.argwhere((x < 0) | (x > levels - 1))
        if bad.size:
            i, j = (int(k) for k in bad[0])
            raise DataError(
                f"{origin}, row {i + 1}, column {j + 1}: value {x[i, j]} is not a pixel level "
                f"in 0..{levels - 1}"
            )
        t = dequantize(t.floor(), levels, torch.Generator().manual_seed(seed))
    device = next(iter(run.flow.parameters()), t).device
    return log_likelihoods(run.flow, t, batch_size, device)


@torch.no_grad()
def sample_rows(run: Run, n: int, *, temperature: float = 1.0, seed: int = 0) -> Tensor:
    """``n`` samples in the data's units, shape ``(n, *data_shape)`` (images: levels).

    Args:
        run: an opened run.
        n: number of samples.
        temperature: scales the base sample ``z`` (exact for a standard normal base: the
            density ``p_T(z) ∝ p(z)^(1/T^2)``); below 1 gives more typical samples.
        seed: the seed of the base samples.
    """
    if n < 1:
        raise DataError(f"-n must be positive, got {n}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise DataError(f"--temperature must be a positive number, got {temperature}")
    flow = run.flow
    device = next(iter(flow.parameters())).device
    torch.manual_seed(seed)
    z = flow.base.rsample((n,)).to(device) * temperature  # (n, D)
    x, _ = flow.bijection.inverse(z)
    x = x.cpu()
    if run.spec.kind == "image":
        levels = int(run.spec.levels or 0)
        x = (x * levels).floor().clamp(0, levels - 1)
    return x.reshape(n, *run.spec.data_shape)
