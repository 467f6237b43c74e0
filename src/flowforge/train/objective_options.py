"""The objective options of :class:`~flowforge.train.config.TrainConfig`: what training minimises.

:class:`ObjectiveOptions` holds the objective (maximum likelihood or flow matching), the CNF
regularisers, flow matching's pairing and noise, and the images' dequantization (uniform or a
learned noise flow, and the noise augmentation); :func:`flowforge.train.model.objective_for`
and :func:`~flowforge.train.model.dequantizer_spec_for` read them.

Example:
    >>> ObjectiveOptions().objective, ObjectiveOptions().dequantization
    ('likelihood', 'uniform')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowforge.train.coerce import option_doc

__all__ = ["ObjectiveOptions"]


@dataclass
class ObjectiveOptions:
    """The objective options of a training run, with their defaults."""

    objective: str = field(
        default="likelihood",
        metadata=option_doc(
            "what training minimises: maximum likelihood, or flow matching (ffjord with one "
            "block: the CNF's velocity regressed on straight paths, no ODE solve in training)",
            ("likelihood", "flow-matching"),
        ),
    )
    kinetic: float = field(
        default=0.0,
        metadata=option_doc("ffjord, likelihood: RNODE weight of the kinetic energy (0: off)"),
    )
    jacobian: float = field(
        default=0.0,
        metadata=option_doc(
            "ffjord, likelihood: RNODE weight of the Jacobian Frobenius norm (0: off)"
        ),
    )
    ot: bool = field(
        default=False,
        metadata=option_doc(
            "flow matching: pair data and base samples by mini-batch optimal transport"
        ),
    )
    fm_sigma: float = field(
        default=0.0, metadata=option_doc("flow matching: noise around the straight paths (0: none)")
    )
    dequantization: str = field(
        default="uniform",
        metadata=option_doc(
            "images: uniform noise, or a learned noise flow q(u | x) trained jointly "
            "(variational; validated by the variational bound)",
            ("uniform", "variational"),
        ),
    )
    noise: float = field(
        default=0.0,
        metadata=option_doc(
            "images: standard deviation of Gaussian noise added to each training batch's "
            "dequantized values u in [0, 1) (TarFlow's noise augmentation; the run then maps u "
            "to 2u - 1 instead of the logit; validation and test stay clean); 0: none"
        ),
    )
    dequantizer_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=option_doc(
            "variational dequantization: the noise flow's options, e.g. "
            '\'{"noise": "conv", "transforms": 4, "hidden": 16}\''
        ),
    )
