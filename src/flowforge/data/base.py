"""Core data types: :class:`Dataset`, :class:`Standardizer`, :class:`DataError`, dequantization.

Everything a loader returns is a :class:`Dataset` holding float32 tensors; everything that goes
wrong on the user's side (a missing file, a bad cell, an unknown name) is a :class:`DataError`
with a one-line message that says what to do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "QUANTIZED_KINDS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "Standardizer",
    "default_data_dir",
    "dequantize",
    "fit_standardize",
    "random_split",
    "split_size",
]

#: Kinds whose examples are integer levels (``Dataset.levels``) that a flow sees dequantized to
#: ``[0, 1)``, in their own shape: images ``(C, H, W)`` and audio segments ``(1, T)``.
QUANTIZED_KINDS = ("image", "audio")

#: Relative standard deviation below which a column counts as constant (see :meth:`Standardizer.fit`).
CONSTANT_RTOL = 1e-10


class DataError(ValueError):
    """A user-facing data problem: missing file, unknown dataset, bad values or columns.

    The message is always one line that names the file, row or column at fault and what to do.
    """


def default_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the folder that holds the on-disk benchmark sets.

    Args:
        data_dir: an explicit folder; if ``None``, the environment variable ``FLOWFORGE_DATA``,
            else ``~/.flowforge/data``.

    Returns:
        The folder as an absolute, user-expanded path (it need not exist).
    """
    if data_dir is None:
        data_dir = os.environ.get("FLOWFORGE_DATA") or "~/.flowforge/data"
    return Path(data_dir).expanduser().absolute()


class Standardizer:
    """Per-feature affine standardisation ``y = (x - mean) / std``.

    Fitted on training rows only; the CLI stores it (:meth:`to_dict`) with a run and applies it
    again at evaluation, sampling and scoring time. A density ``q`` of standardised data is a
    density of the original data through ``log p(x) = log q(transform(x)) + log_abs_det()``.

    Args:
        mean: ``(*event_shape)`` per-feature mean.
        std: ``(*event_shape)`` per-feature standard deviation, strictly positive.

    Example:
        >>> import torch
        >>> s = Standardizer.fit(torch.tensor([[0.0, 5.0], [2.0, 5.0]]))
        >>> s.mean, s.std  # the constant second column keeps std = 1
        (tensor([1., 5.], dtype=torch.float64), tensor([1., 1.], dtype=torch.float64))
        >>> s.transform(torch.tensor([[2.0, 5.0]]))
        tensor([[1., 0.]])
        >>> s.log_abs_det().item() == 0.0
        True
    """

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        std = torch.as_tensor(std, dtype=torch.float64)
        if mean.shape != std.shape:
            raise DataError(
                f"Standardizer: mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape"
            )
        if (
            not bool(torch.isfinite(mean).all())
            or not bool((std > 0).all())
            or not bool(torch.isfinite(std).all())
        ):
            raise DataError("Standardizer: mean must be finite and std finite and > 0")
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, x: Tensor | np.ndarray) -> Standardizer:
        """Fit on rows ``x`` of shape ``(N, *event_shape)``, in float64.

        The standard deviation is the population one (``ddof=0``). A constant column (std at most
        ``1e-10`` times the column's largest absolute value, which absorbs rounding in the mean)
        gets ``std = 1``: it is only centred, never divided by ~0.
        """
        t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x).to(torch.float64)
        if t.ndim < 2 or t.shape[0] < 1:
            raise DataError(f"Standardizer.fit needs rows of shape (N, ...), got {tuple(t.shape)}")
        mean = t.mean(dim=0)
        std = t.std(dim=0, unbiased=False) if t.shape[0] > 1 else torch.zeros_like(mean)
        scale = t.abs().amax(dim=0)
        std = torch.where(std <= CONSTANT_RTOL * scale, torch.ones_like(std), std)
        return cls(mean, std)

    def transform(self, x: Tensor) -> Tensor:
        """Standardise ``x`` of shape ``(*, *event_shape)``; same dtype and device as ``x``."""
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo :meth:`transform`: ``x = y * std + mean``; same dtype and device as ``y``."""
        return y * self.std.to(y) + self.mean.to(y)

    def log_abs_det(self) -> Tensor:
        """Log-Jacobian of :meth:`transform` per row: ``-sum(log std)``, a float64 scalar."""
        return -torch.log(self.std).sum()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form: ``{"mean": [...], "std": [...], "shape": [...]}``."""
        return {
            "mean": self.mean.flatten().tolist(),
            "std": self.std.flatten().tolist(),
            "shape": list(self.mean.shape),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        """Rebuild from :meth:`to_dict` output."""
        try:
            shape = tuple(d.get("shape", [len(d["mean"])]))
            mean = torch.tensor(d["mean"], dtype=torch.float64).reshape(shape)
            std = torch.tensor(d["std"], dtype=torch.float64).reshape(shape)
        except (KeyError, TypeError, RuntimeError) as e:
            raise DataError(f"Standardizer.from_dict: malformed dictionary ({e})") from e
        return cls(mean, std)

    def __repr__(self) -> str:
        return f"Standardizer(dim={self.mean.numel()})"


def dequantize(v: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform dequantization of integer levels: ``u = (v + U(0, 1)) / K``.

    Args:
        v: ``(*)`` integer levels ``0 .. K-1`` (any float or integer dtype).
        levels: the number of levels ``K``.
        generator: random generator for the noise (on ``v``'s device).

    Returns:
        ``(*)`` values in ``[0, 1)``, float32 unless ``v`` is already floating.

    Example:
        >>> u = dequantize(torch.tensor([0.0, 16.0]), 17, torch.Generator().manual_seed(0))
        >>> bool(((u >= 0) & (u < 1)).all()), bool(u[1] >= 16 / 17)
        (True, True)

    References:
        Theis et al., "A note on the evaluation of generative models", ICLR 2016.
    """
    if levels < 1:
        raise DataError(f"dequantize: levels must be >= 1, got {levels}")
    dtype = v.dtype if v.is_floating_point() else torch.float32
    noise = torch.rand(v.shape, generator=generator, device=v.device, dtype=dtype)
    u = (v.to(dtype) + noise) / levels
    # float rounding of (K - 1 + 0.99999...) / K can give exactly 1.0: keep the interval open.
    return u.clamp_max(1.0 - torch.finfo(dtype).eps / 2)


def split_size(n: int, size: float | None, what: str) -> int:
    """Rows of a held-out split of ``n`` rows: ``size`` rows, or a fraction of ``n``.

    Args:
        n: rows in the whole table.
        size: ``None`` for 10%; a number in ``(0, 1)`` for that fraction; an integer ``>= 1``
            for that many rows. A fraction keeps at least one row.
        what: the option's name, for the message (``"n_val"``).

    Raises:
        DataError: a size that is not positive, a non-integer count, or more rows than ``n``.

    Example:
        >>> split_size(200, None, "n_val"), split_size(200, 0.25, "n_val"), split_size(200, 30, "n_val")
        (20, 50, 30)
    """
    if size is None:
        size = 0.1
    if not (isinstance(size, (int, float)) and math.isfinite(size) and size > 0):
        raise DataError(f"{what} must be a count >= 1 or a fraction in (0, 1), got {size}")
    if size < 1:
        return max(1, round(size * n))
    if size != int(size):
        raise DataError(f"{what} must be a whole number of rows or a fraction below 1, got {size}")
    if size >= n:
        raise DataError(f"{what} {int(size)} is not below the table's {n} rows")
    return int(size)


def random_split(
    x: np.ndarray,
    seed: int,
    frac_val: float | None = 0.1,
    frac_test: float | None = 0.1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffle rows with ``torch.Generator().manual_seed(seed)`` and split train/val/test.

    Validation and test each get :func:`split_size` rows (a fraction below 1: at least one row;
    a count ``>= 1``: that many), train the rest.

    Args:
        x: ``(N, ...)`` rows.
        seed: the split seed.
        frac_val: validation fraction or count (``None``: 10%).
        frac_test: test fraction or count (``None``: 10%).

    Returns:
        ``(train, val, test)`` views of ``x`` in shuffled order.

    Raises:
        DataError: bad sizes, or no training row left.
    """
    n = x.shape[0]
    n_val = split_size(n, frac_val, "n_val")
    n_test = split_size(n, frac_test, "n_test")
    if n - n_val - n_test < 1:
        raise DataError(
            f"too few rows to split: {n} rows leave no training row after {n_val} validation "
            f"and {n_test} test rows"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    x = x[perm]
    return x[: n - n_val - n_test], x[n - n_val - n_test : n - n_test], x[n - n_test :]


def as_float32(x: np.ndarray) -> Tensor:
    """A float32 torch tensor (contiguous, owning its memory) from a numpy array."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def fit_standardize(train: np.ndarray, *others: np.ndarray) -> tuple[Standardizer, list[Tensor]]:
    """Fit a :class:`Standardizer` on ``train`` and apply it to ``train`` and ``others``.

    The arithmetic is float64; the returned tensors are float32, in the order given.
    """
    std = Standardizer.fit(train)
    out = [
        std.transform(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))).float()
        for a in (train, *others)
    ]
    return std, out


@dataclass
class DatasetInfo:
    """What :func:`~flowforge.data.list_datasets` reports for one built-in dataset.

    Attributes:
        name: the name :func:`~flowforge.data.load_dataset` accepts.
        kind: ``"toy"``, ``"tabular"`` or ``"image"``.
        event_shape: shape of one example (the published one for on-disk sets).
        available: whether loading would work now (files present, optional packages installed).
        description: one line about the data and where it comes from.
        files: for on-disk sets, the exact files expected (``<data_dir>/power/data.npy``); empty
            for built-ins.
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    available: bool
    description: str
    files: str = ""


@dataclass(eq=False)  # tensors have no single truth value: datasets compare by identity
class Dataset:
    """A dataset with train / validation / test splits as float32 tensors.

    Attributes:
        name: dataset name (the file stem for user data).
        kind: ``"toy"``, ``"tabular"``, ``"image"`` or ``"audio"``.
        event_shape: ``(2,)``, ``(D,)``, ``(C, H, W)`` or ``(1, T)`` (audio segments).
        train: ``(N, *event_shape)``; ``None`` for toy sets, whose training data are fresh
            samples (:meth:`sample_train`).
        val: ``(N_val, *event_shape)``.
        test: ``(N_test, *event_shape)``.
        levels: images and audio only: the number ``K`` of quantisation levels (65,536 for
            16-bit audio); the tensors then hold the integer levels ``0 .. K-1`` as float32
            (see :func:`dequantize`).
        standardizer: set for user data and the scikit-learn tabular sets: train/val/test are
            already standardised with it (fitted on the training rows).
        sampler: toy sets only: ``sampler(n, generator) -> (n, 2)`` fresh draws.
        columns: user CSV/NPY data: the names of the selected columns, in order.
        sample_rate: audio only: samples per second of every segment.
        source: user files: the data file's fingerprint (``file``, ``rows``, ``columns``,
            ``sha256`` of its bytes, ``header``: whether the first CSV row was a header), which
            a run stores so that evaluating against a changed file is refused.
        context: a per-example context of each split (``"train"``, ``"val"``, ``"test"``):
            ``(N, C)`` float32, row ``i`` belonging to row ``i`` of that split (an audio
            segment's mel frames, flattened); a flow trained on the set is conditioned on it
            (``log p(x | c)``), and :meth:`iter_epoch_rows` batches it with the rows. ``None``:
            no context (unconditional). Toy sets, which draw fresh samples, take none.
    """

    name: str
    kind: str
    event_shape: tuple[int, ...]
    train: Tensor | None
    val: Tensor
    test: Tensor
    levels: int | None = None
    standardizer: Standardizer | None = None
    sampler: Callable[[int, torch.Generator], Tensor] | None = field(
        default=None, repr=False, compare=False
    )
    columns: list[str] | None = None
    source: dict[str, Any] | None = None
    sample_rate: int | None = None
    context: dict[str, Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.context is None:
            return
        if self.train is None or set(self.context) != {"train", "val", "test"}:
            raise DataError(
                f"dataset {self.name!r}: a context needs training rows and one tensor per split "
                f"(train, val, test), got splits {sorted(self.context)}"
            )
        width = {int(c.shape[-1]) for c in self.context.values()}
        for split, c in self.context.items():
            rows = getattr(self, split)
            if c.dim() != 2 or c.shape[0] != rows.shape[0] or len(width) != 1:
                raise DataError(
                    f"dataset {self.name!r}: expected a {split} context of shape "
                    f"({rows.shape[0]}, C) with one C for every split, got {tuple(c.shape)}"
                )

    @property
    def dim(self) -> int:
        """Number of scalar dimensions of one example, ``prod(event_shape)``."""
        return math.prod(self.event_shape)

    @property
    def context_dim(self) -> int:
        """Size ``C`` of the per-example context (0: none)."""
        return 0 if self.context is None else int(self.context["train"].shape[-1])

    def context_of(self, split: str) -> Tensor | None:
        """The ``(N, C)`` context of a split's rows (``None``: the set has none)."""
        return None if self.context is None else self.context[split]

    def sample_train(self, n: int, generator: torch.Generator) -> Tensor:
        """Draw a training batch of ``n`` examples.

        Toy sets: ``n`` fresh samples from the density. Others: ``n`` training rows drawn uniformly
        with replacement.

        Args:
            n: batch size.
            generator: random generator (its device is used for toy draws and indices).

        Returns:
            ``(n, *event_shape)`` float32.
        """
        return self.sample_train_rows(n, generator)[0]

    def sample_train_rows(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
        """:meth:`sample_train` with each drawn row's context: the same draw.

        Returns:
            ``(x, c)``: ``(n, *event_shape)`` rows and their ``(n, C)`` context (``None`` when
            the set has none; a toy set's fresh samples have none).

        Example:
            >>> ds = Dataset("d", "tabular", (1,), torch.arange(5.0)[:, None], torch.zeros(1, 1),
            ...              torch.zeros(1, 1), context={"train": 10 * torch.arange(5.0)[:, None],
            ...              "val": torch.zeros(1, 1), "test": torch.zeros(1, 1)})
            >>> x, c = ds.sample_train_rows(4, torch.Generator().manual_seed(0))
            >>> torch.equal(c, 10 * x), torch.equal(x, ds.sample_train(4, torch.Generator().manual_seed(0)))
            (True, True)
        """
        if self.sampler is not None:
            return self.sampler(n, generator), None
        if self.train is None:
            raise DataError(f"dataset {self.name!r} has neither training rows nor a sampler")
        idx = torch.randint(self.train.shape[0], (n,), generator=generator, device=generator.device)
        context = self.context_of("train")
        x = self.train[idx.to(self.train.device)]
        return x, None if context is None else context[idx.to(context.device)]

    def iter_epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
        """Iterate once over the training rows in a random order, in batches.

        The last batch may be smaller. Toy sets have no fixed training set: use
        :meth:`sample_train`.

        Yields:
            ``(B, *event_shape)`` batches with ``B <= batch_size``.
        """
        for x, _ in self.iter_epoch_rows(batch_size, generator):
            yield x

    def iter_epoch_rows(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor | None]]:
        """:meth:`iter_epoch` with each batch's context: the same order, the same batches.

        Yields:
            ``(x, c)``: ``(B, *event_shape)`` rows and their ``(B, C)`` context (``None``
            when the set has none).

        Example:
            >>> ds = Dataset("d", "tabular", (1,), torch.arange(5.0)[:, None], torch.zeros(1, 1),
            ...              torch.zeros(1, 1), context={"train": 10 * torch.arange(5.0)[:, None],
            ...              "val": torch.zeros(1, 1), "test": torch.zeros(1, 1)})
            >>> x, c = next(ds.iter_epoch_rows(3, torch.Generator().manual_seed(0)))
            >>> torch.equal(c, 10 * x)
            True
        """
        if self.train is None:
            raise DataError(
                f"dataset {self.name!r} draws fresh samples and has no epochs; use sample_train"
            )
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        perm = torch.randperm(self.train.shape[0], generator=generator, device=generator.device)
        perm = perm.to(self.train.device)
        context = self.context_of("train")
        for start in range(0, perm.numel(), batch_size):
            idx = perm[start : start + batch_size]
            yield self.train[idx], None if context is None else context[idx.to(context.device)]

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{k}={'fresh' if t is None else t.shape[0]}"
            for k, t in (("train", self.train), ("val", self.val), ("test", self.test))
        )
        return (
            f"Dataset(name={self.name!r}, kind={self.kind!r}, event_shape={self.event_shape}, "
            f"{sizes}, levels={self.levels}, standardized={self.standardizer is not None})"
        )
