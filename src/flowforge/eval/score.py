"""Per-row log-likelihoods of new data under a trained run, and samples from it.

Rows are in the data's own units: user and scikit-learn tabular data unstandardised (the
run's training statistics are applied inside the flow, so the score is ``log p`` of the raw
row), images as pixel levels ``0 .. K-1``, either flattened ``(N, D)`` (a CSV, one image per
row) or in the run's image shape ``(N, C, H, W)`` (a ``.npy`` file, as ``flowforge sample``
writes it).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowforge.data import DataError, dequantize, read_table
from flowforge.eval.likelihood import log_likelihoods
from flowforge.runs import Run

__all__ = ["read_rows", "sample_rows", "score_rows"]


def read_rows(run: Run, path: str | os.PathLike[str], columns: list[str] | None) -> np.ndarray:
    """The rows of a ``.csv`` / ``.npy`` file to score with ``run`` (see :func:`score_rows`).

    An image run also takes a ``.npy`` array of shape ``(N, C, H, W)``; everything else goes
    through :func:`flowforge.data.read_table` (with the run's ``columns``).

    Raises:
        DataError: a missing or malformed file.
    """
    p = Path(path).expanduser()
    if run.spec.kind == "image" and p.suffix.lower() == ".npy" and p.is_file():
        try:
            x = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            msg = " ".join(str(e).split())
            raise DataError(f"{p}: not a plain numeric .npy array ({msg})") from None
        if x.ndim > 2:
            if x.dtype.kind not in "biuf":
                raise DataError(f"{p}: expected a numeric array, got dtype {x.dtype}")
            return np.asarray(x, dtype=np.float64)
    x, _ = read_table(p, columns=columns)
    return x


def score_rows(
    run: Run, x: np.ndarray, *, origin: str = "input", seed: int = 0, batch_size: int = 4096
) -> Tensor:
    """``log p`` (nats) of each row of ``x`` under the run's flow.

    Args:
        run: an opened run.
        x: ``(N, D)`` rows in the data's units; images: levels ``0 .. K-1``, flattened ``(N, D)``
            or ``(N, *data_shape)``.
        origin: the file name for error messages.
        seed: images: the seed of the uniform dequantization noise; the score is then
            ``log p(u)`` of the dequantized image, so ``-mean`` is the NLL that ``eval`` reports.
        batch_size: rows per forward pass.

    Returns:
        ``(N,)`` float64.

    Raises:
        DataError: wrong number of columns or shape, or image levels outside ``0 .. K-1``.
    """
    spec = run.spec
    image = spec.kind == "image"
    if image and x.ndim == 1 + len(spec.data_shape) and tuple(x.shape[1:]) == spec.data_shape:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2 or x.shape[1] != spec.features:
        found = f"{x.shape[1]} columns" if x.ndim == 2 else f"shape {x.shape}"
        want = f"{spec.features}-dimensional data"
        if image:
            want += f" (images {spec.data_shape}, or {spec.features} columns)"
        raise DataError(f"{origin} has {found}; the run was trained on {want}")
    tensors = [*run.flow.parameters(), *run.flow.buffers()]
    ref = next((v for v in tensors if v.is_floating_point()), torch.zeros(()))
    t = torch.as_tensor(x, dtype=ref.dtype)
    if image:
        levels = int(spec.levels or 0)
        bad = np.argwhere(~((x >= 0) & (x <= levels - 1)))  # NaN fails both comparisons
        if bad.size:
            i, j = (int(k) for k in bad[0])
            raise DataError(
                f"{origin}, row {i + 1}, column {j + 1}: value {x[i, j]} is not a pixel level "
                f"in 0..{levels - 1}"
            )
        t = t.floor().reshape(t.shape[0], *spec.data_shape)
        t = dequantize(t, levels, torch.Generator().manual_seed(seed))
    return log_likelihoods(run.flow, t, batch_size, ref.device)


@torch.no_grad()
def sample_rows(run: Run, n: int, *, temperature: float = 1.0, seed: int = 0) -> Tensor:
    """``n`` samples in the data's units, shape ``(n, *data_shape)`` (images: levels).

    Args:
        run: an opened run.
        n: number of samples.
        temperature: scales the base sample ``z`` (:meth:`flowforge.Flow.sample`; exact for a
            standard normal base: the density ``p_T(z) ∝ p(z)^(1/T^2)``); below 1 gives more
            typical samples.
        seed: the seed of the base samples.

    Raises:
        DataError: ``n < 1``, or a temperature that is not positive or that the base cannot
            apply.
    """
    if n < 1:
        raise DataError(f"-n must be positive, got {n}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise DataError(f"--temperature must be a positive number, got {temperature}")
    torch.manual_seed(seed)
    try:
        x = run.flow.sample(n, temperature=temperature).cpu()
    except ValueError as e:
        raise DataError(f"--temperature {temperature}: {e}") from None
    if run.spec.kind == "image":
        levels = int(run.spec.levels or 0)
        x = (x * levels).floor().clamp(0, levels - 1)
    return x.reshape(n, *run.spec.data_shape)
