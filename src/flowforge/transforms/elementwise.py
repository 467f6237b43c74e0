"""Elementwise transformers: the names, re-exported from their own files.

Kept for the imports that still name this module; new code imports from
:mod:`flowforge.transforms` (or :mod:`~flowforge.transforms.transformer`,
:mod:`~flowforge.transforms.additive`, :mod:`~flowforge.transforms.affine`,
:mod:`~flowforge.transforms.spline`).
"""

from flowforge.functional.affine import AffineFunction
from flowforge.transforms.additive import Additive
from flowforge.transforms.affine import Affine
from flowforge.transforms.spline import RationalQuadraticSpline
from flowforge.transforms.transformer import Transformer

__all__ = ["Additive", "Affine", "AffineFunction", "RationalQuadraticSpline", "Transformer"]
