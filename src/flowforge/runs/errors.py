"""The one-line errors of run directories and of the options that describe a run.

Both are :class:`ValueError` subclasses whose message is one line naming what was expected; the
command line prints them without a traceback (exit status 2).
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ConfigError", "RunError", "refuse_fixed_options"]


class RunError(ValueError):
    """A run directory or one of its files is missing, corrupted or not flowforge's (one line)."""


class ConfigError(ValueError):
    """A bad option: unknown key, wrong type or a value outside its valid range (one line).

    Raised by the training options (:mod:`flowforge.train.config`) and by a flow recipe whose
    preset is unknown or rejects its options (:mod:`flowforge.runs.recipe`).
    """


def refuse_fixed_options(overrides: Iterable[str], allowed: Iterable[str], config: object) -> None:
    """Refuse, naming the first, the options a resumed run cannot change.

    Args:
        overrides: the option names given on resume.
        allowed: the names that may change.
        config: the run's config file, named in the message.

    Raises:
        ConfigError: when an override is not in ``allowed``.
    """
    allowed = list(allowed)
    fixed = sorted(k for k in overrides if k not in allowed)
    if fixed:
        flag = "--" + fixed[0].replace("_", "-")
        raise ConfigError(
            f"{flag} cannot change when resuming (it comes from {config}); "
            f"options that can: {', '.join('--' + k.replace('_', '-') for k in allowed)}"
        )
