"""The one writer of a run directory, for every kind of run.

``flowforge train``, ``flowforge vi`` (and :func:`flowforge.vi.run_vi`) and the scikit-learn
estimators' :meth:`~flowforge.sklearn.FlowDensity.save` all write their run directory through a
:class:`RunWriter`; no other code creates, locks, writes into or finishes one. It:

- refuses a folder that is not a run (:func:`check_new_run`): an existing, non-empty folder is
  refused unless ``overwrite`` is set *and* it holds a run, and then only the files a run
  writes are removed (:data:`RUN_FILES`; a file the run did not write is never deleted);
- holds the run's exclusive lock (:class:`~flowforge.runs.lock.RunLock`) from creation to
  :meth:`RunWriter.finish` (or :meth:`RunWriter.close`): a second writer on the same folder,
  in this process or another, fails at once with one line naming the holder's PID;
- writes every file atomically (temporary file, then rename) except ``metrics.jsonl``, which
  is appended to line by line and flushed (a torn last line is skipped on reading);
- finishes a run by writing ``results.json`` last: a run without it is *incomplete*
  (:mod:`flowforge.runs.status`), whatever its kind.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> w = RunWriter.create(root, {"format": "flowforge-run", "total_steps": 0})
    >>> w.finish({"steps": 0}); sorted(p.name for p in root.iterdir())
    ['config.json', 'results.json']
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from flowforge.runs.atomic import atomic_write_bytes, atomic_write_json
from flowforge.runs.checkpoint import save_checkpoint
from flowforge.runs.errors import ConfigError, RunError
from flowforge.runs.layout import RUN_FORMAT, RunFiles, read_run_record, run_files
from flowforge.runs.lock import LOCK_FILE, RunLock, lock_holder
from flowforge.runs.metrics import MetricsLog
from flowforge.runs.weights import save_weights

__all__ = ["RUN_FILES", "RunWriter", "check_new_run", "is_run_dir"]

#: The names (glob patterns) of the files a run writes: ``--overwrite`` removes these only.
RUN_FILES = (
    "config.json",
    "auto.json",
    "results.json",
    "metrics.jsonl",
    "data.npy",
    "*.safetensors",
    "*.safetensors.sha256",
    "*.png",
    ".*.tmp",
    LOCK_FILE,
)


def is_run_dir(root: str | os.PathLike[str]) -> bool:
    """Whether ``root`` holds a flowforge run (a ``config.json`` of the run format)."""
    import json

    try:
        record = json.loads((Path(root) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("format") == RUN_FORMAT


def _entries(root: Path) -> list[Path]:
    """The folder's entries, less an unheld lock file left by a killed run."""
    return [p for p in root.iterdir() if p.name != LOCK_FILE]


def check_new_run(
    root: str | os.PathLike[str],
    overwrite: bool | None = None,
    resume: str | None = None,
) -> Path:
    """Check that a new run may be written to ``root`` (nothing is written).

    Args:
        root: the run directory to be.
        overwrite: ``True``: an existing run there may be replaced; ``False``: it may not
            (the message suggests ``--overwrite``); ``None``: it may not, and the program has
            no such option.
        resume: the command that continues a run found there (named in the message when the
            run has a checkpoint), e.g. ``"flowforge train --resume"``.

    Returns:
        ``root`` as a path.

    Raises:
        RunError: ``root`` is in use by another process (the message names its PID).
        ConfigError: ``root`` is a file; a non-empty folder that is not a run; or it holds a
            run and ``overwrite`` is not ``True``.
    """
    out = Path(root)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output {out} exists and is not a folder")
    if not out.is_dir():
        return out
    holder = lock_holder(out)
    if holder is not None:
        raise RunError(
            f"{out} is in use by another flowforge process (PID {holder}); wait for it to "
            "finish, or stop it, or choose another --out"
        )
    if _entries(out):
        _refuse_existing(out, overwrite, resume)
    return out


def _refuse_existing(out: Path, overwrite: bool | None, resume: str | None) -> None:
    """Refuse the non-empty folder ``out`` unless it holds a run and ``overwrite`` is set."""
    if not is_run_dir(out):
        raise ConfigError(
            f"output folder {out} already exists, is not empty and is not a flowforge run; "
            "nothing was changed (choose another --out)"
        )
    if not overwrite:
        hint = " (--overwrite replaces it)" if overwrite is False else ""
        if resume is not None and run_files(out).checkpoint.exists():
            hint += f"; continue it with {resume} {out}"
        raise ConfigError(f"output folder {out} already exists and is not empty{hint}")


def _remove_run_files(root: Path, keep: tuple[str, ...] = ()) -> None:
    """Remove the files of the run in ``root`` (and its trials' runs); nothing else."""
    for p in root.iterdir():
        if p.name in keep or not p.is_file():
            continue
        if any(fnmatch.fnmatch(p.name, pat) for pat in RUN_FILES):
            p.unlink(missing_ok=True)
    trials = root / "trials"  # --flow auto: one run per trial
    if trials.is_dir():
        for trial in trials.iterdir():
            if trial.is_dir() and is_run_dir(trial):
                _remove_run_files(trial)
                if not any(trial.iterdir()):
                    trial.rmdir()
        if not any(trials.iterdir()):
            trials.rmdir()


class RunWriter:
    """Writes one run directory, holding its lock until :meth:`finish` or :meth:`close`.

    Make one with :meth:`create` (a new run) or :meth:`reopen` (``--resume``). Used as a
    context manager, it releases the lock on leaving (finished or not).

    Attributes:
        files: the run's paths.
        metrics: its ``metrics.jsonl``.
    """

    def __init__(self, root: Path, lock: RunLock) -> None:
        self.files: RunFiles = run_files(root)
        self.metrics = MetricsLog(self.files.metrics)
        self._lock = lock

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def reserve(
        cls,
        root: str | os.PathLike[str],
        overwrite: bool | None = None,
        resume: str | None = None,
    ) -> RunWriter:
        """Create the folder ``root`` of a new run and lock it, writing nothing yet.

        The checks of :func:`check_new_run` run again under the lock (another process may
        have written there since they first ran). With ``overwrite``, the files of the run
        found there are removed, and only those.

        Raises:
            RunError, ConfigError: as :func:`check_new_run`.
        """
        out = check_new_run(root, overwrite, resume)
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out)
        try:
            if _entries(out):  # the run to replace, or written there since the first check
                _refuse_existing(out, overwrite, resume)
                _remove_run_files(out, keep=(LOCK_FILE,))
        except (RunError, ConfigError):
            lock.release()
            raise
        return cls(out, lock)

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str],
        record: dict[str, Any],
        overwrite: bool | None = None,
        resume: str | None = None,
    ) -> RunWriter:
        """:meth:`reserve` the folder ``root``, then write the run's record ``config.json``."""
        writer = cls.reserve(root, overwrite, resume)
        writer.write_record(record)
        return writer

    @classmethod
    def reopen(cls, root: str | os.PathLike[str]) -> RunWriter:
        """Lock the existing run ``root`` to continue it, and remove the half-written files
        (``.*.tmp``) a killed run left.

        Raises:
            RunError: it is in use by another process (naming its PID).
        """
        files = run_files(root)
        read_run_record(files.root)  # a run directory (a clear error for anything else)
        writer = cls(files.root, RunLock(files.root))
        for stale in files.root.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return writer

    # -- writing ------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self._lock.held:
            raise RunError(f"{self.files.root}: the run was closed; nothing more is written")

    def write_record(self, record: dict[str, Any]) -> None:
        """Write ``config.json`` (atomically)."""
        self._check()
        atomic_write_json(self.files.config, record)

    def write_weights(
        self, weights: nn.Module | dict[str, Tensor], name: str | None = None
    ) -> None:
        """Write a weights file (default ``model.safetensors``) with its checksum."""
        self._check()
        save_weights(self.files.weights if name is None else self.files.root / name, weights)

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``checkpoint.safetensors``: a whole training state (see
        :func:`~flowforge.runs.checkpoint.save_checkpoint`)."""
        self._check()
        save_checkpoint(self.files.checkpoint, state)

    def remove_checkpoint(self) -> None:
        """Remove the checkpoint and its checksum (a finished run that keeps none)."""
        self._check()
        ckpt = self.files.checkpoint
        for done in (ckpt, ckpt.with_name(ckpt.name + ".sha256")):
            done.unlink(missing_ok=True)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write the file ``name`` of the run (atomically); returns its path."""
        self._check()
        path = self.files.root / name
        atomic_write_bytes(path, data)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        """Write the JSON file ``name`` of the run (atomically); returns its path."""
        self._check()
        path = self.files.root / name
        atomic_write_json(path, obj)
        return path

    def copy_run(self, source: str | os.PathLike[str]) -> None:
        """Copy the files of the run ``source`` into this run, all but ``results.json`` (which
        :meth:`write_results` writes last)."""
        self._check()
        skip = (LOCK_FILE, "results.json")
        for f in sorted(p for p in Path(source).iterdir() if p.is_file() and p.name not in skip):
            self.write_bytes(f.name, f.read_bytes())

    def write_plots(self, draw: Callable[[Path], Iterable[Path]]) -> list[Path]:
        """Call ``draw(root)``, which writes PNG files into the run directory (atomically,
        with :func:`flowforge.runs.atomic.atomic_write_bytes`), and return their paths."""
        self._check()
        return list(draw(self.files.root))

    # -- ending -------------------------------------------------------------------------------

    def write_results(self, results: dict[str, Any]) -> None:
        """Write ``results.json``, the mark of a finished run (the lock stays held: plots may
        follow; :meth:`close` releases it)."""
        self._check()
        atomic_write_json(self.files.results, results)

    def finish(self, results: dict[str, Any]) -> None:
        """:meth:`write_results`, then :meth:`close`."""
        self.write_results(results)
        self.close()

    def close(self) -> None:
        """Release the lock (the run stays as it is: finished, or incomplete)."""
        self._lock.release()

    def discard(self) -> None:
        """Remove the run's files (a fresh run that failed before its first step) and release
        the lock; the folder goes too when that leaves it empty."""
        if self._lock.held:
            _remove_run_files(self.files.root)
            self._lock.release()
            with contextlib.suppress(OSError):
                self.files.root.rmdir()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
