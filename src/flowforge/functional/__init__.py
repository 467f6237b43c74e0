"""Pure numeric kernels used by the transforms."""

from flowforge.functional.splines import rational_quadratic_spline

__all__ = ["rational_quadratic_spline"]
