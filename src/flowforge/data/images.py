"""MNIST and CIFAR-10 read from their original distribution files.

Both hold 8-bit pixels: ``levels=256`` and the tensors store the integer levels ``0..255`` as
float32 (dequantize with :func:`~flowforge.data.dequantize`). ``n_val``/``n_test`` do not apply:
the splits are the ones of the literature.

- ``mnist``: ``<data_dir>/mnist/train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (IDX
  format, optionally gzipped with a ``.gz`` suffix); event shape ``(1, 28, 28)``; validation =
  the last 10,000 training images (train 50,000, test 10,000).
- ``cifar10``: the python pickle batches ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``
  of ``cifar-10-python.tar.gz``, in ``<data_dir>/cifar10/cifar-10-batches-py/`` (or
  ``<data_dir>/cifar-10-batches-py/``); event shape ``(3, 32, 32)``; validation = the last 5,000
  training images (train 45,000, test 10,000).

The CIFAR batches are unpickled with a restricted unpickler that only builds numpy arrays, so a
tampered file cannot run code.

References:
    LeCun et al., "Gradient-based learning applied to document recognition", 1998 (MNIST);
    Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009 (CIFAR-10);
    Dinh et al., "Density estimation using Real NVP", ICLR 2017 (the bits/dim protocol).
"""

from __future__ import annotations

import codecs
import gzip
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError, Dataset, as_float32

__all__ = ["IMAGE_DATASETS", "image_files", "load_cifar10", "load_mnist", "read_idx"]

#: name -> (event_shape, number of validation images taken from the end of train, description)
IMAGE_DATASETS: dict[str, tuple[tuple[int, int, int], int, str]] = {
    "mnist": ((1, 28, 28), 10_000, "MNIST digits, 256 levels (IDX files)"),
    "cifar10": ((3, 32, 32), 5_000, "CIFAR-10, 256 levels (python pickle batches)"),
}

IMAGE_LEVELS = 256
_MNIST_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def image_files(name: str, root: Path) -> str:
    """Human-readable list of the files dataset ``name`` expects under ``root``."""
    if name == "mnist":
        return ", ".join(f"{root}/mnist/{f}[.gz]" for f in _MNIST_FILES)
    folder = root / "cifar10" / "cifar-10-batches-py"
    return f"{folder}/{{{','.join(_CIFAR_FILES)}}}"


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped if its name ends in ``.gz``.

    Args:
        path: the file.

    Returns:
        The array with the shape and dtype the header declares.
    """
    opener: Any = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_mnist(root: Path, name: str) -> Path:
    for candidate in (root / "mnist" / name, root / "mnist" / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"mnist: file not found: {root / 'mnist' / name}[.gz]; expected layout "
        f"<data_dir>/mnist/{{{','.join(_MNIST_FILES)}}}[.gz] with data_dir={root} (pass data_dir= "
        f"or set FLOWFORGE_DATA); the files are the MNIST IDX image files"
    )


def _tail_val_split(train: np.ndarray, n_val: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < n_val < train.shape[0]:
        raise DataError(
            f"{name}: {train.shape[0]} training images cannot give {n_val} validation images"
        )
    return train[:-n_val], train[-n_val:]


def load_mnist(root: Path, n_val: int = 10_000) -> Dataset:
    """Load MNIST images from the IDX files under ``root/mnist``.

    Args:
        root: the data root.
        n_val: validation images taken from the end of the training file (10,000 by convention).

    Returns:
        An ``"image"`` :class:`Dataset` of ``(n, 1, 28, 28)`` levels with ``levels=256``.
    """
    arrays = []
    for fname in _MNIST_FILES:
        path = _find_mnist(root, fname)
        x = read_idx(path)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
            raise DataError(f"{path}: expected uint8 images (N, 28, 28), got {x.dtype} {x.shape}")
        arrays.append(x[:, None])
    train, val = _tail_val_split(arrays[0], n_val, "mnist")
    return Dataset(
        name="mnist",
        kind="image",
        event_shape=(1, 28, 28),
        train=as_float32(train),
        val=as_float32(val),
        test=as_float32(arrays[1]),
        levels=IMAGE_LEVELS,
    )


def _numpy_multiarray() -> Any:
    # numpy >= 2 moved numpy.core to numpy._core; the old name warns when imported.
    major = int(np.__version__.split(".")[0])
    return importlib.import_module(
        "numpy._core.multiarray" if major >= 2 else "numpy.core.multiarray"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays and plain containers (no code execution)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in (
            "_reconstruct",
            "scalar",
        ):
            return getattr(_numpy_multiarray(), name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"cannot read CIFAR-10 batch {path}: {' '.join(str(e).split())}") from e
    data = batch.get(b"data", batch.get("data")) if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: expected a dict with 'data' of shape (N, 3072)")
    return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)


def _cifar_folder(root: Path) -> Path:
    candidates = (root / "cifar10" / "cifar-10-batches-py", root / "cifar-10-batches-py")
    for folder in candidates:
        if folder.is_dir():
            missing = [f for f in _CIFAR_FILES if not (folder / f).is_file()]
            if missing:
                raise DataError(f"cifar10: missing {', '.join(missing)} in {folder}")
            return folder
    raise DataError(
        f"cifar10: folder not found: {candidates[0]}; expected layout "
        f"<data_dir>/cifar10/cifar-10-batches-py/{{{','.join(_CIFAR_FILES)}}} with "
        f"data_dir={root} (pass data_dir= or set FLOWFORGE_DATA); extract cifar-10-python.tar.gz "
        f"into <data_dir>/cifar10"
    )


def load_cifar10(root: Path, n_val: int = 5_000) -> Dataset:
    """Load CIFAR-10 from the python pickle batches.

    Args:
        root: the data root.
        n_val: validation images taken from the end of the training batches (5,000 by
            convention).

    Returns:
        An ``"image"`` :class:`Dataset` of ``(n, 3, 32, 32)`` levels with ``levels=256``.
    """
    folder = _cifar_folder(root)
    train_all = np.concatenate([_read_cifar_batch(folder / f) for f in _CIFAR_FILES[:5]])
    test = _read_cifar_batch(folder / "test_batch")
    train, val = _tail_val_split(train_all, n_val, "cifar10")
    return Dataset(
        name="cifar10",
        kind="image",
        event_shape=(3, 32, 32),
        train=as_float32(train),
        val=as_float32(val),
        test=as_float32(test),
        levels=IMAGE_LEVELS,
    )


def image_available(name: str, root: Path) -> bool:
    """Whether the files of ``name`` are present under ``root``."""
    try:
        if name == "mnist":
            for f in _MNIST_FILES:
                _find_mnist(root, f)
        else:
            _cifar_folder(root)
    except DataError:
        return False
    return True
