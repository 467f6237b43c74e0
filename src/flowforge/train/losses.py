"""Training objectives: what the fit loop minimises, as ``objective(model, batch) -> Loss``.

An objective is any callable that takes the model and one training batch and returns a
:class:`Loss`: the scalar to minimise and, optionally, named terms to log next to it (a
regulariser's value, the parts of a variational bound). The fit loop
(:class:`flowforge.train.loop.Trainer`) backpropagates ``Loss.value``, averages every term
over the steps between two evaluations and writes it to ``metrics.jsonl`` as
``train_<name>``. Maximum likelihood is the default; continuous-flow regularisers and
variational objectives are further callables of the same shape.

Example:
    A custom objective: maximum likelihood plus a penalty on the latent norm, logged apart.

    >>> import torch, flowforge as ff
    >>> def penalised(model, batch):
    ...     z, ladj = model.bijection(batch)
    ...     nll = -(model.base.log_prob(z) + ladj).mean()
    ...     penalty = z.pow(2).sum(-1).mean()
    ...     return Loss(nll + 0.1 * penalty, {"nll": nll, "latent_norm": penalty})
    >>> flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))
    >>> sorted(penalised(flow, torch.randn(4, 2)).terms)
    ['latent_norm', 'nll']
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor, nn

from flowforge.fit.objectives import FlowMatching, Loss, _ot_pairing  # noqa: F401 (old imports)
from flowforge.transforms.continuous import CNF

if TYPE_CHECKING:
    from flowforge.dequantization import Dequantizer

__all__ = [
    "CNFLikelihood",
    "FlowMatching",
    "Loss",
    "MaximumLikelihood",
    "Objective",
    "VariationalDequantization",
]


class Objective(Protocol):
    """A training objective: ``objective(model, batch) -> Loss``; on a dataset with a
    per-example context (:attr:`flowforge.data.Dataset.context`) the fit loop calls
    ``objective(model, batch, context)`` instead, so an objective of two arguments still
    serves every unconditional run."""

    def __call__(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        """The loss of ``model`` on ``batch``.

        Args:
            model: the flow being trained (in training mode).
            batch: ``(B, *event_shape)`` training rows, on the model's device.
            context: ``(B, C)`` the rows' context (a conditional flow), or ``None``.
        """
        ...


def _log_prob(model: nn.Module, batch: Tensor, context: Tensor | None, what: str) -> Tensor:
    """``model.log_prob(batch[, context])``: the context passed only when there is one."""
    log_prob = getattr(model, "log_prob", None)
    if not callable(log_prob):
        raise TypeError(f"{what} needs a model with log_prob(x), got {type(model).__name__}")
    out: Tensor = log_prob(batch) if context is None else log_prob(batch, context)
    return out


class MaximumLikelihood:
    """Maximum likelihood: the mean negative log-likelihood of the batch, in nats per row.

    ``value = -mean_i log p(x_i)`` with ``log p`` from ``model.log_prob`` (every
    pre-transform's log-Jacobian included); no extra terms.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))
        >>> x = torch.randn(16, 2)
        >>> loss = MaximumLikelihood()(flow, x)
        >>> loss.value.shape, dict(loss.terms)
        (torch.Size([]), {})
        >>> torch.allclose(loss.value, -flow.log_prob(x).mean())
        True
    """

    def __call__(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        """``Loss(-model.log_prob(batch, context).mean())``.

        Args:
            model: a flow (anything with ``log_prob(x) -> (B,)``).
            batch: ``(B, *event_shape)`` rows.
            context: ``(B, C)`` the rows' context, or ``None`` (unconditional).

        Raises:
            TypeError: if ``model`` has no ``log_prob``.
        """
        return Loss(-_log_prob(model, batch, context, "maximum likelihood").mean())

    def __repr__(self) -> str:
        return "MaximumLikelihood()"


class VariationalDequantization(nn.Module):
    """Joint maximum likelihood of a flow and a dequantizer on integer levels ``v``.

    For a batch of levels ``v`` ``(B, *event)`` it draws ``u = (v + e) / K``,
    ``e ~ q(. | v)`` (reparameterised) and minimises

        ``value = -mean_i [ log p(u_i) - log q(e_i | v_i) ]``  (nats per example),

    the negative dequantization bound ``log P(v) >= E_q[log p(u) - D log K - log q(e | v)]``
    without its constant ``D log K``: in the units of :class:`MaximumLikelihood` on the
    dequantized data, which it equals for the same ``u`` under a
    :class:`~flowforge.data.UniformDequantizer` (``log q = 0``). Terms: ``bound_bpd``, the
    batch's bound in bits/dim ``(value + D log K) / (D log 2)``, and ``log_q``, the mean
    ``log q(e | v)``.

    The dequantizer is a submodule, so ``objective.parameters()`` are its parameters: an
    optimizer must get them beside the flow's (``[*model.parameters(),
    *objective.parameters()]``) for ``q`` to be trained jointly.

    Args:
        dequantizer: a :class:`~flowforge.data.VariationalDequantizer` (or the uniform one).

    References:
        Ho, Chen, Srinivas, Duan, Abbeel (2019). Flow++: Improving Flow-Based Generative
        Models with Variational Dequantization and Architecture Design. arXiv:1902.00275.

    Example:
        >>> import torch, flowforge as ff
        >>> from flowforge.data import VariationalDequantizer
        >>> flow = ff.flows.RealNVP(features=4, transforms=1, hidden=(8,))
        >>> objective = VariationalDequantization(
        ...     VariationalDequantizer(4, levels=17, transforms=1, hidden=(8,))
        ... )
        >>> loss = objective(flow, torch.randint(0, 17, (8, 4)).float())
        >>> loss.value.shape, sorted(loss.terms)
        (torch.Size([]), ['bound_bpd', 'log_q'])
        >>> len(list(objective.parameters())) > 0  # for the optimizer
        True
    """

    def __init__(self, dequantizer: Dequantizer) -> None:
        super().__init__()
        self.dequantizer = dequantizer

    def forward(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        """The loss of ``model`` and the dequantizer on levels ``batch``.

        Args:
            model: the flow of ``u`` in ``[0, 1)^D`` (``log_prob(u) -> (B,)``, pre-transforms
                such as ``Logit`` inside it).
            batch: ``(B, *event)`` integer levels ``0 .. K-1``.
            context: ``(B, C)`` the rows' context of a conditional flow, or ``None``.

        Raises:
            TypeError: if ``model`` has no ``log_prob``.
        """
        u, log_q = self.dequantizer.sample(batch)
        value = -(_log_prob(model, u, context, "variational dequantization") - log_q).mean()
        d, k = self.dequantizer.dim, self.dequantizer.levels
        bpd = (value + d * math.log(k)) / (d * math.log(2.0))
        return Loss(value, {"bound_bpd": bpd, "log_q": log_q.mean()})


def _cnfs(model: nn.Module, what: str) -> list[CNF]:
    """The continuous flows inside ``model``, in module order (at least one)."""
    found = [m for m in model.modules() if isinstance(m, CNF)]
    if not found:
        raise TypeError(f"{what} needs a model with a CNF inside, got {type(model).__name__}")
    return found


class CNFLikelihood:
    """Maximum likelihood of a continuous flow, with the RNODE regularisers and its NFE.

    ``value = -mean_i log p(x_i) + kinetic * mean_i K_i + jacobian * mean_i J_i``, where the
    regularisers are integrated along each CNF's forward solve (summed over the model's CNFs):
    ``K = ∫_0^T ||f(z, t)||^2 dt`` (kinetic energy) and ``J = ∫_0^T ||df/dz||_F^2 dt``
    (Hutchinson's estimate ``||(df/dz) e||^2`` when the trace is estimated). They straighten
    the dynamics and cut the solver's function evaluations.

    Terms: ``nll``; ``kinetic`` and ``jacobian`` when their weight is non-zero;
    ``nfe_forward`` (evaluations of the forward solves) and ``nfe_backward`` (of the adjoint's
    backward solves: this term is counted up *during* ``backward()``, so read it afterwards,
    as the fit loop does; 0 without the adjoint).

    Args:
        kinetic: weight of the kinetic energy (0: not integrated).
        jacobian: weight of the Jacobian's Frobenius norm (0: not integrated).

    References:
        Finlay, Jacobsen, Nurbekyan, Oberman (2020). How to train your neural ODE: the world
        of Jacobian and kinetic regularization. arXiv:2002.02798.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.FFJORD(features=2, hidden=(8,), adjoint=True)
        >>> loss = CNFLikelihood(kinetic=0.01, jacobian=0.01)(flow, torch.randn(16, 2))
        >>> sorted(loss.terms)
        ['jacobian', 'kinetic', 'nfe_backward', 'nfe_forward', 'nll']
        >>> loss.value.backward()
        >>> float(loss.terms["nfe_backward"]) > 0  # the adjoint's evaluations
        True
    """

    def __init__(self, kinetic: float = 0.0, jacobian: float = 0.0) -> None:
        if kinetic < 0 or jacobian < 0:
            raise ValueError(
                f"expected regulariser weights >= 0, got kinetic={kinetic}, jacobian={jacobian}"
            )
        self.kinetic, self.jacobian = float(kinetic), float(jacobian)

    def __call__(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        """The regularised negative log-likelihood of ``model`` on ``batch``.

        Args:
            model: a flow with at least one :class:`~flowforge.transforms.CNF`.
            batch: ``(B, D)`` rows.
            context: ``(B, C)`` the rows' context, or ``None``.

        Raises:
            TypeError: if ``model`` has no CNF or no ``log_prob``.
        """
        cnfs = _cnfs(model, "CNFLikelihood")
        regularize = self.kinetic > 0 or self.jacobian > 0
        with contextlib.ExitStack() as stack:
            if regularize:
                for cnf in cnfs:
                    stack.enter_context(cnf.regularizing())
            nll = MaximumLikelihood()(model, batch, context).value
        records = [c.last_solve for c in cnfs if c.last_solve is not None]
        counter = records[0].backward_counter
        for r in records[1:]:  # one live counter that all backward solves add to
            r.backward_counter = counter
        terms: dict[str, Tensor] = {"nll": nll}
        value = nll
        for name, weight in (("kinetic", self.kinetic), ("jacobian", self.jacobian)):
            if weight > 0:
                parts = [getattr(r, name) for r in records if getattr(r, name) is not None]
                reg = torch.stack([p.mean() for p in parts]).sum()
                terms[name] = reg
                value = value + weight * reg
        terms["nfe_forward"] = torch.tensor(float(sum(r.nfe_forward for r in records)))
        terms["nfe_backward"] = counter
        return Loss(value, terms)

    def __repr__(self) -> str:
        return f"CNFLikelihood(kinetic={self.kinetic}, jacobian={self.jacobian})"
