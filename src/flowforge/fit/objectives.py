"""Objectives that more than one program trains with: :class:`Loss`, what an objective returns,
and :class:`FlowMatching`, the flow-matching regression of a CNF's velocity.

They live below the programs that fit (``flowforge train`` re-exports both from
:mod:`flowforge.train.losses`; :mod:`flowforge.sbi` trains its flow-matching posterior with
:class:`FlowMatching`), which share :mod:`flowforge.fit` and not each other's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from flowforge.transforms.continuous import CNF

__all__ = ["FlowMatching", "Loss"]


@dataclass(frozen=True)
class Loss:
    """What an objective returns for one batch.

    Attributes:
        value: the scalar (shape ``()``) that the optimizer minimises; it carries the graph.
        terms: named scalars to log beside it (detached by the loop; never backpropagated).
    """

    value: Tensor
    terms: Mapping[str, Tensor] = field(default_factory=dict)


class FlowMatching:
    """Flow matching: regress a CNF's velocity on straight paths from data to base samples.

    With the CNF's convention (data at ``t = 0``, latent at ``t = T``; normalised time
    ``s = t / T``), a row ``x`` (after any fixed bijections before the CNF) is paired with a
    base sample ``z``, ``s ~ U(0, 1)``, and the path ``x_s = (1 - s) x + s z (+ sigma eps)``
    has velocity ``z - x``. The loss is

        ``value = mean_i || T f(x_s, s T, c) - (z_i - x_i) ||^2``

    whose minimiser is the marginal field that carries the data distribution to the base:
    no ODE is solved in training, and the trained CNF's exact ``log_prob`` and ``sample``
    (ODE solves) work as for a maximum-likelihood one. ``T`` enters as a constant (it is not
    trained), the base is only sampled (not trained), and the bijections before the CNF must
    have no trainable parameters; nothing may follow the CNF.

    With ``ot=True`` the pairs within a batch are the optimal-transport matching of the
    squared distances (scipy's ``linear_sum_assignment``), which straightens the learned
    paths (fewer function evaluations at sampling time).

    Args:
        ot: pair data and base samples by mini-batch optimal transport.
        sigma: standard deviation of Gaussian noise around the straight path (0: none).

    References:
        Lipman, Chen, Ben-Hamu, Nickel, Le (2023). Flow Matching for Generative Modeling.
        arXiv:2210.02747.

        Tong, Fatras, Malkin, Huguet, Zhang, Rector-Brooks, Wolf, Bengio (2023). Improving and
        Generalizing Flow-Based Generative Models with Minibatch Optimal Transport.
        arXiv:2302.00482.

    Example:
        >>> import torch, flowforge as ff
        >>> flow = ff.flows.FFJORD(features=2, hidden=(8,))
        >>> loss = FlowMatching(ot=True)(flow, torch.randn(16, 2))
        >>> loss.value.shape, flow.bijection.bijections[0].nfe_forward  # no solve
        (torch.Size([]), 0)
    """

    def __init__(self, ot: bool = False, sigma: float = 0.0) -> None:
        if sigma < 0:
            raise ValueError(f"expected sigma >= 0, got {sigma}")
        self.ot, self.sigma = bool(ot), float(sigma)

    @staticmethod
    def split(model: nn.Module) -> tuple[list[nn.Module], CNF]:
        """The bijections before the model's one CNF, and the CNF (which must come last).

        Raises:
            TypeError: if the model's bijection is no CNF nor a chain that ends with one.
            ValueError: if a bijection before the CNF has trainable parameters.
        """
        bijection = getattr(model, "bijection", None)
        chain = list(getattr(bijection, "bijections", [bijection]))
        if not isinstance(chain[-1], CNF) or any(isinstance(b, CNF) for b in chain[:-1]):
            raise TypeError(
                "flow matching trains one CNF that is the last bijection of the flow; got "
                f"the chain {[type(b).__name__ for b in chain]}"
            )
        prefix = chain[:-1]
        for b in prefix:
            if any(p.requires_grad for p in b.parameters()):
                raise ValueError(
                    f"flow matching cannot train the {type(b).__name__} before the CNF: "
                    "freeze its parameters (requires_grad_(False)) or train by likelihood"
                )
        return prefix, chain[-1]

    def __call__(self, model: nn.Module, batch: Tensor, context: Tensor | None = None) -> Loss:
        """The flow-matching loss of ``model``'s CNF on ``batch``.

        Args:
            model: a flow whose bijection ends with its only CNF.
            batch: ``(B, D)`` data rows.
            context: ``(B, C)`` for a conditional flow.
        """
        prefix, cnf = self.split(model)
        with torch.no_grad():
            x = batch
            for b in prefix:
                x, _ = b(x, context)
            x = x.reshape(-1, cnf.features)  # (B, D)
            z = model.base.rsample((x.shape[0],), context).to(x)  # type: ignore[operator, union-attr]
            if self.ot:
                if context is not None:
                    raise ValueError("mini-batch optimal transport pairs unconditional rows only")
                z = z[_ot_pairing(x, z)]
            s = torch.rand(x.shape[0], dtype=x.dtype, device=x.device)  # (B,)
            xs = (1 - s[:, None]) * x + s[:, None] * z
            if self.sigma > 0:
                xs = xs + self.sigma * torch.randn_like(xs)
        velocity = cnf.velocity(s, xs, context)
        return Loss((velocity - (z - x)).square().sum(-1).mean())

    def __repr__(self) -> str:
        return f"FlowMatching(ot={self.ot}, sigma={self.sigma})"


def _ot_pairing(x: Tensor, z: Tensor) -> Tensor:
    """The permutation ``p`` minimising ``sum_i ||x_i - z_{p_i}||^2`` (exact assignment).

    POT's network simplex (``ot.emd``) when POT is installed (8gaussians, 256 rows: 6.9 ms
    against scipy's ``linear_sum_assignment`` 11.0 ms), else scipy. With equal uniform weights
    the optimal plan is a permutation matrix (Birkhoff), read off by its row maxima.
    """
    cost = torch.cdist(x, z).square().double().cpu().numpy()
    try:
        import ot
    except ImportError:
        from scipy.optimize import linear_sum_assignment

        _, cols = linear_sum_assignment(cost)
        return torch.as_tensor(cols, device=x.device)
    n = cost.shape[0]
    weights = np.full(n, 1.0 / n)
    plan = ot.emd(weights, weights, cost)
    return torch.as_tensor(plan.argmax(axis=1), device=x.device)
