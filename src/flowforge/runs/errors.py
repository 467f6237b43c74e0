"""The one-line errors of run directories and of the options that describe a run.

Both are :class:`ValueError` subclasses whose message is one line naming what was expected; the
command line prints them without a traceback (exit status 2).
"""

from __future__ import annotations

__all__ = ["ConfigError", "RunError"]


class RunError(ValueError):
    """A run directory or one of its files is missing, corrupted or not flowforge's (one line)."""


class ConfigError(ValueError):
    """A bad option: unknown key, wrong type or a value outside its valid range (one line).

    Raised by the training options (:mod:`flowforge.train.config`) and by a flow recipe whose
    preset is unknown or rejects its options (:mod:`flowforge.runs.recipe`).
    """
