"""Bijections and elementwise transformers."""

from flowforge.transforms.additive import Additive
from flowforge.transforms.affine import Affine
from flowforge.transforms.autoregressive import MaskedAutoregressive
from flowforge.transforms.bounds import Bounds
from flowforge.transforms.continuous import CNF, SolverError
from flowforge.transforms.conv1x1 import Conv1x1, LUConv1x1
from flowforge.transforms.coupling import Coupling, half_mask
from flowforge.transforms.embed_context import EmbedContext
from flowforge.transforms.image_coupling import ChannelCoupling, CheckerboardCoupling, checkerboard
from flowforge.transforms.logit import Logit
from flowforge.transforms.lu import LULinear
from flowforge.transforms.multiscale import Multiscale
from flowforge.transforms.normalization import ActNorm, BatchNorm
from flowforge.transforms.permutation import Permutation, RandomPermutation, ReversePermutation
from flowforge.transforms.planar import Planar
from flowforge.transforms.radial import Radial
from flowforge.transforms.reshape import Reshape, Squeeze, Squeeze1d
from flowforge.transforms.sigmoid_affine import SigmoidAffine
from flowforge.transforms.source_shift import SourceShift
from flowforge.transforms.spline import RationalQuadraticSpline
from flowforge.transforms.standardize import Standardize
from flowforge.transforms.sylvester import Sylvester
from flowforge.transforms.transformer import Transformer
from flowforge.transforms.transformer_autoregressive import (
    Guidance,
    TransformerAutoregressive,
    guided,
)
from flowforge.transforms.whiten import Whiten

__all__ = [
    "CNF",
    "ActNorm",
    "Additive",
    "Affine",
    "BatchNorm",
    "Bounds",
    "ChannelCoupling",
    "CheckerboardCoupling",
    "Conv1x1",
    "Coupling",
    "EmbedContext",
    "Guidance",
    "LUConv1x1",
    "LULinear",
    "Logit",
    "MaskedAutoregressive",
    "Multiscale",
    "Permutation",
    "Planar",
    "Radial",
    "RandomPermutation",
    "RationalQuadraticSpline",
    "Reshape",
    "ReversePermutation",
    "SigmoidAffine",
    "SolverError",
    "SourceShift",
    "Squeeze",
    "Squeeze1d",
    "Standardize",
    "Sylvester",
    "Transformer",
    "TransformerAutoregressive",
    "Whiten",
    "checkerboard",
    "guided",
    "half_mask",
]
