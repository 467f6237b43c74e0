"""Run the real command line: as a subprocess (``python -m flowforge``), the way users do, or
in this process (:func:`run_cli`), which skips the 2-3 s that a fresh interpreter spends
importing torch.

Both return a :class:`subprocess.CompletedProcess` with ``returncode``, ``stdout`` and
``stderr``, so a test reads the same either way. Keep :func:`flowforge` for what only a real
process shows (the ``python -m flowforge`` entry point, signals, what reaches the streams of a
process); use :func:`run_cli` for what a command computes and writes.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"

# Small runs that finish in a few seconds: tests pass these after the command.
TINY = ["--quiet", "--no-plots", "--n-val", "500", "--n-test", "500", "--transforms", "2"]
TINY += ["--hidden", "16,16"]
#: ``TINY`` for tables and images, whose --n-val / --n-test (rows held out) keep their 10% default.
TINY_TABLE = ["--quiet", "--no-plots", "--transforms", "2", "--hidden", "16,16"]


def tiny_tarflow(steps: int) -> list[str]:
    """Flags of a tiny TarFlow run of ``steps`` steps on the digits, validated twice."""
    return [
        *("--quiet", "--no-plots", "--steps", str(steps), "--eval-every", str(steps // 2)),
        *("--warmup-steps", "0", "--lr", "1e-2", "--ema-decay", "0"),
        *("--flow-options", '{"blocks": 2, "layers": 1, "width": 16, "heads": 2}'),
    ]


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


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11) for Python 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``flowforge ARGS`` through ``flowforge.cli.main`` in this process, as a subprocess sees it.

    It runs in ``cwd`` with its own stdout and stderr; the exit status is what ``main`` returns
    or argparse exits with; an exception that escapes ``main`` gives status 1 and its traceback
    on stderr, as the interpreter would. Warnings follow a fresh interpreter's default filters
    (not pytest's ``error``) and are written to the captured stderr. The random generators,
    torch's thread count and default dtype are restored afterwards, so the test process is left
    as it was.
    """
    from flowforge.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    state = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.resetwarnings()  # a fresh interpreter's defaults, in the order it lists them
        for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning):
            warnings.simplefilter("ignore", category)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")
        try:
            code: object = main(argv)
        except SystemExit as e:  # argparse: --help, --version, bad flags
            code = e.code
        except Exception:
            traceback.print_exc(file=err)
            code = 1
        for w in caught:
            err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    torch.random.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"): printed, status 1
        err.write(f"{code}\n")
        code = 1
    return subprocess.CompletedProcess(["flowforge", *argv], code, out.getvalue(), err.getvalue())
