"""The moving average of the weights moved to :mod:`flowforge.fit.ema` (re-exported here)."""

from flowforge.fit.ema import WeightAverage

__all__ = ["WeightAverage"]
