"""The tabular density-estimation benchmark of the MAF paper, read from the published files.

The preprocessing is exactly the published one (the MAF code's ``datasets/*.py``, also used by
NSF, FFJORD and most later papers), so test log-likelihoods computed on these splits are
comparable with the papers' tables. Standardisation is part of that protocol and is already
applied; ``Dataset.standardizer`` is ``None`` and ``n_val``/``n_test`` do not apply.

Folder layout under the data root (the MAF preprocessed archive, https://zenodo.org/record/1161203,
``data.tar.gz``, extracted so that these paths exist):

====================  =============================================  ====
dataset               files                                          D
====================  =============================================  ====
``power``             ``power/data.npy``                             6
``gas``               ``gas/ethylene_CO.pickle`` (pandas)            8
``hepmass``           ``hepmass/1000_train.csv``, ``1000_test.csv``  21
``miniboone``         ``miniboone/data.npy``                         43
``bsds300``           ``BSDS300/BSDS300.hdf5`` (h5py)                63
====================  =============================================  ====

GAS and HEPMASS need pandas, BSDS300 h5py: ``pip install flowforge[tabular]``. The GAS pickle
is a pandas pickle, read with an allow-list unpickler that builds only the pieces of a DataFrame
(a crafted file cannot run code; it is refused with a one-line conversion recipe). If your
pandas cannot read that 2017 pickle, convert it once with an older pandas,
``pd.read_pickle(p).to_csv("gas/ethylene_CO.csv", index=False)``; the CSV is used when the pickle
is absent.

References:
    Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation",
    NeurIPS 2017, arXiv:1705.07057.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from .base import DataError, Dataset, as_float32
from .pickled_frame import read_frame

__all__ = [
    "TABULAR_DATASETS",
    "load_bsds300",
    "load_gas",
    "load_hepmass",
    "load_miniboone",
    "load_power",
    "load_tabular",
    "tabular_files",
]

ARCHIVE_URL = "https://zenodo.org/record/1161203"

Splits = tuple[np.ndarray, np.ndarray, np.ndarray]

#: name -> (files relative to the data root, published dimension, optional module, description)
TABULAR_DATASETS: dict[str, tuple[tuple[str, ...], int, str | None, str]] = {
    "power": (("power/data.npy",), 6, None, "UCI household electric power (MAF preprocessing)"),
    "gas": (("gas/ethylene_CO.pickle",), 8, "pandas", "UCI gas sensors, ethylene + CO (MAF)"),
    "hepmass": (
        ("hepmass/1000_train.csv", "hepmass/1000_test.csv"),
        21,
        "pandas",
        "UCI HEPMASS, positive class (MAF preprocessing)",
    ),
    "miniboone": (("miniboone/data.npy",), 43, None, "UCI MiniBooNE particle identification (MAF)"),
    "bsds300": (
        ("BSDS300/BSDS300.hdf5",),
        63,
        "h5py",
        "8x8 natural image patches of BSDS300 (MAF)",
    ),
}

_GAS_CSV = "gas/ethylene_CO.csv"


def tabular_files(name: str, root: Path) -> list[Path]:
    """The files that dataset ``name`` reads under the data root ``root``."""
    return [root / f for f in TABULAR_DATASETS[name][0]]


def _require(module: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DataError(f"{name} needs {module}: pip install flowforge[tabular]") from e


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def _check_files(name: str, root: Path) -> None:
    files = tabular_files(name, root)
    if name == "gas" and not files[0].exists() and (root / _GAS_CSV).exists():
        return
    missing = [f for f in files if not f.is_file()]
    if missing:
        layout = ", ".join(f"<data_dir>/{f}" for f in TABULAR_DATASETS[name][0])
        raise DataError(
            f"{name}: file not found: {', '.join(map(str, missing))}; expected layout {layout} "
            f"with data_dir={root} (pass data_dir= or set FLOWFORGE_DATA); the files are in the "
            f"MAF preprocessed archive {ARCHIVE_URL} (data.tar.gz, extract into data_dir)"
        )


def _maf_tail_split(data: np.ndarray, name: str) -> Splits:
    """Test = last 10% of rows, validation = last 10% of the rest (``int`` rounding down)."""
    n_test = int(0.1 * data.shape[0])
    n_val = int(0.1 * (data.shape[0] - n_test))
    if n_val < 1:
        raise DataError(f"{name}: too few rows ({data.shape[0]}) for the 80/10/10-style split")
    rest = data[:-n_test]
    return rest[:-n_val], rest[-n_val:], data[-n_test:]


def _standardize_with_train_val(train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Splits:
    """Standardise with the mean and population std (ddof=0) of train + validation."""
    both = np.vstack((train, val))
    mu, s = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / s, (val - mu) / s, (test - mu) / s


def load_power(root: Path) -> Splits:
    """POWER: shuffle, drop 2 columns, add the published noise, split, standardise.

    Steps (all with one ``numpy.random.RandomState(42)``): shuffle the rows of ``data.npy``;
    delete column 3 then column 1 (left: active power, voltage, sub-metering 1-3, time); draw
    ``0.01 * rand(N, 1)`` (voltage), then ``0.001 * rand(N, 1)`` (active power), then
    ``rand(N, 3)`` (sub-metering) and add them (none for time); test = last 10%, validation =
    last 10% of the rest; standardise with the mean/std of train + validation.

    Returns:
        ``(train, val, test)``, each ``(n, 6)`` float64.
    """
    rng = np.random.RandomState(42)
    data = np.load(root / "power/data.npy", allow_pickle=False)
    if data.ndim != 2 or data.shape[1] != 8:
        raise DataError(
            f"power: expected an (N, 8) array in {root / 'power/data.npy'}, got {data.shape}"
        )
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    active_power_noise = 0.001 * rng.rand(n, 1)
    sub_metering_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data = data + np.hstack((active_power_noise, voltage_noise, sub_metering_noise, time_noise))
    return _standardize_with_train_val(*_maf_tail_split(data, "power"))


def _read_gas_frame(root: Path) -> Any:
    pd = _require("pandas", "gas")
    pickle_path = root / "gas/ethylene_CO.pickle"
    if not pickle_path.exists():
        # pandas >= 3 parses floats exactly by default and deprecates the option
        exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
        return pd.read_csv(root / _GAS_CSV, index_col=False, **exact)
    return read_frame(pickle_path)  # an allow-list unpickler: the file cannot run code


def load_gas(root: Path) -> Splits:
    """GAS: drop Meth, Eth, Time; drop correlated columns; standardise; split (no shuffle).

    While some column has Pearson correlation > 0.98 with another one, drop (by name) the first
    such column; then standardise with the whole data's mean and pandas ``std`` (ddof=1) before
    splitting; test = last 10%, validation = last 10% of the rest.

    Returns:
        ``(train, val, test)``, each ``(n, 8)`` float64 for the published file.
    """
    data = _read_gas_frame(root)
    missing = [c for c in ("Meth", "Eth", "Time") if c not in data.columns]
    if missing:
        raise DataError(f"gas: columns {missing} not found in {root / 'gas'}; is it the MAF file?")
    data = data.drop(columns=["Meth", "Eth", "Time"])

    def n_correlated(frame: Any) -> np.ndarray:
        return np.asarray((frame.corr() > 0.98).to_numpy().sum(axis=1))

    counts = n_correlated(data)
    while np.any(counts > 1):  # each column is correlated with itself
        data = data.drop(columns=[data.columns[np.where(counts > 1)[0][0]]])
        counts = n_correlated(data)
    data = (data - data.mean()) / data.std()
    values = np.asarray(data.to_numpy(dtype=np.float64))
    n_test = int(0.1 * values.shape[0])
    n_val = int(0.1 * (values.shape[0] - n_test))
    if n_val < 1:
        raise DataError(f"gas: too few rows ({values.shape[0]})")
    rest = values[:-n_test]
    return rest[:-n_val], rest[-n_val:], values[-n_test:]


def load_hepmass(root: Path) -> Splits:
    """HEPMASS: positive class, standardise with train statistics, drop discrete features.

    Keep the rows whose first column (the label) is 1 and drop that column (both files); drop
    the test file's last column; standardise both with the train mean and pandas ``std``
    (ddof=1); drop every feature whose *smallest* standardised train value occurs more than 5
    times (the original code's test, which the published numbers used); validation = last 10%
    of train.

    Returns:
        ``(train, val, test)``, each ``(n, 21)`` float64 for the published files.
    """
    pd = _require("pandas", "hepmass")
    train = pd.read_csv(root / "hepmass/1000_train.csv", index_col=False)
    test = pd.read_csv(root / "hepmass/1000_test.csv", index_col=False)
    train = train[train[train.columns[0]] == 1]
    train = train.drop(columns=[train.columns[0]])
    test = test[test[test.columns[0]] == 1]
    test = test.drop(columns=[test.columns[0]])
    test = test.drop(columns=[test.columns[-1]])
    mu, s = train.mean(), train.std()
    x_train = np.asarray(((train - mu) / s).to_numpy(dtype=np.float64))
    x_test = np.asarray(((test - mu) / s).to_numpy(dtype=np.float64))
    if x_train.shape[1] != x_test.shape[1] or not np.isfinite(x_test).all():
        raise DataError(
            f"hepmass: after dropping the label (and the test file's last column) the columns of "
            f"1000_test.csv ({x_test.shape[1]}) do not match those of 1000_train.csv "
            f"({x_train.shape[1]}); are they the MAF files in {root / 'hepmass'}?"
        )
    keep = [
        j
        for j in range(x_train.shape[1])
        if np.unique(x_train[:, j], return_counts=True)[1][0] <= 5
    ]
    x_train, x_test = x_train[:, keep], x_test[:, keep]
    n_val = int(0.1 * x_train.shape[0])
    if n_val < 1:
        raise DataError(f"hepmass: too few positive training rows ({x_train.shape[0]})")
    return x_train[:-n_val], x_train[-n_val:], x_test


def load_miniboone(root: Path) -> Splits:
    """MINIBOONE: the file is already cleaned; split, standardise with train + validation.

    Returns:
        ``(train, val, test)``, each ``(n, 43)`` float64 for the published file.
    """
    data = np.load(root / "miniboone/data.npy", allow_pickle=False)
    if data.ndim != 2:
        raise DataError(f"miniboone: expected a 2-D array in {root / 'miniboone/data.npy'}")
    return _standardize_with_train_val(*_maf_tail_split(data, "miniboone"))


def load_bsds300(root: Path) -> Splits:
    """BSDS300: the ``train``, ``validation`` and ``test`` datasets of the HDF5 file, as stored.

    Returns:
        ``(train, val, test)``, each ``(n, 63)``.
    """
    h5py = _require("h5py", "bsds300")
    path = root / "BSDS300/BSDS300.hdf5"
    with h5py.File(path, "r") as f:
        missing = [k for k in ("train", "validation", "test") if k not in f]
        if missing:
            raise DataError(f"bsds300: datasets {missing} not found in {path}")
        return f["train"][:], f["validation"][:], f["test"][:]


_LOADERS: dict[str, Callable[[Path], Splits]] = {
    "power": load_power,
    "gas": load_gas,
    "hepmass": load_hepmass,
    "miniboone": load_miniboone,
    "bsds300": load_bsds300,
}


def tabular_available(name: str, root: Path) -> bool:
    """Whether the files of ``name`` exist under ``root`` and its optional module imports."""
    module = TABULAR_DATASETS[name][2]
    if module is not None and importlib.util.find_spec(module) is None:
        return False
    try:
        _check_files(name, root)
    except DataError:
        return False
    return True


def load_tabular(name: str, root: Path) -> Dataset:
    """Load a MAF benchmark set from the data root ``root`` with the published preprocessing.

    Args:
        name: one of :data:`TABULAR_DATASETS`.
        root: the data root holding one folder per dataset.

    Returns:
        A ``"tabular"`` :class:`Dataset` with float32 ``(n, D)`` splits and no standardizer (the
        published standardisation is applied).
    """
    _check_files(name, root)
    splits = _LOADERS[name](root)
    train, val, test = (as_float32(a) for a in splits)
    for part, t in zip(("train", "val", "test"), (train, val, test)):
        if t.ndim != 2 or t.shape[0] == 0:
            raise DataError(f"{name}: the {part} split is empty or not 2-D: {tuple(t.shape)}")
    return Dataset(
        name=name, kind="tabular", event_shape=(train.shape[1],), train=train, val=val, test=test
    )
