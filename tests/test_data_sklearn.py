"""The scikit-learn built-ins: digits as 17-level images, standardised small tabular sets."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from flowforge.data import DataError, load_dataset

pytest.importorskip("sklearn")


def test_digits_are_integer_levels_split_80_10_10() -> None:
    ds = load_dataset("digits", seed=0)
    assert ds.kind == "image" and ds.event_shape == (1, 8, 8) and ds.levels == 17
    assert ds.standardizer is None and ds.dim == 64
    assert ds.train is not None
    sizes = (ds.train.shape[0], ds.val.shape[0], ds.test.shape[0])
    assert sizes == (1437, 180, 180)
    for t in (ds.train, ds.val, ds.test):
        assert t.dtype == torch.float32 and t.shape[1:] == (1, 8, 8)
        assert torch.equal(t, t.round()) and t.min() >= 0 and t.max() <= 16
    from sklearn.datasets import load_digits

    everything = torch.cat([ds.train, ds.val, ds.test]).reshape(-1, 64).double()
    ref = torch.from_numpy(load_digits().data)
    assert torch.equal(everything.sort(0).values, ref.sort(0).values)  # a permutation of the rows


def test_digits_split_depends_on_seed_only() -> None:
    a, b, c = (load_dataset("digits", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.test, b.test) and not torch.equal(a.test, c.test)


@pytest.mark.parametrize(
    ("name", "dim", "n"),
    [("breast_cancer", 30, 569), ("wine", 13, 178), ("iris", 4, 150), ("diabetes", 10, 442)],
)
def test_tabular_sets_are_standardised_with_train_statistics(name: str, dim: int, n: int) -> None:
    small = load_dataset(name, seed=0, n_val=3, n_test=0.2)  # a count and a fraction
    assert (small.val.shape[0], small.test.shape[0]) == (3, round(0.2 * n))
    ds = load_dataset(name, seed=0)  # 10% each by default
    assert ds.kind == "tabular" and ds.event_shape == (dim,) and ds.levels is None
    assert ds.train is not None and ds.standardizer is not None
    n_hold = round(0.1 * n)
    assert (ds.val.shape[0], ds.test.shape[0], ds.train.shape[0]) == (
        n_hold,
        n_hold,
        n - 2 * n_hold,
    )
    train = ds.train.double()
    torch.testing.assert_close(
        train.mean(0), torch.zeros(dim, dtype=torch.float64), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        train.std(0, unbiased=False), torch.ones(dim, dtype=torch.float64), atol=1e-5, rtol=0
    )
    # the standardizer maps back to the raw features
    raw = ds.standardizer.inverse(ds.test.double())
    from sklearn import datasets

    loader = {
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
        "diabetes": lambda: datasets.load_diabetes(scaled=False),
    }[name]
    ref = np.asarray(loader().data)
    for row in raw.numpy():
        assert np.isclose(ref, row, rtol=1e-5, atol=1e-4).all(axis=1).any()


def test_missing_sklearn_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(DataError, match=r"pip install flowforge\[cli\]"):
        load_dataset("iris")
