"""A fresh machine has only the extras it installed: a missing optional dependency is one line
naming the extra, before anything is written; the README names every extra."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from cli_util import TINY, assert_bad_input, run_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_ffjord_without_torchdiffeq_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchdiffeq", None)  # `import torchdiffeq` fails
    proc = run_cli("train", "--flow", "ffjord", *TINY, "--steps", "2", "--out", "run", cwd=tmp_path)
    assert_bad_input(proc, "torchdiffeq", "pip install 'flowforge[ode]'")
    assert not (tmp_path / "run").exists()
    proc = run_cli("vi", "--flow", "ffjord", "--steps", "2", "--out", "vi", cwd=tmp_path)
    assert_bad_input(proc, "pip install 'flowforge[ode]'")
    assert not (tmp_path / "vi").exists()


def test_ffjord_preset_without_torchdiffeq_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowforge as ff
    from flowforge.core.extras import MissingExtra

    monkeypatch.setitem(sys.modules, "torchdiffeq", None)
    with pytest.raises(MissingExtra, match=re.escape("flowforge[ode]")):
        ff.flows.FFJORD(features=2)


def test_readme_names_every_extra() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    readme = (ROOT / "README.md").read_text()
    for extra in extras:
        assert f"`{extra}`" in readme or f"[{extra}]" in readme, extra


def test_the_readme_test_command_runs_on_every_core() -> None:
    """pytest-xdist is in the test extra and the default options use it (serial, the suite
    took 15 min 44 s on 2 busy cores)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(
        d.startswith("pytest-xdist") for d in project["project"]["optional-dependencies"]["test"]
    )
    addopts = project["tool"]["pytest"]["ini_options"]["addopts"].split()
    assert "-n" in addopts and addopts[addopts.index("-n") + 1] == "auto"
