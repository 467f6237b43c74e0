"""One entry point for every dataset: :func:`load_dataset` and :func:`list_datasets`."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from flowforge.core.memory import too_big

from .audio import load_audio_folder
from .base import DataError, Dataset, DatasetInfo, default_data_dir
from .images import IMAGE_DATASETS, image_available, image_files, load_cifar10, load_mnist
from .sklearn_sets import SKLEARN_DATASETS, load_sklearn_dataset, sklearn_available
from .speech import load_speech, speech_available, speech_folder
from .tabular import TABULAR_DATASETS, load_tabular, tabular_available, tabular_files
from .toy import TOY_DATASETS, TOY_DESCRIPTIONS, sample_toy
from .user import load_user_file

__all__ = ["dataset_names", "list_datasets", "load_dataset", "reads_data_dir"]


def dataset_names() -> list[str]:
    """Names of all built-in datasets, in display order (deprecated: use
    ``[d.name for d in list_datasets()]``)."""
    warnings.warn(
        "flowforge.data.dataset_names() is deprecated; use "
        "[d.name for d in flowforge.data.list_datasets()]",
        DeprecationWarning,
        stacklevel=2,
    )
    return _builtin_names()


def _builtin_names() -> list[str]:
    """Names of all built-in datasets, in display order (what :func:`list_datasets` describes)."""
    return [*TOY_DATASETS, *SKLEARN_DATASETS, *TABULAR_DATASETS, *IMAGE_DATASETS, *AUDIO_DATASETS]


#: name -> (event shape, description) of the built-in audio sets
AUDIO_DATASETS: dict[str, tuple[tuple[int, int], str]] = {
    "speech": (
        (1, 4096),
        "40 English sentences spoken by espeak-ng here (synthesised once, cached), 16 kHz, "
        "16-bit, segments of 4,096 samples",
    ),
}


def _stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed derived from ``(seed, stream)``: independent streams for val and test."""
    digest = hashlib.sha256(f"flowforge:{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _load_toy(name: str, seed: int, n_val: int, n_test: int) -> Dataset:
    if n_val < 1 or n_test < 1:
        raise DataError(f"{name}: n_val and n_test must be >= 1, got {n_val} and {n_test}")

    def draw(n: int, stream: str) -> torch.Tensor:
        return sample_toy(name, n, torch.Generator().manual_seed(_stream_seed(seed, stream)))

    def sampler(n: int, generator: torch.Generator) -> torch.Tensor:
        return sample_toy(name, n, generator)

    return Dataset(
        name=name,
        kind="toy",
        event_shape=(2,),
        train=None,
        val=draw(n_val, "val"),
        test=draw(n_test, "test"),
        sampler=sampler,
    )


def reads_data_dir(name: str | os.PathLike[str]) -> bool:
    """Whether dataset ``name`` is read from the data folder (``data_dir``): the MAF tabular
    benchmark sets, MNIST, CIFAR-10 and the cached speech set; not the toy, scikit-learn or
    user data.

    Example:
        >>> reads_data_dir("power"), reads_data_dir("moons"), reads_data_dir("rows.csv")
        (True, False, False)
    """
    key = os.fspath(name).lower()
    return key in TABULAR_DATASETS or key in ("mnist", "cifar10", "speech")


def load_dataset(
    name_or_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    columns: Sequence[str | int] | None = None,
    n_val: float | None = None,
    n_test: float | None = None,
    header: bool | None = None,
) -> Dataset:
    """Load a built-in dataset by name (case-insensitive), a user ``.csv``/``.npy`` file, or a
    folder of WAV / FLAC clips (:func:`~flowforge.data.audio.load_audio_folder`: 16 kHz,
    segments of 4,096 samples; LJSpeech's layout works as it is).

    Args:
        name_or_path: a name from :func:`list_datasets` or a path to a ``.csv``/``.npy`` file.
        data_dir: folder of the on-disk sets (MAF tabular benchmark, MNIST, CIFAR-10); default
            ``$FLOWFORGE_DATA``, else ``~/.flowforge/data``.
        seed: seed of the split (user files, scikit-learn sets) or of the validation and test
            samples (toy sets); the published splits of on-disk sets do not depend on it.
        columns: user files only: columns to use, by header name or 0-based index.
        n_val: validation rows. Toy sets: a count of fresh samples (default 10,000); user
            files and scikit-learn sets: a count, or a fraction below 1 (default 10%); on-disk
            benchmark sets and MNIST / CIFAR-10 keep their published splits and refuse it.
        n_test: test rows, like ``n_val``.
        header: user CSV files only: whether the first row is a header (``None``: a header
            when a cell is not a number or the row is the column numbers; see
            :mod:`flowforge.data.user`).

    Returns:
        The :class:`Dataset`.

    Raises:
        DataError: unknown name, missing or malformed file, bad values or columns.

    Example:
        >>> ds = load_dataset("moons", n_val=100, n_test=200)
        >>> ds.kind, ds.event_shape, ds.train, tuple(ds.test.shape)
        ('toy', (2,), None, (200, 2))
        >>> ds.sample_train(8, torch.Generator().manual_seed(0)).shape
        torch.Size([8, 2])
    """
    text = os.fspath(name_or_path)
    key = text.lower()
    builtin = key in _builtin_names()
    if columns is not None and builtin:
        raise DataError(f"columns= applies to user .csv/.npy files, not to the built-in {key!r}")
    if header is not None and builtin:
        raise DataError(f"header= applies to user .csv files, not to the built-in {key!r}")
    fixed = key in TABULAR_DATASETS or key in ("mnist", "cifar10", *AUDIO_DATASETS)
    if fixed and (n_val is not None or n_test is not None):
        raise DataError(f"n_val / n_test do not apply to {key!r}, which keeps its published splits")
    if key in TOY_DATASETS:
        counts = []
        for what, n in (("n_val", n_val), ("n_test", n_test)):
            if n is not None and (n < 1 or n != int(n)):
                raise DataError(f"{what} for {key!r} is a count of fresh samples >= 1, got {n}")
            # the samples and the temporaries of drawing them (float32, 2 columns)
            why = None if n is None else too_big(64.0 * n, f"{n:g} fresh samples")
            if why is not None:  # was an overflow traceback from torch.randint (1e30)
                raise DataError(f"{what} {n:g}: {why}")
            counts.append(10_000 if n is None else int(n))
        return _load_toy(key, seed, counts[0], counts[1])
    if key in SKLEARN_DATASETS:
        return load_sklearn_dataset(key, seed, n_val, n_test)
    if key in TABULAR_DATASETS:
        return load_tabular(key, default_data_dir(data_dir))
    if key == "mnist":
        return load_mnist(default_data_dir(data_dir))
    if key == "cifar10":
        return load_cifar10(default_data_dir(data_dir))
    if key == "speech":
        return load_speech(default_data_dir(data_dir), seed)
    if Path(text).expanduser().is_dir():
        if columns is not None or header is not None:
            raise DataError(
                f"columns= and header= apply to .csv/.npy files, not to the folder {text!r}"
            )
        return load_audio_folder(text, seed=seed, n_val=n_val, n_test=n_test)
    if key.endswith((".csv", ".npy")) or Path(text).expanduser().exists():
        return load_user_file(
            text, seed=seed, columns=columns, header=header, n_val=n_val, n_test=n_test
        )
    raise DataError(
        f"unknown dataset {text!r}: not a built-in name and not a .csv/.npy file; valid names: "
        f"{', '.join(_builtin_names())}"
    )


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetInfo]:
    """Describe every built-in dataset and whether it can be loaded now.

    Args:
        data_dir: folder of the on-disk sets (as in :func:`load_dataset`).

    Returns:
        One :class:`DatasetInfo` per built-in dataset; for the on-disk sets, ``files`` gives the
        exact paths expected.
    """
    root = default_data_dir(data_dir)
    infos = [
        DatasetInfo(n, "toy", (2,), True, TOY_DESCRIPTIONS[n] + " (fresh samples, built in)")
        for n in TOY_DATASETS
    ]
    has_sklearn = sklearn_available()
    for n, (kind, shape, desc) in SKLEARN_DATASETS.items():
        note = "" if has_sklearn else " (needs pip install flowforge[cli])"
        infos.append(DatasetInfo(n, kind, shape, has_sklearn, desc + note))
    for n, (_, dim, module, desc) in TABULAR_DATASETS.items():
        note = f" (needs {module}: pip install flowforge[tabular])" if module else ""
        files = ", ".join(str(f) for f in tabular_files(n, root))
        infos.append(
            DatasetInfo(n, "tabular", (dim,), tabular_available(n, root), desc + note, files)
        )
    for n, (shape, _, desc) in IMAGE_DATASETS.items():
        infos.append(
            DatasetInfo(n, "image", shape, image_available(n, root), desc, image_files(n, root))
        )
    has_audio = speech_available()
    for n, (shape, desc) in AUDIO_DATASETS.items():
        note = "" if has_audio else " (needs pip install flowforge[audio])"
        desc = f"{desc}; cache {speech_folder(root)}{note}"
        infos.append(DatasetInfo(n, "audio", shape, has_audio, desc))
    return infos
