"""The learning-rate schedule moved to :mod:`flowforge.fit.schedule` (re-exported here)."""

from flowforge.fit.schedule import LRSchedule

__all__ = ["LRSchedule"]
