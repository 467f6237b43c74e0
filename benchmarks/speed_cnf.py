"""The continuous flows of the speed benchmark: FFJORD on ``D = 2`` against zuko's CNF.

Both are one continuous flow with a ``3 x 64`` dynamics MLP, a standard normal base, the
exact trace and dopri5 at ``rtol = atol = 1e-5``, float32:

* flowforge: :class:`flowforge.flows.FFJORD` with its defaults (concat-squash layers, the
  trace propagated forward through the network);
* zuko: ``zuko.flows.CNF`` (its own dopri5 with adaptive-checkpoint adjoint, a
  ``2 x freqs`` sinusoidal time embedding concatenated to the input, ELU) with ``freqs = 6``,
  which matches flowforge's parameter count within 0.1% (its default 3 is 4% smaller).

Neither starts from a zero velocity: flowforge's last layer gets torch's default
initialisation, like zuko's, so both solve a random field of the same scale and the number
of function evaluations (NFE, reported beside the times) is comparable. The two solvers'
error norms differ (torchdiffeq: RMS per state component; zuko: max over entries, with the
log-density scaled by 1e-2), so the NFE of one call is part of what is compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

CNF_FLOWS = ("FFJORD",)
CNF_DIM = 2
CNF_HIDDEN = (64, 64, 64)
TOL = 1e-5
ZUKO_FREQS = 6


def build_flowforge_cnf(d: int) -> tuple[nn.Module, Callable[[], int]]:
    """flowforge's FFJORD and a function that returns the NFE of its latest call."""
    import flowforge as ff

    m: Any = ff.flows.FFJORD(features=d, hidden=CNF_HIDDEN, rtol=TOL, atol=TOL)
    cnf = m.bijection.bijections[0]
    cnf.net = ff.nn.ODENet(d, CNF_HIDDEN, activation=cnf.net.activation, zero_last=False)

    def nfe() -> int:
        return int(cnf.nfe_forward + cnf.nfe_backward)

    return m, nfe


def build_zuko_cnf(d: int) -> tuple[nn.Module, Callable[[], int]]:
    """zuko's CNF and a function that returns (and resets) the NFE since its last call."""
    import zuko

    m = zuko.flows.CNF(d, hidden_features=CNF_HIDDEN, freqs=ZUKO_FREQS, atol=TOL, rtol=TOL)
    count = [0]

    def hook(module: nn.Module, inputs: object) -> None:
        count[0] += 1  # one evaluation of the dynamics network

    m.transform.ode.register_forward_pre_hook(hook)

    def nfe() -> int:
        n, count[0] = count[0], 0
        return n

    return m, nfe


def measure_nfe(fn: Callable[[], Any], nfe: Callable[[], int]) -> int:
    """The evaluations of the dynamics that one call of ``fn`` makes."""
    nfe()  # reset a running counter
    fn()
    return nfe()


__all__ = [
    "CNF_DIM",
    "CNF_FLOWS",
    "CNF_HIDDEN",
    "build_flowforge_cnf",
    "build_zuko_cnf",
    "measure_nfe",
]
