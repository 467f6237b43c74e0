"""The table options of :class:`~flowforge.train.config.TrainConfig`: standardised tables only.

:class:`TableOptions` holds what a run on a table with a training set adds to the flow: the
options chosen from its rows and columns (:mod:`flowforge.train.sizing`), the whitening of the
standardised rows, and the defensive mixture with the Gaussian start.

Example:
    >>> TableOptions().size_from_data, TableOptions().whiten, TableOptions().defensive
    (True, False, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowforge.train.coerce import option_doc

__all__ = ["TableOptions"]


@dataclass
class TableOptions:
    """The table options of a training run, with their defaults."""

    size_from_data: bool = field(
        default=True,
        metadata=option_doc(
            "tables with a training set: choose the options you do not give (batch size, "
            "validation frequency, early stopping, width, weight decay) from the rows and "
            "columns, print the choice and save it in the run (--no-size-from-data: the fixed "
            "defaults shown here)"
        ),
    )
    whiten: bool = field(
        default=False,
        metadata=option_doc(
            "standardised tables: whiten the standardised rows with the Cholesky factor of "
            "their shrunk correlation, so that the untrained flow is the training rows' "
            "full-covariance Gaussian (chosen on by the sized defaults of a table; "
            "--no-whiten keeps the per-column standardisation only)"
        ),
    )
    defensive: bool = field(
        default=True,
        metadata=option_doc(
            "standardised tables: the model is the mixture (1 - w) flow + w Gaussian start, w "
            "chosen on the M validation rows (at least max(0.01, 3/M), the weight whose mean "
            "gain over the start less two standard errors is largest; w = 1, the start alone, "
            "unless at least 10 rows show the mixture better beyond two standard errors), "
            "so no row scores more than log(1/w) nats below the Gaussian start (--no-defensive: "
            "the flow alone)"
        ),
    )
