"""The training engine shared by ``flowforge train``, ``flowforge vi`` and the estimators.

Between :mod:`flowforge.runs` and the programs that fit (:mod:`flowforge.train`,
:mod:`flowforge.vi`, :mod:`flowforge.sklearn`), which share it and not each other's code. It
holds :func:`~flowforge.fit.device.resolve_device` (the one device rule),
:class:`~flowforge.fit.schedule.LRSchedule` (the one learning-rate schedule), the step engine
(:class:`~flowforge.fit.loop.Stepper`, :class:`~flowforge.fit.loop.KeepBest`), the moving
average of the weights (:class:`~flowforge.fit.ema.WeightAverage`), the last good state and the
NaN policy (:class:`~flowforge.fit.recovery.Recovery`), the epochs of shuffled minibatches of
in-memory rows (:func:`~flowforge.fit.batches.shuffled_batches`), mixed precision
(:mod:`~flowforge.fit.precision`) and data-parallel training (:mod:`~flowforge.fit.distributed`).
"""

from flowforge.fit.device import resolve_device
from flowforge.fit.ema import WeightAverage
from flowforge.fit.loop import KeepBest, NonFiniteStep, Stepper
from flowforge.fit.recovery import NonFiniteLoss, Recovery
from flowforge.fit.schedule import LRSchedule

__all__ = [
    "KeepBest",
    "LRSchedule",
    "NonFiniteLoss",
    "NonFiniteStep",
    "Recovery",
    "Stepper",
    "WeightAverage",
    "resolve_device",
]
