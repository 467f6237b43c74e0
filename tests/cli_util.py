"""Run the real command line as a subprocess (``python -m flowforge``), the way users do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Small runs that finish in a few seconds: tests pass these after the command.
TINY = ["--quiet", "--no-plots", "--n-val", "500", "--n-test", "500", "--transforms", "2"]
TINY += ["--hidden", "16,16"]
#: ``TINY`` for tables and images, whose --n-val / --n-test (rows held out) keep their 10% default.
TINY_TABLE = ["--quiet", "--no-plots", "--transforms", "2", "--hidden", "16,16"]


def cli_env() -> dict[str, str]:
    """The environment of the subprocess: the source tree importable, one CPU thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def flowforge(
    *args: str | Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowforge ARGS`` in ``cwd`` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "flowforge", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m flowforge ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "flowforge", *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """Exit status 0, with the output in the failure message."""
    assert proc.returncode == 0, (
        f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )


def assert_bad_input(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback, naming every fragment."""
    err = proc.stderr
    assert proc.returncode == 2, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err
