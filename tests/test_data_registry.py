"""load_dataset / list_datasets: names, dispatch, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge.data as fd
from flowforge.data import DataError, DatasetInfo, dataset_names, list_datasets, load_dataset

PUBLIC = [
    "load_dataset",
    "list_datasets",
    "Dataset",
    "DatasetInfo",
    "Standardizer",
    "dequantize",
    "DataError",
]


def test_public_api() -> None:
    for name in PUBLIC:
        assert hasattr(fd, name) and name in fd.__all__
    assert issubclass(DataError, ValueError)


def test_list_datasets_covers_every_builtin(tmp_path: Path) -> None:
    infos = list_datasets(tmp_path)
    assert all(isinstance(i, DatasetInfo) for i in infos)
    names = [i.name for i in infos]
    with pytest.warns(DeprecationWarning, match="list_datasets"):
        assert names == dataset_names()  # the deprecated alias still answers
    expected = {
        "8gaussians", "checkerboard", "2spirals", "rings", "pinwheel", "moons", "circles",
        "swissroll", "gaussian_mixture_2d", "digits", "breast_cancer", "wine", "iris",
        "diabetes", "power", "gas", "hepmass", "miniboone", "bsds300", "mnist", "cifar10", "speech",
    }  # fmt: skip
    assert set(names) == expected
    by = {i.name: i for i in infos}
    assert by["moons"].available and by["moons"].files == "" and by["moons"].kind == "toy"
    assert by["digits"].kind == "image" and by["digits"].event_shape == (1, 8, 8)
    assert by["miniboone"].event_shape == (43,) and not by["miniboone"].available
    assert by["miniboone"].files == str(tmp_path / "miniboone/data.npy")
    assert by["cifar10"].event_shape == (3, 32, 32)
    for i in infos:
        assert i.description and "\n" not in i.description
        assert (i.files != "") == (
            i.kind in ("tabular", "image") and i.name not in fd.registry.SKLEARN_DATASETS
        )


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("mnsit")
    message = str(info.value)
    assert "unknown dataset 'mnsit'" in message and "\n" not in message
    for name in ("moons", "digits", "power", "mnist", "cifar10"):
        assert name in message


def test_names_are_case_insensitive() -> None:
    a = load_dataset("CheckerBoard", n_val=5, n_test=5)
    assert a.name == "checkerboard"


def test_columns_only_for_user_files() -> None:
    with pytest.raises(DataError, match="columns= applies to user"):
        load_dataset("moons", columns=["0"])


def test_path_dispatch(tmp_path: Path) -> None:
    np.save(tmp_path / "pts.npy", np.random.default_rng(0).normal(size=(40, 2)))
    ds = load_dataset(tmp_path / "pts.npy")  # a PathLike works too
    assert ds.name == "pts" and ds.standardizer is not None
    # a file called like a built-in must be given as a path to be read
    (tmp_path / "moons.csv").write_text("a,b\n" + "\n".join(f"{i},{-i}" for i in range(20)))
    assert load_dataset(str(tmp_path / "moons.csv")).kind == "tabular"
    assert load_dataset("moons", n_val=3, n_test=3).kind == "toy"


def test_toy_dataset_through_registry_is_seeded() -> None:
    ds = load_dataset("8gaussians", seed=0, n_val=1000, n_test=1000)
    g = torch.Generator().manual_seed(0)
    assert ds.sample_train(10, g).shape == (10, 2)
    assert ds.dim == 2 and ds.levels is None
