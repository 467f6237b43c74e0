"""Preset flows: each wires the core classes into a published architecture.

``PRESETS`` maps a lowercase name to its class, for configs and the command line.
"""

from flowforge.core.flow import Flow
from flowforge.flows.autoregressive import IAF, MAF
from flowforge.flows.coupling import NICE, RealNVP
from flowforge.flows.ffjord import FFJORD
from flowforge.flows.glow import Glow
from flowforge.flows.multiscale_realnvp import MultiscaleRealNVP
from flowforge.flows.spline import NSF
from flowforge.flows.tarflow import TarFlow
from flowforge.flows.vi import Planar, Radial, Sylvester
from flowforge.flows.waveglow import WaveGlow

PRESETS: dict[str, type[Flow]] = {
    "nice": NICE,
    "realnvp": RealNVP,
    "maf": MAF,
    "iaf": IAF,
    "nsf": NSF,
    "glow": Glow,
    "multiscale_realnvp": MultiscaleRealNVP,
    "planar": Planar,
    "radial": Radial,
    "sylvester": Sylvester,
    "ffjord": FFJORD,
    "tarflow": TarFlow,
    "waveglow": WaveGlow,
}

__all__ = [
    "FFJORD",
    "IAF",
    "MAF",
    "NICE",
    "NSF",
    "PRESETS",
    "Glow",
    "MultiscaleRealNVP",
    "Planar",
    "Radial",
    "RealNVP",
    "Sylvester",
    "TarFlow",
    "WaveGlow",
]
