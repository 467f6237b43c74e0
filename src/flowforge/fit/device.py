"""Where a fit runs: the tool's one device rule, for every kind of run."""

from __future__ import annotations

import torch

from flowforge.runs.errors import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (which must be available) or ``auto`` (cuda when available).

    Raises:
        ConfigError: for ``cuda`` on a machine without a usable GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use cpu or auto)")
    return torch.device(name)
