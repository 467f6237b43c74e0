"""The data options of :class:`~flowforge.train.config.TrainConfig`: its first field group.

:class:`DataOptions` holds which data, which columns, the validation and test rows, the
images' logit constant and the flow's conditioning (audio: mel frames; images: classes); its fields come first in the options,
the flags and ``config.json``.

Example:
    >>> import dataclasses
    >>> from flowforge.train.config import TrainConfig
    >>> [f.name for f in dataclasses.fields(DataOptions)] == TrainConfig.option_names()[:8]
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowforge.train.coerce import option_doc

__all__ = ["DataOptions"]

_doc = option_doc  # the name this module used before coerce.option_doc


@dataclass
class DataOptions:
    """The data options of a training run, with their defaults."""

    # data
    data: str = field(
        default="8gaussians",
        metadata=option_doc("dataset name (see `flowforge datasets`) or a .csv/.npy file"),
    )
    data_dir: str | None = field(
        default=None,
        metadata=option_doc("folder with downloaded datasets (default $FLOWFORGE_DATA)"),
    )
    columns: str | None = field(
        default=None,
        metadata=option_doc("user files: columns to use, names or 0-based indices, e.g. a,b,7"),
    )
    header: bool | None = field(
        default=None,
        metadata=option_doc(
            "user CSV files: the first row is column names (--header) or data (--no-header); "
            "default: a header when any cell is not a number or the row is the column numbers "
            "0..D-1 or 1..D (D >= 3); the run records which was used"
        ),
    )
    n_val: float | None = field(
        default=None,
        metadata=option_doc(
            "validation rows: user files and scikit-learn sets (digits included): a count or a "
            "fraction below 1 of the rows (default 0.1); 2-D toy data: fresh samples (default "
            "10000); refused for the on-disk benchmark sets and mnist / cifar10, which keep "
            "their published splits"
        ),
    )
    n_test: float | None = field(
        default=None, metadata=option_doc("test rows: like --n-val (default 0.1, toy data 10000)")
    )
    logit_alpha: float = field(
        default=1e-6,
        metadata=option_doc("images: logit pre-transform constant a in s = a + (1-2a)u"),
    )
    condition: str = field(
        default="mel",
        metadata=option_doc(
            "audio: condition the flow on each segment's log-mel frames (mel: a vocoder, which "
            "resynthesises held-out clips from their mel against Griffin-Lim) or on nothing "
            "(none); labelled images (digits): class conditions the flow on each image's class "
            "(flowforge sample --class K)",
            ("mel", "none", "class"),
        ),
    )
