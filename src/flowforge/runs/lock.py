"""The exclusive lock of a run directory: one writer at a time, for the life of the run.

The lock is an ``flock`` on the file ``.lock`` inside the run directory, which holds the PID of
its holder. The operating system releases it when the holder exits, however it exits (a killed
run leaves an unlocked ``.lock`` file, which the next writer takes over). A second writer fails
at once with one line naming the holder's PID; it never waits.

On a system without ``fcntl`` (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from flowforge.runs.errors import RunError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunLock", "lock_holder"]

#: The lock file of a run directory.
LOCK_FILE = ".lock"


def _holder_pid(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _in_use(root: Path, pid: str) -> RunError:
    return RunError(
        f"{root} is in use by another flowforge process (PID {pid}); wait for it to finish, "
        "or stop it, or choose another --out"
    )


def lock_holder(root: str | os.PathLike[str]) -> str | None:
    """The PID (as text) of the process that holds the lock of ``root``, or ``None``.

    A ``.lock`` file that nobody holds (left by a killed run) is ``None``.
    """
    path = Path(root) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder_pid(path)
    finally:
        os.close(fd)  # also drops the shared lock just taken
    return None


class RunLock:
    """The exclusive lock of the run directory ``root`` (which must exist), taken at once.

    Args:
        root: the run directory.

    Raises:
        RunError: another process holds it (the message names its PID).

    Example:
        >>> import tempfile
        >>> root = tempfile.mkdtemp()
        >>> lock = RunLock(root)
        >>> lock_holder(root) == str(os.getpid())
        True
        >>> RunLock(root)
        Traceback (most recent call last):
        ...
        flowforge.runs.errors.RunError: ... is in use by another flowforge process (PID ...
        >>> lock.release(); lock_holder(root) is None
        True
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None
        if fcntl is None:  # pragma: no cover - Windows
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise _in_use(self.root, _holder_pid(self.path)) from None
            # the holder before us may have removed the file between our open and our lock:
            # the lock is then on a file nobody else will see; take the one at the path
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __del__(self) -> None:  # the process keeps no lock of a writer it forgot
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
