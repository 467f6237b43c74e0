"""The one progress display of every fit: a tqdm bar on stderr, with messages printed above it.

``flowforge train``, :func:`~flowforge.vi.fit_vi` (``progress=True``) and the estimators
(``verbose=True``; silent by default) show their progress through :class:`Progress`. tqdm is
imported only when a bar is shown, so ``import flowforge`` stays light. In a log file (stderr
not a terminal) the bar refreshes at most every 2 seconds, so it writes few lines.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """A progress bar over ``total`` units, or nothing when not ``enabled``.

    Args:
        total: the units of the whole fit (steps or epochs).
        initial: the units already done (a resumed fit).
        enabled: show the bar (else every method but :meth:`write` does nothing).
        unit: the unit's name (``"step"``, ``"epoch"``).
        desc: the bar's label.
        leave: keep the finished bar on screen.
        every: :meth:`show` refreshes the bar's figures every ``every`` units (and at the last).

    Example:
        >>> with Progress(3, enabled=False) as bar:
        ...     for step in range(1, 4):
        ...         bar.show(step, {"loss": f"{1 / step:.3f}"})
        >>> bar.bar is None
        True
    """

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        enabled: bool = True,
        unit: str = "step",
        desc: str | None = None,
        leave: bool = True,
        every: int = 10,
    ) -> None:
        self.total, self.every = total, every
        self.bar: Any = None
        if enabled:
            from tqdm.auto import tqdm  # lazily: import flowforge stays light

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                leave=leave,
                unit=unit,
                dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 2.0,  # fewer lines in a log file
                file=sys.stderr,
            )

    def show(self, done: int, figures: Mapping[str, str]) -> None:
        """Advance the bar by one unit, ``done`` units being done; every :attr:`every` units (and
        at the last) show ``figures`` beside it."""
        if self.bar is None:
            return
        if done % self.every == 0 or done == self.total:
            self.bar.set_postfix(figures, refresh=False)
        self.bar.update(1)

    def write(self, msg: str) -> None:
        """Print ``msg`` on stderr, above the bar when there is one."""
        if self.bar is None:
            print(msg, file=sys.stderr)
        else:
            self.bar.write(msg, file=sys.stderr)

    def close(self) -> None:
        """Take the bar down (keeping its last line when ``leave``)."""
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()
