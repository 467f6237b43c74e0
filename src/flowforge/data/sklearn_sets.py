"""Small built-in datasets shipped with scikit-learn (no download needed).

- ``digits``: the 1,797 8x8 handwritten digits, 17 grey levels ``0..16``, kind ``"image"``,
  event shape ``(1, 8, 8)``; the tensors hold the integer levels as float32 (``levels=17``;
  dequantize with :func:`~flowforge.data.dequantize`; a uniform model scores
  ``log2(17) = 4.09`` bits/dim).
- ``breast_cancer`` (30-D), ``wine`` (13-D), ``iris`` (4-D), ``diabetes`` (10-D, the raw
  features): kind ``"tabular"``, standardised with the training rows' mean and std
  (``Dataset.standardizer``).

All are split at random after a shuffle seeded by ``seed``: 80/10/10 (train/validation/test)
by default, or ``n_val``/``n_test`` rows (a count, or a fraction below 1). scikit-learn is imported lazily (the ``cli`` extra).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .base import DataError, Dataset, as_float32, fit_standardize, random_split

__all__ = [
    "CLASSIFIED_DATASETS",
    "SKLEARN_DATASETS",
    "class_context",
    "load_sklearn_dataset",
    "sklearn_available",
]

#: name -> (kind, event_shape, description)
SKLEARN_DATASETS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "digits": ("image", (1, 8, 8), "scikit-learn 8x8 digits, 17 levels (1,797 images)"),
    "breast_cancer": ("tabular", (30,), "scikit-learn Wisconsin breast cancer (569 rows)"),
    "wine": ("tabular", (13,), "scikit-learn wine recognition (178 rows)"),
    "iris": ("tabular", (4,), "scikit-learn iris (150 rows)"),
    "diabetes": ("tabular", (10,), "scikit-learn diabetes, raw features (442 rows)"),
}

DIGITS_LEVELS = 17

#: The image sets whose rows carry a class label (``flowforge train --condition class``):
#: name -> number of classes.
CLASSIFIED_DATASETS: dict[str, int] = {"digits": 10}


def sklearn_available() -> bool:
    """Whether scikit-learn can be imported."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


def _sklearn_datasets() -> ModuleType:
    try:
        from sklearn import datasets
    except ImportError as e:
        raise DataError(
            "the scikit-learn datasets need scikit-learn: pip install flowforge[cli]"
        ) from e
    return datasets


def _features(name: str) -> np.ndarray:
    ds = _sklearn_datasets()
    loaders: dict[str, Callable[[], Any]] = {
        "digits": lambda: ds.load_digits().images,
        "breast_cancer": lambda: ds.load_breast_cancer().data,
        "wine": lambda: ds.load_wine().data,
        "iris": lambda: ds.load_iris().data,
        "diabetes": lambda: ds.load_diabetes(scaled=False).data,
    }
    return np.asarray(loaders[name](), dtype=np.float64)


def load_sklearn_dataset(
    name: str, seed: int = 0, n_val: float | None = None, n_test: float | None = None
) -> Dataset:
    """Load one of :data:`SKLEARN_DATASETS`, split by ``seed`` (80/10/10 by default).

    Args:
        name: dataset name (lower case).
        seed: seed of the shuffle before the split.
        n_val: validation rows, a count or a fraction below 1 (``None``: 10%).
        n_test: test rows, a count or a fraction below 1 (``None``: 10%).

    Returns:
        A :class:`Dataset`; ``digits`` holds integer levels ``(N, 1, 8, 8)`` with ``levels=17``,
        the tabular sets hold standardised ``(N, D)`` rows and their ``standardizer``.
    """
    if name not in SKLEARN_DATASETS:
        raise DataError(
            f"unknown scikit-learn dataset {name!r}; valid: {', '.join(SKLEARN_DATASETS)}"
        )
    kind, event_shape, _ = SKLEARN_DATASETS[name]
    x = _features(name).reshape(-1, *event_shape)
    train, val, test = random_split(x, seed, n_val, n_test)
    if kind == "image":
        return Dataset(
            name=name,
            kind=kind,
            event_shape=event_shape,
            train=as_float32(train),
            val=as_float32(val),
            test=as_float32(test),
            levels=DIGITS_LEVELS,
        )
    std, t = fit_standardize(train, val, test)
    return Dataset(
        name=name,
        kind=kind,
        event_shape=event_shape,
        train=t[0],
        val=t[1],
        test=t[2],
        standardizer=std,
    )


def class_context(
    ds: Dataset, seed: int = 0, n_val: float | None = None, n_test: float | None = None
) -> Dataset:
    """``ds`` with each row's class as its one-hot context ``(N, K)``: a flow trained on it is
    class-conditional, ``p(x | class)``.

    The labels are split exactly as :func:`load_sklearn_dataset` split the rows (the same
    shuffle of the same seed), so row ``i`` of a split gets its own label.

    Args:
        ds: a set of :data:`CLASSIFIED_DATASETS`, loaded with ``seed``, ``n_val``, ``n_test``.
        seed: the seed it was split with.
        n_val: its validation rows (as given to the loader).
        n_test: its test rows.

    Raises:
        DataError: a set without class labels.

    Example:
        >>> ds = class_context(load_sklearn_dataset("digits", seed=1), seed=1)
        >>> ds.context_of("train").shape, ds.context_of("test").sum(-1).unique().tolist()
        (torch.Size([1437, 10]), [1.0])
    """
    if ds.name not in CLASSIFIED_DATASETS or ds.train is None:
        raise DataError(
            f"--condition class needs class labels, which only "
            f"{', '.join(CLASSIFIED_DATASETS)} have; {ds.name!r} has none"
        )
    classes = CLASSIFIED_DATASETS[ds.name]
    labels = np.asarray(_sklearn_datasets().load_digits().target, dtype=np.int64)
    splits = random_split(labels, seed, n_val, n_test)
    context = {k: as_float32(np.eye(classes)[y]) for k, y in zip(("train", "val", "test"), splits)}
    for k, rows in (("train", ds.train), ("val", ds.val), ("test", ds.test)):
        if context[k].shape[0] != rows.shape[0]:
            raise DataError(
                f"{ds.name!r}: expected {rows.shape[0]} {k} labels (the rows' split), got "
                f"{context[k].shape[0]}; load the set with the seed and sizes given here"
            )
    return dataclasses.replace(ds, context=context)
