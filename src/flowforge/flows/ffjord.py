"""FFJORD: a continuous normalizing flow with a concat-squash (or plain MLP) dynamics network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from flowforge.distributions.base import BaseDistribution
from flowforge.flows._common import Preset, preset_hparams
from flowforge.flows.arguments import renamed_steps
from flowforge.nn.ode import ODENet, TimeMLP
from flowforge.transforms.continuous import CNF, Method, Trace


class FFJORD(Preset):
    """FFJORD: ``dz/dt = f(z, t, c)`` with an :class:`~flowforge.nn.ODENet` (or a
    :class:`~flowforge.nn.TimeMLP`), solved by torchdiffeq.

    Data at ``t = 0``, latent at ``t = T``. Train it by maximum likelihood
    (:class:`~flowforge.train.losses.CNFLikelihood`, with the RNODE regularisers) or by flow
    matching (:class:`~flowforge.fit.objectives.FlowMatching`, one block only); either way
    ``log_prob`` is exact in evaluation.

    Args:
        features: dimension ``D`` of the data, which has shape ``(*, D)``.
        context: size ``C`` of the context, which has shape ``(*, C)`` (0: unconditional).
        transforms: number of CNF blocks, chained (flow matching needs 1).
        hidden: hidden sizes of each block's dynamics network.
        activation: ``"tanh"`` (default: on 8gaussians it learns as fast per step as zuko's
            CNF, where softplus is 0.4 nats behind after 100 steps; with ``dynamics="mlp"``
            and flow matching it ends 1000 steps lower than ``"silu"``), ``"softplus"``,
            ``"elu"``, ``"silu"`` or ``"gelu"`` (flow matching's: see :data:`FLOW_MATCHING`).
        dynamics: ``"concatsquash"`` (default: :class:`~flowforge.nn.ODENet`, time-gated
            layers; by maximum likelihood it learns faster per step than zuko's CNF) or
            ``"mlp"`` (:class:`~flowforge.nn.TimeMLP`, a plain MLP on ``[z, t, c]``, half the
            elementwise work: the command line's default for ``--objective flow-matching``,
            with :data:`FLOW_MATCHING`'s GELU and time pair (without OT pairs);
            ``zero_last`` and ``gate_bias`` do not apply to it).
        reverse_time: with ``dynamics="mlp"``, the network sees ``1 - t`` (torchcfm's time:
            1 at the data) instead of ``t``. Off by default; on with OT pairs
            (:data:`FLOW_MATCHING_OT`): by flow matching on 8gaussians (six seeds) with tanh on
            ``t`` it is lower at 250 and 500 steps and, with OT pairs, 0.05 lower at 1000, but
            0.025 higher at 1000 steps without OT.
        freqs: Fourier time features ``cos(pi k t), sin(pi k t)``, ``k = 1..freqs``, beside
            ``t`` in the input of the dynamics network's gates and shifts
            (:class:`~flowforge.nn.ODENet`) or of the plain MLP (:class:`~flowforge.nn.TimeMLP`).
        zero_last: start the dynamics at zero velocity (the flow starts as the identity).
            Off by default: with a zero last layer no gradient reaches the other layers at
            first, and at lr 1e-3 the flow is 0.7 nats behind after 25 steps on 8gaussians.
        gate_bias: initial bias of the dynamics' time gates (:class:`~flowforge.nn.ODENet`).
        time: integration time ``T`` of each block.
        learn_time: train ``T``.
        method: ``"dopri5"`` (adaptive), ``"rk4"`` or ``"euler"``.
        rtol: the adaptive solver's relative tolerance; evaluation (``eval()``) solves at
            ``min(rtol, 1e-5)``, so a looser one is a training-only setting (``1e-4`` on
            8gaussians at lr 1e-2: the same test NLL to 0.002 in 0.77x the CPU a step;
            not the default, since ``log_prob`` in training mode then answers at 1e-4).
        atol: its absolute tolerance, likewise.
        solver_steps: steps of a fixed-step method.
        adjoint: backpropagate through the adjoint ODE (memory independent of the number of
            solver steps). Off by default: backpropagating through the solver's operations
            gives the same gradients to the solver's accuracy (on 8gaussians at lr 1e-2 the
            same test NLL to 0.001 over 300 steps) with no backward solve, in 0.43x zuko's
            CPU a step against the adjoint's 0.6x. Its memory grows with the batch times the
            function evaluations (batch 512, 3 x 64 dynamics: 171 MiB at 86 evaluations
            against the adjoint's 21 MiB): turn the adjoint on for large batches.
        trace: ``"auto"`` (exact for ``D <= 16``), ``"exact"`` or ``"hutchinson"`` in
            training; evaluation is exact.
        max_nfe: the most function evaluations one solve may take.
        base: latent distribution, whose event shape is the stack's output shape; default a
            standard normal.
        steps: the old name of ``solver_steps`` (deprecated: ``steps`` are optimisation steps).

    References:
        Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud (2019). FFJORD: Free-form
        Continuous Dynamics for Scalable Reversible Generative Models. arXiv:1810.01367.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.FFJORD(features=2, hidden=(16, 16))
        >>> x, lp = flow.sample_and_log_prob(3)
        >>> torch.allclose(lp, flow.log_prob(x), atol=1e-4)
        True
        >>> fm = ff.flows.FFJORD(features=2, hidden=(16, 16), dynamics="mlp")  # flow matching's
        >>> type(fm.bijection.bijections[0].net).__name__
        'TimeMLP'
    """

    def __init__(
        self,
        features: int,
        *,
        context: int = 0,
        transforms: int = 1,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "tanh",
        dynamics: Literal["concatsquash", "mlp"] = "concatsquash",
        reverse_time: bool = False,
        freqs: int = 0,
        zero_last: bool = False,
        gate_bias: float = 3.0,
        time: float = 1.0,
        learn_time: bool = False,
        method: Method = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        solver_steps: int = 20,
        adjoint: bool = False,
        trace: Trace = "auto",
        max_nfe: int = 10_000,
        base: BaseDistribution | None = None,
        steps: int | None = None,
    ) -> None:
        solver_steps = renamed_steps("FFJORD", steps, solver_steps, "solver_steps")
        hparams = preset_hparams({k: v for k, v in locals().items() if k != "steps"})

        def net() -> nn.Module:
            if dynamics == "mlp":
                return TimeMLP(
                    features,
                    hidden,
                    context=context,
                    activation=activation,
                    reverse_time=reverse_time,
                    freqs=freqs,
                )
            return ODENet(
                features,
                hidden,
                context=context,
                activation=activation,
                zero_last=zero_last,
                freqs=freqs,
                gate_bias=gate_bias,
            )

        blocks = [
            CNF(
                net(),
                features,
                context=context,
                time=time,
                learn_time=learn_time,
                method=method,
                rtol=rtol,
                atol=atol,
                solver_steps=solver_steps,
                adjoint=adjoint,
                trace=trace,
                max_nfe=max_nfe,
            )
            for _ in range(transforms)
        ]
        super().__init__(hparams, blocks, base)


#: The dynamics options of a flow-matching FFJORD (what ``flowforge train --objective
#: flow-matching`` builds unless told otherwise): the plain MLP (0.7x the concat-squash CPU a
#: step), GELU and one Fourier pair of time features. On 8gaussians at torchcfm's 2-D recipe
#: (lr 1e-3, batch 256, sigma 0.1, seeds 0-5) it is lower than torchcfm at 250, 500 and 1000
#: steps and at equal CPU seconds on every seed, at 1.08-1.2x its CPU a step; the MLP with tanh
#: on ``t`` alone (0.93x) trailed by 0.07-0.25 nats at 250 steps and 0.2-0.44 at 500
#: (benchmarks/results/cnf_issue24.md, stop 35). ``FFJORD(features, **FLOW_MATCHING)`` builds it
#: in Python. With OT pairs see :data:`FLOW_MATCHING_OT`.
FLOW_MATCHING: dict[str, Any] = {"dynamics": "mlp", "activation": "gelu", "freqs": 1}

#: The dynamics options of a flow-matching FFJORD trained on mini-batch OT pairs (``--ot``):
#: the plain MLP with FFJORD's tanh, on ``1 - t`` (``reverse_time``: torchcfm's time, 1 at the
#: data). At torchcfm's recipe with its exact-OT matcher (seeds 0-5) it is lower than torchcfm
#: at 250, 500 and 1000 steps on every seed, and lower than tanh on ``t`` at 500 and 1000 steps
#: on every seed (by 0.05 on the mean at 1000), level at 250; tanh on ``t`` trailed torchcfm on
#: seed 2 at 500 and 1000. :data:`FLOW_MATCHING`'s GELU and time pair trails both at 500 and
#: 1000 with OT pairs (benchmarks/results/cnf_issue24.md, stops 32 and 35).
FLOW_MATCHING_OT: dict[str, Any] = {"dynamics": "mlp", "reverse_time": True}

__all__ = ["FFJORD", "FLOW_MATCHING", "FLOW_MATCHING_OT"]
