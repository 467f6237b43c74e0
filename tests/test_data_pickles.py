"""No file read may run code: every pickle flowforge reads (GAS's pandas frame, CIFAR's
batches) is unpickled with an allow-list, through the library, ``flowforge train`` and a run
whose edited config.json points at a crafted folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from cli_util import TINY_TABLE, assert_bad_input, assert_ok, run_cli
from flowforge.data import DataError, load_dataset

pd = pytest.importorskip("pandas")


class _Touch:
    """Unpickling this calls ``os.system('touch MARKER')``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch '{self.marker}'",))


class _Open:
    """Unpickling this calls ``open(MARKER, 'w')``, which creates the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _short(text: bytes) -> bytes:
    """A SHORT_BINUNICODE opcode."""
    return b"\x8c" + bytes([len(text)]) + text


def _crafted(marker: Path) -> dict[str, bytes]:
    """Pickles that create ``marker`` when a plain unpickler reads them."""
    m = str(marker).encode()
    return {
        "os.system": pickle.dumps(_Touch(marker)),
        "open": pickle.dumps(_Open(marker)),
        # a frame whose object column holds the payload
        "in a frame": pickle.dumps(pd.DataFrame({"a": [1.0], "b": [_Touch(marker)]})),
        # a pandas class that writes a file when called (protocol 0 GLOBAL + REDUCE)
        "pandas class": b"cpandas.io.pytables\nHDFStore\n(V" + m + b"\nVw\ntR.",
        # a dotted name that walks from an allowed module to os.system (protocol 4)
        "dotted": b"\x80\x04"
        + _short(b"pandas")
        + _short(b"io.common.os.system")
        + b"\x93"
        + _short(b"touch " + m)
        + b"\x85R.",
    }


@pytest.mark.parametrize("kind", ["os.system", "open", "in a frame", "pandas class", "dotted"])
def test_a_crafted_gas_pickle_runs_nothing(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas/ethylene_CO.pickle").write_bytes(_crafted(marker)[kind])
    with pytest.raises(DataError, match=r"refusing to unpickle.*convert it once") as info:
        load_dataset("gas", data_dir=tmp_path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_a_plain_unpickler_would_run_them(tmp_path: Path) -> None:
    """The payloads are real: the standard unpickler creates the marker with each of them
    (the pandas-class one needs PyTables, the others only this interpreter)."""
    marker = tmp_path / "PWNED"
    for kind, data in _crafted(marker).items():
        if kind == "pandas class":
            continue
        try:
            made = pickle.loads(data)
        except Exception:
            made = None
        if hasattr(made, "close"):
            made.close()
        assert marker.exists(), kind
        marker.unlink()


def test_train_and_an_edited_run_refuse_a_crafted_gas_folder(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "gas").mkdir(parents=True)
    marker = tmp_path / "PWNED"
    (bad / "gas/ethylene_CO.pickle").write_bytes(_crafted(marker)["os.system"])
    proc = run_cli("train", "--data", "gas", "--data-dir", bad, *TINY_TABLE, cwd=tmp_path)
    assert_bad_input(proc, "refusing to unpickle", "posix.system")
    assert not marker.exists() and not (tmp_path / "runs").exists()
    # a run trained on a GAS-like frame, then its config.json edited to read the crafted folder
    good = tmp_path / "good"
    (good / "gas").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 11)), columns=[f"c{i}" for i in range(11)])
    frame = frame.rename(columns={"c0": "Time", "c1": "Meth", "c2": "Eth"})
    frame.to_pickle(good / "gas/ethylene_CO.pickle")
    args = ["--data", "gas", "--data-dir", good, "--steps", "2", "--out", "run"]
    assert_ok(run_cli("train", *TINY_TABLE, *args, cwd=tmp_path))
    shutil.rmtree(good)
    config = tmp_path / "run/config.json"
    text = config.read_text()
    assert str(good) in text
    config.write_text(text.replace(json.dumps(str(good))[1:-1], json.dumps(str(bad))[1:-1]))
    proc = run_cli("eval", "run", cwd=tmp_path)
    assert_bad_input(proc, "refusing to unpickle")
    assert not marker.exists()
