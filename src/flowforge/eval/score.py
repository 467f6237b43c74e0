"""Per-row log-likelihoods of new data under a trained run, and samples from it.

Rows are in the data's own units: user and scikit-learn tabular data unstandardised (the
run's training statistics are applied inside the flow, so the score is ``log p`` of the raw
row), images as pixel levels ``0 .. K-1``, either flattened ``(N, D)`` (a CSV, one image per
row) or in the run's image shape ``(N, C, H, W)`` (a ``.npy`` file, as ``flowforge sample``
writes it).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from flowforge.core.flow import Flow
from flowforge.core.memory import too_big
from flowforge.data import DataError, dequantize, read_table
from flowforge.data.base import Standardizer
from flowforge.data.user import read_header
from flowforge.eval.likelihood import (
    log_likelihoods,
    standardized_log_likelihoods,
    without_standardize,
)
from flowforge.runs import Run
from flowforge.transforms.transformer_autoregressive import guided

__all__ = [
    "class_contexts",
    "label_index",
    "read_labels",
    "read_rows",
    "row_class_contexts",
    "run_classes",
    "sample_rows",
    "score_rows",
]


def _like(flow: torch.nn.Module) -> Tensor:
    """A tensor with the device and dtype of the flow's parameters."""
    p = next(flow.parameters(), None)
    return torch.zeros(()) if p is None else p


def run_classes(run: Run) -> int:
    """The number of classes ``K`` of a class-conditional run (``flowforge train --condition
    class``: a one-hot context of size ``K``); 0 for any other run (a vocoder's context is
    mel frames, not classes)."""
    config = run.record.get("config") or {}
    if config.get("condition") != "class":
        return 0
    return int(run.spec.kwargs.get("context") or 0)


def class_contexts(run: Run, n: int, label: int | None) -> Tensor | None:
    """The ``(n, K)`` one-hot contexts of ``n`` samples of a class-conditional run: all of
    class ``label``, or (``None``) the classes ``0, 1, .., K-1`` in turn; ``None`` for an
    unconditional run without ``label``.

    Raises:
        DataError: ``label`` for a run that is not class-conditional, or outside ``0..K-1``.
    """
    classes = run_classes(run)
    if label is not None and classes == 0:
        raise DataError(
            f"--class {label} needs a class-conditional run (flowforge train --condition "
            f"class); {run.files.root} was trained without classes"
        )
    if classes == 0:
        return None
    if label is not None and not 0 <= label < classes:
        raise DataError(f"--class: expected a class in 0..{classes - 1}, got {label}")
    rows = torch.arange(n) % classes if label is None else torch.full((n,), label)
    return torch.eye(classes)[rows]  # (n, K)


def row_class_contexts(run: Run, labels: np.ndarray, origin: str) -> Tensor:
    """The ``(N, K)`` one-hot contexts of ``N`` rows of a class-conditional run, each row's
    own class ``labels[i]`` (integers ``0 .. K-1`` in any numeric dtype).

    Example:
        >>> import types
        >>> run = types.SimpleNamespace(record={"config": {"condition": "class"}},
        ...     spec=types.SimpleNamespace(kwargs={"context": 3}))
        >>> row_class_contexts(run, np.array([2.0, 0.0]), "rows.csv")
        tensor([[0., 0., 1.],
                [1., 0., 0.]])

    Raises:
        DataError: a label that is not an integer class ``0 .. K-1`` (naming its row), or a
            run that is not class-conditional.
    """
    classes = run_classes(run)
    if classes == 0:
        raise DataError(
            f"{origin}: per-row classes need a class-conditional run (flowforge train "
            f"--condition class); this run was trained without classes"
        )
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~((labels >= 0) & (labels <= classes - 1) & (np.floor(labels) == labels)))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{origin}, row {i + 1}: expected a class in 0..{classes - 1}, got {labels[i]:g}"
        )
    return torch.eye(classes)[torch.as_tensor(labels.astype(np.int64))]  # (N, K)


def _run_names(run: Run) -> list[str] | None:
    """The column names a run was trained on, or ``None`` when its file had no header."""
    data = run.record.get("data") or {}
    names = data.get("columns") or run.spec.columns
    if not names:
        return None
    source = data.get("source")
    if isinstance(source, dict):
        return list(names) if source.get("header") else None
    # a run written before fingerprints: index names mean the file had no header
    return None if all(n.isdigit() for n in names) else list(names)


def _match_columns(
    run: Run, names: list[str], got: list[str], selected: bool, origin: str
) -> list[str]:
    """The input's columns, by the run's names, in the run's order (see :func:`read_rows`)."""
    missing = [n for n in names if n not in got]
    extra = [n for n in got if n not in names]
    if missing or (extra and not selected):
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if extra and not selected:
            parts.append(f"extra {', '.join(map(repr, extra))}")
        hint = ""
        if extra and not selected and len(extra) == 1 and not missing:
            hint = f" (a label column is left out with --labels {extra[0]})"
        raise DataError(
            f"{origin}: its columns do not match the run's ({'; '.join(parts)}); the run was "
            f"trained on {', '.join(map(repr, names))}{hint}"
        )
    return names


def read_rows(
    run: Run,
    path: str | os.PathLike[str],
    columns: list[str] | None,
    header: bool | None = None,
    exclude: str | Mapping[str, str] | None = None,
) -> np.ndarray:
    """The rows of a ``.csv`` / ``.npy`` file to score with ``run`` (see :func:`score_rows`).

    Columns are matched by name when both the run's training file and this file have a header:
    they are taken in the run's order whatever their order here; a missing name is an error, and
    so is an extra one unless the run was trained on a selection (``--columns``), whose other
    columns are ignored. A file without a header (``.npy``, ``--no-header``) is taken by
    position (the run's ``columns`` indices when the run was trained on a selection of a file
    without header). An image run also takes a ``.npy`` array of shape ``(N, C, H, W)``.

    Args:
        run: an opened run.
        path: the file.
        columns: the run's ``--columns`` selection (``None``: all columns).
        header: CSV only: whether the first row is a header (``None``: the rule of
            :mod:`flowforge.data.user`, and a first row equal to the run's column names).
        exclude: columns that are not model inputs, by the option that names them
            (``{"--labels": "y", "--class-column": "label"}``; a single name stands for
            ``--labels``): each its name in a file with a header, else its 0-based index.

    Raises:
        DataError: a missing or malformed file, duplicate names, or names that do not match.
    """
    p = Path(path).expanduser()
    skipped = _excluded(exclude)
    if run.spec.kind == "image" and p.suffix.lower() == ".npy" and p.is_file():
        try:
            x = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as e:
            msg = " ".join(str(e).split())
            raise DataError(f"{p}: not a plain numeric .npy array ({msg})") from None
        if x.ndim > 2:
            if x.dtype.kind not in "biuf":
                raise DataError(f"{p}: expected a numeric array, got dtype {x.dtype}")
            if skipped:
                flag = next(iter(skipped))
                raise DataError(f"{p}: an array of images has no column for {flag} to take")
            return np.asarray(x, dtype=np.float64)
    names = _run_names(run)
    stored = (run.record.get("data") or {}).get("columns") or run.spec.columns
    if header is None and stored and p.suffix.lower() == ".csv" and p.is_file():
        try:  # a first row of exactly the run's names (``0,1`` that ``sample`` wrote) is a header
            first = read_header(p, header=True)
        except DataError:
            first = None
        if first is not None and sorted(n for n in first if n not in skipped.values()) == sorted(
            stored
        ):
            header = True
    got = read_header(p, header)
    if got is None:  # no header: by position, as the run's selection of indices says
        if not skipped:
            x, _ = read_table(p, columns=None if names else columns, header=False)
            return x
        x, _ = read_table(p, columns=None, header=False)
        skip = [label_index(c, x.shape[1], str(path), flag) for flag, c in skipped.items()]
        if names is None and columns is not None:  # the run's indices are the file's
            for (flag, _), i in zip(skipped.items(), skip, strict=True):
                if str(i) in columns:
                    raise DataError(f"{flag} {i}: column {i} is an input of the run")
            return x[:, [int(c) for c in columns]]
        return np.delete(x, skip, axis=1)
    for flag, col in skipped.items():
        if col not in got:
            raise DataError(
                f"{flag} {col!r}: {path} has no such column (its columns: "
                f"{', '.join(map(repr, got))})"
            )
        if col in (columns or []) or (columns is None and col in (names or [])):
            raise DataError(f"{flag} {col!r} is an input column of the run")
    got = [n for n in got if n not in skipped.values()]
    if names is None:  # the run has no names to match: by position
        x, _ = read_table(p, columns=columns or got, header=True)
        return x
    picked = _match_columns(run, names, got, columns is not None, str(path))
    x, _ = read_table(p, columns=picked, header=True)
    return x


def _excluded(exclude: str | Mapping[str, str] | None) -> dict[str, str]:
    """``read_rows``'s ``exclude`` as option -> column (a single name is ``--labels``'s).

    Raises:
        DataError: two options name the same column.
    """
    if exclude is None:
        return {}
    out = {"--labels": exclude} if isinstance(exclude, str) else dict(exclude)
    if len(set(out.values())) < len(out):
        raise DataError(
            f"{' and '.join(out)} name the same column {next(iter(out.values()))!r}; each "
            f"takes its own column"
        )
    return out


def label_index(label: str, width: int, origin: str, flag: str = "--labels") -> int:
    """The 0-based index of the label column ``label`` in a file of ``width`` columns without a
    header (``flag``, ``--labels`` say, then names a column by its index).

    Raises:
        DataError: ``label`` is not an index in ``0 .. width - 1``.
    """
    try:
        index = int(label)
    except ValueError:
        index = -1
    if not 0 <= index < width:
        raise DataError(
            f"{flag} {label!r}: {origin} has no header, so the column is given by its "
            f"0-based index, 0..{width - 1}"
        )
    return index


def read_labels(
    path: str | os.PathLike[str], label: str, header: bool | None, flag: str = "--labels"
) -> np.ndarray:
    """The label column ``label`` of a ``.csv`` / ``.npy`` file (by name with a header, else
    by 0-based index) as float64 ``(N,)``; ``flag`` is the option that named it (messages).

    Raises:
        DataError: a missing column or a value that is not a number.
    """
    names = read_header(path, header)
    if names is not None:
        x, _ = read_table(path, columns=[label], header=True)
        return x[:, 0]
    x, _ = read_table(path, columns=None, header=False)
    return x[:, label_index(label, x.shape[1], str(path), flag)]


def score_rows(
    run: Run,
    x: np.ndarray,
    *,
    origin: str = "input",
    seed: int = 0,
    batch_size: int = 4096,
    context: Tensor | None = None,
) -> Tensor:
    """``log p`` (nats) of each row of ``x`` under the run's flow (``log p(x | c)`` given
    each row's context).

    Args:
        run: an opened run.
        x: ``(N, D)`` rows in the data's units; images: integer levels ``0 .. K-1`` (any
            numeric dtype; a fraction is refused), flattened ``(N, D)`` or
            ``(N, *data_shape)``.
        origin: the file name for error messages.
        seed: images: the seed of the uniform dequantization noise; the score is then
            ``log p(u)`` of the dequantized image, so ``-mean`` is the NLL that ``eval`` reports.
        batch_size: rows per forward pass.
        context: ``(N, C)``, each row's context (a class-conditional image run's one-hot
            classes, :func:`row_class_contexts`); ``None`` for an unconditional run.

    Returns:
        ``(N,)`` float64.

    Raises:
        DataError: no rows, wrong number of columns or shape, or image values that are not
            integer levels ``0 .. K-1``.
    """
    spec = run.spec
    image = spec.kind == "image"
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{origin} has no rows to score (shape {tuple(x.shape)})")
    if image and x.ndim == 1 + len(spec.data_shape) and tuple(x.shape[1:]) == spec.data_shape:
        x = x.reshape(x.shape[0], -1)
    if x.ndim != 2 or x.shape[1] != spec.features:
        found = f"{x.shape[1]} columns" if x.ndim == 2 else f"shape {x.shape}"
        want = f"{spec.features}-dimensional data"
        if image:
            want += f" (images {spec.data_shape}, or {spec.features} columns)"
        raise DataError(f"{origin} has {found}; the run was trained on {want}")
    if context is not None and (not image or context.shape != (x.shape[0], run_classes(run))):
        raise DataError(
            f"{origin}: expected one context row of {run_classes(run)} classes per image "
            f"({x.shape[0]} rows), got shape {tuple(context.shape)}"
        )
    tensors = [*run.flow.parameters(), *run.flow.buffers()]
    ref = next((v for v in tensors if v.is_floating_point()), torch.zeros(()))
    if not image:
        std = None if spec.standardizer is None else Standardizer.from_dict(spec.standardizer)
        ll = _table_scores(run.flow, x, std, batch_size, ref.device)
        overflow = ~torch.isfinite(ll)
        if overflow.any() and ref.dtype != torch.float64:
            # rows far out (1e30 in a float32 run: log p ~ -5e59) overflow the flow's dtype;
            # they are scored again by a float64 copy of the flow, never reported as -inf
            flow64 = copy.deepcopy(run.flow).double()
            ll[overflow] = _table_scores(flow64, x[overflow.numpy()], std, batch_size, ref.device)
        return ll
    t = torch.as_tensor(x, dtype=ref.dtype)
    if image:
        levels = int(spec.levels or 0)
        # NaN fails every comparison; a fraction is no level (never floored in silence)
        bad = np.argwhere(~((x >= 0) & (x <= levels - 1) & (np.floor(x) == x)))
        if bad.size:
            i, j = (int(k) for k in bad[0])
            raise DataError(
                f"{origin}, row {i + 1}, column {j + 1}: value {x[i, j]} is not a pixel level: "
                f"an image run scores integer levels 0..{levels - 1} (any numeric dtype, e.g. "
                f"uint8), not floats in [0, 1)"
            )
        t = t.reshape(t.shape[0], *spec.data_shape)
        t = dequantize(t, levels, torch.Generator().manual_seed(seed))
    if context is not None:
        context = context.to(ref.dtype)
    return log_likelihoods(run.flow, t, batch_size, ref.device, context=context)


def _table_scores(
    flow: torch.nn.Module,
    x: np.ndarray,
    std: Standardizer | None,
    batch_size: int,
    device: torch.device,
) -> Tensor:
    """``log p`` (float64, ``(N,)``) of table rows ``x`` under ``flow``, computed in the flow's
    dtype (standardised in float64 with ``std`` first when the flow starts with the run's
    statistics)."""
    tensors = [*flow.parameters(), *flow.buffers()]
    dtype = next((v.dtype for v in tensors if v.is_floating_point()), torch.float32)
    if std is not None and without_standardize(flow) is not None:
        # standardise in float64 with the stored statistics, then cast (never raw float32)
        z = std.transform(torch.as_tensor(x, dtype=torch.float64).reshape(x.shape[0], -1))
        return standardized_log_likelihoods(flow, z, std.log_abs_det(), batch_size, device)
    return log_likelihoods(flow, torch.as_tensor(x, dtype=dtype), batch_size, device)


@torch.no_grad()
def sample_rows(
    run: Run,
    n: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    denoise: bool = False,
    guidance: float = 0.0,
    attention_temperature: float = 1.0,
    label: int | None = None,
    chunk: int = 65_536,
) -> Tensor:
    """``n`` samples in the data's units, shape ``(n, *data_shape)`` (images: levels).

    Args:
        run: an opened run.
        n: number of samples.
        temperature: scales the base sample ``z`` (:meth:`flowforge.Flow.sample`; exact for a
            standard normal base: the density ``p_T(z) ∝ p(z)^(1/T^2)``); below 1 gives more
            typical samples.
        seed: the seed of the base samples.
        denoise: move each sample one step along the flow's score, ``x + sigma^2 grad log
            p(x)`` (:meth:`flowforge.Flow.denoise`), ``sigma`` the run's training ``noise``.
        guidance: TarFlow runs: the guidance weight (:func:`flowforge.transforms.guided`; the
            weak model is the flow given the null class (class-conditional runs) with its
            attention logits divided by ``attention_temperature``); 0: none.
        attention_temperature: the weak model's attention temperature (above 1 for an
            unconditional run; 1 gives plain class guidance).
        label: class-conditional runs (:func:`run_classes`): the class of every sample;
            ``None``: the classes in turn (sample ``i`` of class ``i mod K``).
        chunk: samples drawn per pass of the flow (the same samples as one pass for
            ``n <= chunk``).

    Raises:
        DataError: ``n < 1``, more samples than fit in memory, a temperature that is not
            positive or that the base cannot apply or that takes samples beyond the dtype, ``denoise`` for a run trained without
            noise, guidance that the run's flow cannot take, or a ``label`` that is not one
            of the run's classes.
    """
    if n < 1:
        raise DataError(f"-n must be positive, got {n}")
    context = class_contexts(run, n, label)
    if not temperature > 0 or not math.isfinite(temperature):
        raise DataError(f"--temperature must be a positive number, got {temperature}")
    sigma = float(run.record.get("config", {}).get("noise", 0.0) or 0.0)
    if denoise and sigma <= 0:
        raise DataError("--denoise needs a run trained with Gaussian noise (--noise > 0)")
    values = n * math.prod(run.spec.data_shape)
    why = too_big(16.0 * values, f"{n} samples of {math.prod(run.spec.data_shape)} values")
    if why is not None:  # the samples (float32) and the copies that writing them makes
        raise DataError(f"-n {n}: {why}; draw fewer (several runs with different --seed)")
    chunks = []
    with contextlib.ExitStack() as stack:
        if guidance != 0:
            try:
                stack.enter_context(guided(run.flow, guidance, attention_temperature))
            except ValueError as e:
                raise DataError(f"--guidance {guidance}: {e}") from None
        torch.manual_seed(seed)
        try:
            for start in range(0, n, chunk):  # the flow's activations for one chunk at a time
                if context is None:
                    part = run.flow.sample(min(chunk, n - start), temperature=temperature)
                else:  # one sample per row's class: (1, B, *event) -> (B, *event)
                    c = context[start : start + chunk].to(_like(run.flow))
                    part = run.flow.sample(1, c, temperature=temperature)[0]
                chunks.append(part)
        except ValueError as e:
            raise DataError(f"--temperature {temperature}: {e}") from None
    for i, part in enumerate(chunks):  # outside the guidance: the score is the flow's own
        if denoise:
            if not isinstance(run.flow, Flow):  # a table's defensive mixture: never noised
                raise DataError("--denoise applies to image runs trained with --noise")
            rows = None if context is None else context[i * chunk : (i + 1) * chunk].to(part)
            part = run.flow.denoise(part, sigma, rows)
        part = part.cpu()
        if run.spec.kind == "image":
            levels = int(run.spec.levels or 0)
            part = (part * levels).floor().clamp(0, levels - 1)
        chunks[i] = part
    x = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    bad = int((~torch.isfinite(x.reshape(n, -1))).any(1).sum())
    if bad:  # --temperature 1e300 wrote inf samples without a word
        raise DataError(
            f"{bad} of {n} samples are not finite in the run's dtype ({x.dtype}) at "
            f"--temperature {temperature:g}; nothing was written (a smaller temperature)"
        )
    return x.reshape(n, *run.spec.data_shape)
