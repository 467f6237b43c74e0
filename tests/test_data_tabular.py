"""The MAF tabular benchmark: small files in the real formats, checked against the protocol.

Each test writes a fixture in the published file format under ``tmp_path`` and recomputes the
published preprocessing independently (with other numpy calls than the loader's) to compare.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from flowforge.data import DataError, list_datasets, load_dataset

pd = pytest.importorskip("pandas")
h5py = pytest.importorskip("h5py")


def _close(t: torch.Tensor | None, ref: np.ndarray) -> None:
    assert t is not None and t.dtype == torch.float32
    assert tuple(t.shape) == ref.shape
    np.testing.assert_allclose(t.numpy(), ref.astype(np.float32), rtol=1e-6, atol=1e-6)


def _tail_split(n: int) -> tuple[int, int, int]:
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    return n - n_test - n_val, n_val, n_test


# ---------------------------------------------------------------- POWER
def _write_power(root: Path, n: int = 400) -> np.ndarray:
    rng = np.random.default_rng(0)
    # columns: active power, reactive power, voltage, intensity, sub-metering 1-3, time
    data = np.column_stack(
        [
            rng.gamma(2.0, 0.5, n),
            rng.gamma(2.0, 0.05, n),
            240 + rng.normal(0, 3, n),
            rng.gamma(2.0, 2.0, n),
            rng.integers(0, 3, n),
            rng.integers(0, 5, n),
            rng.integers(0, 20, n),
            rng.integers(0, 1440, n),
        ]
    ).astype(np.float64)
    (root / "power").mkdir(parents=True)
    np.save(root / "power/data.npy", data)
    return data


def _power_reference(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.RandomState(42)
    n = data.shape[0]
    x = data[rng.permutation(n)][:, [0, 2, 4, 5, 6, 7]]  # columns 3 and 1 deleted
    noise = np.zeros_like(x)
    noise[:, 1] = 0.01 * rng.rand(n)  # voltage first
    noise[:, 0] = 0.001 * rng.rand(n)  # then active power
    noise[:, 2:5] = rng.rand(n, 3)  # then sub-metering; time gets none
    x = x + noise
    n_tr, n_val, _ = _tail_split(n)
    fit = x[: n_tr + n_val]
    z = (x - fit.mean(0)) / np.sqrt(((fit - fit.mean(0)) ** 2).mean(0))
    return z[:n_tr], z[n_tr : n_tr + n_val], z[n_tr + n_val :]


def test_power(tmp_path: Path) -> None:
    data = _write_power(tmp_path)
    ds = load_dataset("POWER", data_dir=tmp_path, seed=123)  # the published split ignores seed
    assert ds.kind == "tabular" and ds.event_shape == (6,) and ds.standardizer is None
    tr, va, te = _power_reference(data)
    assert (tr.shape[0], va.shape[0], te.shape[0]) == (324, 36, 40)
    _close(ds.train, tr)
    _close(ds.val, va)
    _close(ds.test, te)
    # train + validation are standardised together
    both = torch.cat([ds.train, ds.val]).double()  # type: ignore[list-item]
    torch.testing.assert_close(both.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-6, rtol=0)
    # the time column got no noise: its values are the (standardised) integers of the file
    raw_time = np.sort(data[:, 7])
    got_time = np.sort(torch.cat([ds.train, ds.val, ds.test])[:, 5].double().numpy())  # type: ignore[list-item]
    scale = np.polyfit(raw_time, got_time, 1)
    np.testing.assert_allclose(np.polyval(scale, raw_time), got_time, atol=1e-5)


def test_power_wrong_shape(tmp_path: Path) -> None:
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power/data.npy", np.zeros((100, 7)))
    with pytest.raises(DataError, match=r"expected an \(N, 8\) array"):
        load_dataset("power", data_dir=tmp_path)


# ---------------------------------------------------------------- GAS
GAS_SENSORS = [f"TGS26{t}_{i}" for t in ("02", "00", "10", "20") for i in range(1, 5)]


def _gas_frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(n, 8)) * rng.uniform(0.5, 5, 8) + rng.uniform(-2, 2, 8)
    # 8 more sensors, each almost a copy of an earlier one (correlation > 0.98) ...
    near = base * rng.uniform(0.5, 2.0, 8) + 0.01 * rng.normal(size=(n, 8))
    # ... except one that is only moderately correlated
    near[:, 7] = base[:, 7] + rng.normal(size=n) * 3 * base[:, 7].std()
    sensors = np.column_stack([base, near])[:, rng.permutation(16)]
    frame = pd.DataFrame(sensors, columns=GAS_SENSORS)
    frame.insert(0, "Time", np.arange(n) * 0.01)
    frame.insert(1, "Meth", rng.uniform(0, 300, n))
    frame.insert(2, "Eth", rng.uniform(0, 20, n))
    return frame


def _gas_reference(frame: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    cols = [c for c in frame.columns if c not in ("Meth", "Eth", "Time")]
    while True:
        c = np.corrcoef(frame[cols].to_numpy(), rowvar=False)
        flagged = [j for j in range(len(cols)) if (c[j] > 0.98).sum() > 1]
        if not flagged:
            break
        cols.pop(flagged[0])
    x = frame[cols].to_numpy()
    x = (x - x.mean(0)) / x.std(0, ddof=1)  # the whole data's statistics, before splitting
    n_tr, n_val, _ = _tail_split(x.shape[0])
    return cols, x[:n_tr], x[n_tr : n_tr + n_val], x[n_tr + n_val :]


def test_gas(tmp_path: Path) -> None:
    frame = _gas_frame()
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas/ethylene_CO.pickle")
    ds = load_dataset("gas", data_dir=tmp_path)
    cols, tr, va, te = _gas_reference(frame)
    assert len(cols) == 9  # 7 near-copies dropped, the moderately correlated one kept
    assert ds.event_shape == (9,) and ds.standardizer is None
    _close(ds.train, tr)
    _close(ds.val, va)
    _close(ds.test, te)
    # the CSV fallback for pandas versions that cannot read the pickle gives the same data
    (tmp_path / "gas/ethylene_CO.pickle").unlink()
    frame.to_csv(tmp_path / "gas/ethylene_CO.csv", index=False)
    ds_csv = load_dataset("gas", data_dir=tmp_path)
    assert torch.equal(ds_csv.test, ds.test) and torch.equal(ds_csv.train, ds.train)  # type: ignore[arg-type]


def test_gas_unreadable_pickle_and_wrong_columns(tmp_path: Path) -> None:
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas/ethylene_CO.pickle").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"cannot read .*convert it once") as info:
        load_dataset("gas", data_dir=tmp_path)
    assert "\n" not in str(info.value)
    pd.DataFrame({"a": [1.0] * 20}).to_pickle(tmp_path / "gas/ethylene_CO.pickle")
    with pytest.raises(DataError, match=r"columns \['Meth', 'Eth', 'Time'\] not found"):
        load_dataset("gas", data_dir=tmp_path)


# ---------------------------------------------------------------- HEPMASS
def _hepmass_frames(rng: np.random.Generator, n: int, test: bool) -> pd.DataFrame:
    label = rng.integers(0, 2, n).astype(float)
    feats = {
        "f0": rng.normal(size=n),
        "f1": rng.normal(size=n),
        "f2": rng.integers(-1, 2, n).astype(float),  # discrete: smallest value repeated -> dropped
        "f3": rng.normal(size=n),
        "f4": np.where(rng.random(n) < 0.5, 1.0, rng.normal(size=n) - 5),  # repeats its largest
        "f5": rng.exponential(size=n),
    }
    frame = pd.DataFrame({"# label": label, **feats})
    if test:
        frame["mass"] = 1000.0  # the test file's extra last column
    return frame


def _hepmass_reference(
    train: pd.DataFrame, test: pd.DataFrame
) -> tuple[list[int], np.ndarray, np.ndarray, np.ndarray]:
    tr = train.to_numpy()
    te = test.to_numpy()
    tr = tr[tr[:, 0] == 1][:, 1:]
    te = te[te[:, 0] == 1][:, 1:-1]
    mu, s = tr.mean(0), tr.std(0, ddof=1)
    tr, te = (tr - mu) / s, (te - mu) / s
    keep = []
    for j in range(tr.shape[1]):
        counts = Counter(tr[:, j].tolist())
        if counts[min(counts)] <= 5:
            keep.append(j)
    tr, te = tr[:, keep], te[:, keep]
    n_val = int(0.1 * tr.shape[0])
    return keep, tr[:-n_val], tr[-n_val:], te


def test_hepmass(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    train, test = _hepmass_frames(rng, 600, test=False), _hepmass_frames(rng, 300, test=True)
    (tmp_path / "hepmass").mkdir()
    train.to_csv(tmp_path / "hepmass/1000_train.csv", index=False)
    test.to_csv(tmp_path / "hepmass/1000_test.csv", index=False)
    assert (tmp_path / "hepmass/1000_train.csv").read_text().startswith("# label,f0,")
    ds = load_dataset("hepmass", data_dir=tmp_path)
    keep, tr, va, te = _hepmass_reference(train, test)
    assert keep == [0, 1, 3, 4, 5]  # f2 dropped; f4 (many repeats of its largest value) kept
    assert ds.event_shape == (5,)
    n_pos = int((train["# label"] == 1).sum())
    assert ds.train.shape[0] + ds.val.shape[0] == n_pos  # type: ignore[union-attr]
    assert ds.val.shape[0] == int(0.1 * n_pos)
    _close(ds.train, tr)
    _close(ds.val, va)
    _close(ds.test, te)


def test_hepmass_mismatched_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    (tmp_path / "hepmass").mkdir()
    _hepmass_frames(rng, 100, test=False).to_csv(tmp_path / "hepmass/1000_train.csv", index=False)
    # a test file without the extra last column loses a real feature and no longer matches
    _hepmass_frames(rng, 100, test=False).to_csv(tmp_path / "hepmass/1000_test.csv", index=False)
    with pytest.raises(DataError, match="do not match"):
        load_dataset("hepmass", data_dir=tmp_path)


# ---------------------------------------------------------------- MINIBOONE
def test_miniboone(tmp_path: Path) -> None:
    data = np.random.default_rng(4).normal(size=(250, 7)) * np.arange(1, 8) + np.arange(7)
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone/data.npy", data)
    ds = load_dataset("miniboone", data_dir=tmp_path)
    n_tr, n_val, n_test = _tail_split(250)
    assert (n_tr, n_val, n_test) == (203, 22, 25)
    fit = data[: n_tr + n_val]
    z = (data - fit.mean(0)) / fit.std(0)
    _close(ds.train, z[:n_tr])
    _close(ds.val, z[n_tr : n_tr + n_val])
    _close(ds.test, z[n_tr + n_val :])


def test_too_few_rows(tmp_path: Path) -> None:
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone/data.npy", np.zeros((9, 3)))
    with pytest.raises(DataError, match="too few rows"):
        load_dataset("miniboone", data_dir=tmp_path)


# ---------------------------------------------------------------- BSDS300
def test_bsds300(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    parts = {
        k: rng.normal(size=(n, 63)).astype(np.float32)
        for k, n in (("train", 50), ("validation", 20), ("test", 30))
    }
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300/BSDS300.hdf5", "w") as f:
        for k, v in parts.items():
            f.create_dataset(k, data=v)
    ds = load_dataset("bsds300", data_dir=tmp_path)
    assert ds.event_shape == (63,) and ds.standardizer is None
    assert torch.equal(ds.train, torch.from_numpy(parts["train"]))  # type: ignore[arg-type]
    assert torch.equal(ds.val, torch.from_numpy(parts["validation"]))
    assert torch.equal(ds.test, torch.from_numpy(parts["test"]))
    with h5py.File(tmp_path / "BSDS300/BSDS300.hdf5", "w") as f:
        f.create_dataset("train", data=parts["train"])
    with pytest.raises(DataError, match=r"datasets \['validation', 'test'\] not found"):
        load_dataset("bsds300", data_dir=tmp_path)


# ---------------------------------------------------------------- files, extras, listing
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("power", "power/data.npy"),
        ("gas", "gas/ethylene_CO.pickle"),
        ("hepmass", "hepmass/1000_train.csv"),
        ("miniboone", "miniboone/data.npy"),
        ("bsds300", "BSDS300/BSDS300.hdf5"),
    ],
)
def test_missing_files_name_the_exact_paths(tmp_path: Path, name: str, expected: str) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(name, data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / expected) in message and f"<data_dir>/{expected}" in message
    assert "FLOWFORGE_DATA" in message and "\n" not in message


def test_missing_optional_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_power(tmp_path)
    (tmp_path / "gas").mkdir()
    _gas_frame().to_pickle(tmp_path / "gas/ethylene_CO.pickle")
    (tmp_path / "BSDS300").mkdir()
    with h5py.File(tmp_path / "BSDS300/BSDS300.hdf5", "w") as f:
        for k in ("train", "validation", "test"):
            f.create_dataset(k, data=np.zeros((3, 63), dtype=np.float32))
    monkeypatch.setitem(sys.modules, "pandas", None)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(DataError, match=r"gas needs pandas: pip install flowforge\[tabular\]"):
        load_dataset("gas", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"bsds300 needs h5py: pip install flowforge\[tabular\]"):
        load_dataset("bsds300", data_dir=tmp_path)
    assert load_dataset("power", data_dir=tmp_path).event_shape == (6,)  # needs neither


def test_list_datasets_reports_files_and_availability(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWFORGE_DATA", str(tmp_path))
    infos = {i.name: i for i in list_datasets()}
    assert not infos["power"].available and infos["power"].files == str(tmp_path / "power/data.npy")
    assert infos["bsds300"].event_shape == (63,) and infos["gas"].event_shape == (8,)
    _write_power(tmp_path)
    assert {i.name: i for i in list_datasets()}["power"].available
    assert load_dataset("power").event_shape == (6,)  # FLOWFORGE_DATA is the default data_dir
