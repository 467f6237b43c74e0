"""Moved to :mod:`flowforge.dequantization` (data knows no models); kept for old imports."""

from flowforge.dequantization import *  # noqa: F403
from flowforge.dequantization import __all__  # noqa: F401
