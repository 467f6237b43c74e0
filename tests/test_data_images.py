"""MNIST (IDX files) and CIFAR-10 (python pickle batches) from tiny files in the real formats."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.data import DataError, list_datasets, load_dataset
from flowforge.data.images import load_cifar10, load_mnist, read_idx


def _idx_bytes(images: np.ndarray) -> bytes:
    """IDX: magic 0x00000803 (unsigned bytes, 3 dims), big-endian dims, then the pixels."""
    n, h, w = images.shape
    return struct.pack(">IIII", 0x0803, n, h, w) + images.astype(np.uint8).tobytes()


def _write_mnist(
    root: Path, n_train: int, n_test: int, gz: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    for name, arr in (("train-images-idx3-ubyte", train), ("t10k-images-idx3-ubyte", test)):
        if gz:
            with gzip.open(root / "mnist" / f"{name}.gz", "wb") as f:
                f.write(_idx_bytes(arr))
        else:
            (root / "mnist" / name).write_bytes(_idx_bytes(arr))
    return train, test


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path: Path, gz: bool) -> None:
    train, test = _write_mnist(tmp_path, 30, 7, gz=gz)
    ds = load_mnist(tmp_path, n_val=10)
    assert ds.kind == "image" and ds.event_shape == (1, 28, 28) and ds.levels == 256
    assert ds.train is not None and ds.train.dtype == torch.float32
    assert ds.train.shape == (20, 1, 28, 28) and ds.val.shape == (10, 1, 28, 28)
    assert torch.equal(ds.train[:, 0], torch.from_numpy(train[:20]).float())
    assert torch.equal(ds.val[:, 0], torch.from_numpy(train[20:]).float())  # the last images
    assert torch.equal(ds.test[:, 0], torch.from_numpy(test).float())


def test_mnist_default_validation_is_last_10000(tmp_path: Path) -> None:
    train, _ = _write_mnist(tmp_path, 10_003, 5)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.train is not None and ds.train.shape[0] == 3 and ds.val.shape[0] == 10_000
    assert torch.equal(ds.train[:, 0], torch.from_numpy(train[:3]).float())
    assert {i.name: i for i in list_datasets(tmp_path)}["mnist"].available


def test_idx_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">III", 5, 28, 28) + b"\x00" * 10)
    with pytest.raises(DataError, match=r"declares shape \(5, 28, 28\)"):
        read_idx(bad)
    bad.write_bytes(b"\x12\x34\x56\x78")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(bad)
    labels = tmp_path / "labels"
    labels.write_bytes(struct.pack(">II", 0x0801, 3) + bytes([1, 2, 3]))
    assert read_idx(labels).tolist() == [1, 2, 3]
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist/train-images-idx3-ubyte").write_bytes(labels.read_bytes())
    (tmp_path / "mnist/t10k-images-idx3-ubyte").write_bytes(labels.read_bytes())
    with pytest.raises(DataError, match=r"expected uint8 images \(N, 28, 28\)"):
        load_mnist(tmp_path)


def test_mnist_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert str(tmp_path / "mnist/train-images-idx3-ubyte") in str(info.value)
    assert "<data_dir>/mnist/" in str(info.value)


def _cifar_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, bytes]:
    """A batch as the CIFAR site ships it: a dict with b'data' (N, 3072) uint8 and b'labels'."""
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    batch = {
        b"batch_label": b"batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": data,
    }
    return data, pickle.dumps(batch, protocol=2)


def _write_cifar(
    folder: Path, n_per_batch: int, legacy_numpy_names: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    train = []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        data, raw = _cifar_batch(rng, n_per_batch)
        if legacy_numpy_names:  # as in the original Python 2 pickles
            raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        (folder / name).write_bytes(raw)
        train.append(data)
    return np.concatenate(train[:5]), train[5]


@pytest.mark.parametrize("legacy", [False, True])
def test_cifar10_pickle_batches(tmp_path: Path, legacy: bool) -> None:
    train, test = _write_cifar(
        tmp_path / "cifar10/cifar-10-batches-py", 8, legacy_numpy_names=legacy
    )
    ds = load_cifar10(tmp_path, n_val=10)
    assert ds.event_shape == (3, 32, 32) and ds.levels == 256 and ds.kind == "image"
    assert (
        ds.train is not None
        and ds.train.shape == (30, 3, 32, 32)
        and ds.val.shape == (10, 3, 32, 32)
    )
    assert ds.test.shape == (8, 3, 32, 32)
    # channel-major rows: the first 1024 values are the red plane, row by row
    assert torch.equal(ds.train[0, 0, 0], torch.from_numpy(train[0, :32]).float())
    assert torch.equal(ds.train[0, 1, 0], torch.from_numpy(train[0, 1024:1056]).float())
    assert torch.equal(ds.val.reshape(10, -1), torch.from_numpy(train[30:]).float())
    assert torch.equal(ds.test.reshape(8, -1), torch.from_numpy(test).float())


def test_cifar10_default_validation_and_tarball_layout(tmp_path: Path) -> None:
    train, _ = _write_cifar(tmp_path / "cifar-10-batches-py", 1001)  # extracted in data_dir
    ds = load_dataset("CIFAR10", data_dir=tmp_path)
    assert ds.train is not None and ds.train.shape[0] == 5 and ds.val.shape[0] == 5000
    assert torch.equal(ds.train.reshape(5, -1), torch.from_numpy(train[:5]).float())


def test_cifar10_refuses_code_in_pickles(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10/cifar-10-batches-py"
    _write_cifar(folder, 2)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load_cifar10(tmp_path, n_val=1)


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar10/cifar-10-batches-py") in str(info.value)
    (tmp_path / "cifar10/cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing data_batch_1, .*test_batch"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not {i.name: i for i in list_datasets(tmp_path)}["cifar10"].available
