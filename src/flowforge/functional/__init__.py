"""Pure numeric kernels used by the transforms, and the switch that decides when they run.

The flat-parameter plumbing of the fused kernels (``join_layers``, ``split_layers``,
``layer_sizes``) lives in :mod:`flowforge.functional.flat`; the old names here still work.
"""

from flowforge.functional.affine import (
    AffineFunction,
    bounded_log_scale,
    bounded_log_scale_backward,
)
from flowforge.functional.dispatch import eager_kernels_allowed, plain_modules
from flowforge.functional.flat import (  # noqa: F401  plumbing: old imports keep working
    join_layers,
    layer_sizes,
    split_layers,
)
from flowforge.functional.splines import rational_quadratic_spline
from flowforge.functional.trace import (
    TraceEstimate,
    exact_trace,
    hutchinson_trace,
    trace_noise,
)

__all__ = [
    "AffineFunction",
    "TraceEstimate",
    "bounded_log_scale",
    "bounded_log_scale_backward",
    "eager_kernels_allowed",
    "exact_trace",
    "hutchinson_trace",
    "plain_modules",
    "rational_quadratic_spline",
    "trace_noise",
]
