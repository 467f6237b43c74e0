"""The training engine shared by ``flowforge train``, ``flowforge vi`` and the estimators.

Between :mod:`flowforge.runs` and the programs that fit (:mod:`flowforge.train`,
:mod:`flowforge.vi`, :mod:`flowforge.sklearn`), which share it and not each other's code. It
holds :func:`~flowforge.fit.device.resolve_device` (the one device rule) and
:class:`~flowforge.fit.schedule.LRSchedule` (the one learning-rate schedule).
"""

from flowforge.fit.device import resolve_device
from flowforge.fit.schedule import LRSchedule

__all__ = ["LRSchedule", "resolve_device"]
