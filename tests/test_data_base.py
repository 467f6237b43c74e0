"""Standardizer, dequantize, Dataset and the shared split helper."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from flowforge.data import DataError, Dataset, Standardizer, dequantize
from flowforge.data.base import default_data_dir, fit_standardize, random_split


def test_standardizer_fit_transform_inverse_roundtrip() -> None:
    x = torch.randn(500, 4, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.1, 20.0]) + 5.0
    s = Standardizer.fit(x)
    y = s.transform(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        y.std(0, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(s.inverse(y), x)
    # keeps the input's dtype
    assert s.transform(x.float()).dtype == torch.float32


def test_standardizer_log_abs_det_is_the_jacobian() -> None:
    s = Standardizer(torch.tensor([1.0, -2.0, 0.5]), torch.tensor([2.0, 0.25, 3.0]))
    x = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(s.transform, x)
    expected = torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(s.log_abs_det(), expected)
    assert s.log_abs_det().item() == pytest.approx(-math.log(2.0 * 0.25 * 3.0))


def test_standardizer_constant_columns_get_unit_std() -> None:
    x = torch.stack([torch.randn(100), torch.full((100,), 0.1), torch.zeros(100)], dim=1)
    s = Standardizer.fit(x)
    assert s.std[1].item() == 1.0 and s.std[2].item() == 1.0
    assert s.mean[1].item() == pytest.approx(0.1)
    y = s.transform(x.double())
    assert torch.isfinite(y).all()
    assert y[:, 1].abs().max().item() < 1e-12
    # a column with a tiny but genuine spread is not treated as constant
    tiny = torch.tensor([[1e-10], [2e-10], [3e-10]], dtype=torch.float64)
    assert Standardizer.fit(tiny).std.item() == pytest.approx(math.sqrt(2 / 3) * 1e-10)


def test_standardizer_dict_roundtrip_through_json() -> None:
    s = Standardizer.fit(torch.randn(50, 3) * 4 + 1)
    d = json.loads(json.dumps(s.to_dict()))
    r = Standardizer.from_dict(d)
    assert torch.equal(r.mean, s.mean) and torch.equal(r.std, s.std)
    with pytest.raises(DataError):
        Standardizer.from_dict({"mean": [0.0]})
    with pytest.raises(DataError):
        Standardizer(torch.zeros(2), torch.tensor([1.0, 0.0]))


def test_dequantize_range_and_mean() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randint(0, 17, (20000,)).float()
    u = dequantize(v, 17, g)
    assert u.dtype == torch.float32 and u.shape == v.shape
    assert (u >= 0).all() and (u < 1).all()
    assert torch.equal(torch.floor(u * 17), v)
    assert (u * 17 - v).mean().item() == pytest.approx(0.5, abs=0.01)
    # the top level never rounds up to 1.0
    top = dequantize(torch.full((100000,), 255.0), 256, g)
    assert (top < 1).all()
    # deterministic given the generator; integer input gives float32
    a = dequantize(torch.arange(5), 5, torch.Generator().manual_seed(3))
    b = dequantize(torch.arange(5), 5, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    with pytest.raises(DataError):
        dequantize(v, 0)


def test_random_split_sizes_and_determinism() -> None:
    x = np.arange(1000)[:, None].astype(float)
    tr, va, te = random_split(x, seed=3)
    assert (len(tr), len(va), len(te)) == (800, 100, 100)
    assert sorted(np.concatenate([tr, va, te])[:, 0].tolist()) == list(range(1000))
    tr2, _, _ = random_split(x, seed=3)
    tr3, _, _ = random_split(x, seed=4)
    assert np.array_equal(tr, tr2) and not np.array_equal(tr, tr3)
    tr, va, te = random_split(x[:10], seed=0)
    assert (len(tr), len(va), len(te)) == (8, 1, 1)


def test_fit_standardize_uses_training_rows_only() -> None:
    train = np.array([[0.0], [2.0]])
    test = np.array([[10.0]])
    std, (t_train, t_test) = fit_standardize(train, test)
    assert t_train.dtype == torch.float32
    assert t_train[:, 0].tolist() == [-1.0, 1.0]
    assert t_test.item() == 9.0
    assert std.mean.item() == 1.0


def _tabular(n: int = 20) -> Dataset:
    x = torch.arange(n * 2, dtype=torch.float32).reshape(n, 2)
    return Dataset("t", "tabular", (2,), x, x[:2], x[:2])


def test_dataset_sample_train_and_epochs() -> None:
    ds = _tabular()
    assert ds.dim == 2
    g = torch.Generator().manual_seed(0)
    batch = ds.sample_train(7, g)
    assert batch.shape == (7, 2)
    assert all(row.tolist() in ds.train.tolist() for row in batch)  # type: ignore[union-attr]
    batches = list(ds.iter_epoch(6, g))
    assert [b.shape[0] for b in batches] == [6, 6, 6, 2]
    seen = torch.cat(batches)[:, 0].sort().values
    assert torch.equal(seen, ds.train[:, 0])  # type: ignore[index]
    assert "train=20" in repr(ds)


def test_dataset_image_dim_and_toy_without_epochs() -> None:
    x = torch.zeros(3, 1, 8, 8)
    assert Dataset("d", "image", (1, 8, 8), x, x, x, levels=17).dim == 64
    toy = Dataset("toy", "toy", (2,), None, x, x, sampler=lambda n, g: torch.zeros(n, 2))
    assert toy.sample_train(4, torch.Generator()).shape == (4, 2)
    with pytest.raises(DataError, match="sample_train"):
        next(toy.iter_epoch(4, torch.Generator()))


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("FLOWFORGE_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("FLOWFORGE_DATA")
    assert default_data_dir().parts[-2:] == (".flowforge", "data")
    assert default_data_dir("/x/y").as_posix() == "/x/y"
