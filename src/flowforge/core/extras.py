"""Optional dependencies: import one, or fail with one line naming the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtra` naming the extra that installs it.

    Args:
        module: the module to import (``"torchdiffeq"``).
        extra: flowforge's optional extra that installs it (``"ode"``).
        purpose: what needs it, the start of the message (``"FFJORD's ODE solves"``).

    Example:
        >>> require("math", "none", "arithmetic").sqrt(4.0)
        2.0
        >>> require("no_such_module_xyz", "ode", "the test")
        Traceback (most recent call last):
        ...
        flowforge.core.extras.MissingExtra: the test needs no_such_module_xyz, which is not installed: pip install 'flowforge[ode]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtra(
            f"{purpose} needs {module}, which is not installed: pip install 'flowforge[{extra}]'"
        ) from e
