"""Argument checks and the base choice shared by the preset files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flowforge.distributions.base import BaseDistribution, StandardNormal


def check_args(
    name: str, features: int, context: int, transforms: int, hidden: Sequence[int]
) -> None:
    """Raise ``ValueError`` naming the bad argument of a preset."""
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: expected features >= 1, got {features!r}")
    if not isinstance(context, int) or context < 0:
        raise ValueError(f"{name}: expected context >= 0, got {context!r}")
    if not isinstance(transforms, int) or transforms < 1:
        raise ValueError(f"{name}: expected transforms >= 1, got {transforms!r}")
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"{name}: expected positive hidden sizes, got {tuple(hidden)!r}")


def preset_hparams(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Check a preset's common arguments; return its hyper-parameters as a JSON-able dict.

    Args:
        name: the preset's name, for error messages.
        args: the constructor's ``locals()``, taken before it defines anything else.
    """
    check_args(name, args["features"], args["context"], args["transforms"], args["hidden"])
    skip = {"self", "base", "__class__"}
    return {
        k: list(v) if isinstance(v, tuple | list) else v for k, v in args.items() if k not in skip
    }


def default_base(features: int, base: BaseDistribution | None) -> BaseDistribution:
    """The given base, or a standard normal over ``features``."""
    if base is None:
        return StandardNormal(features)
    if tuple(base.event_shape) != (features,):
        raise ValueError(
            f"expected a base with event shape ({features},), got {tuple(base.event_shape)}"
        )
    return base


__all__ = ["check_args", "default_base", "preset_hparams"]
