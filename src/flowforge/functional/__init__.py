"""Pure numeric kernels used by the transforms, and the switch that decides when they run."""

from flowforge.functional.dispatch import eager_kernels_allowed, plain_modules
from flowforge.functional.splines import rational_quadratic_spline

__all__ = ["eager_kernels_allowed", "plain_modules", "rational_quadratic_spline"]
