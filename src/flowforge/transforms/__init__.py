"""Bijections and elementwise transformers."""

from flowforge.transforms.autoregressive import MaskedAutoregressive
from flowforge.transforms.coupling import Coupling, half_mask
from flowforge.transforms.elementwise import Additive, Affine, RationalQuadraticSpline, Transformer
from flowforge.transforms.logit import Logit
from flowforge.transforms.lu import LULinear
from flowforge.transforms.normalization import ActNorm, BatchNorm
from flowforge.transforms.permutation import Permutation, RandomPermutation, ReversePermutation
from flowforge.transforms.reshape import Reshape
from flowforge.transforms.standardize import Standardize

__all__ = [
    "ActNorm",
    "Additive",
    "Affine",
    "BatchNorm",
    "Coupling",
    "LULinear",
    "Logit",
    "MaskedAutoregressive",
    "Permutation",
    "RandomPermutation",
    "RationalQuadraticSpline",
    "Reshape",
    "ReversePermutation",
    "Standardize",
    "Transformer",
    "half_mask",
]
