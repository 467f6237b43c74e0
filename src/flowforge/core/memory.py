"""Sizes that cannot fit: this machine's memory, and the one-line refusal of a size above it."""

from __future__ import annotations

import os

__all__ = ["physical_memory", "too_big"]


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None


def too_big(nbytes: float, what: str) -> str | None:
    """A one-line reason why ``nbytes`` (at least) of ``what`` cannot fit, or ``None``.

    Example:
        >>> too_big(1.0, "a float") is None
        True
        >>> too_big(1e30, "10^29 floats").split(",")[0]
        'at least 1e+30 bytes for 10^29 floats'
    """
    total = physical_memory()
    if total is None or nbytes <= total:
        return None
    return f"at least {nbytes:.3g} bytes for {what}, more than this machine's memory ({total:.3g})"
