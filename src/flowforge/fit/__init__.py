"""The training engine shared by ``flowforge train``, ``flowforge vi`` and the estimators.

Between :mod:`flowforge.runs` and the programs that fit (:mod:`flowforge.train`,
:mod:`flowforge.vi`, :mod:`flowforge.sklearn`), which share it and not each other's code. It
holds, so far, :func:`~flowforge.fit.device.resolve_device` (the one device rule); the fit
loop, its schedule and its state move here next.
"""

from flowforge.fit.device import resolve_device

__all__ = ["resolve_device"]
