"""The run options of :class:`~flowforge.train.config.TrainConfig`: where and how a run executes.

:class:`RunOptions` holds the seed, the device, the training arithmetic, the CPU threads, the
run directory and what the run shows and draws (progress bar, plots).

Example:
    >>> RunOptions().device, RunOptions().precision
    ('auto', 'float32')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowforge.train.coerce import option_doc

__all__ = ["RunOptions"]


@dataclass
class RunOptions:
    """The run options of a training run, with their defaults."""

    seed: int = field(
        default=0, metadata=option_doc("seed of everything random (data, initialisation, noise)")
    )
    device: str = field(
        default="auto", metadata=option_doc("device", choices=("cpu", "cuda", "auto"))
    )
    precision: str = field(
        default="float32",
        metadata=option_doc(
            "training arithmetic of the networks: float32, or bf16 autocast (log-dets, bases "
            "and log_prob stay float32; validation and test in float32)",
            choices=("float32", "bf16"),
        ),
    )
    threads: int = field(
        default=0,
        metadata=option_doc(
            "CPU threads (0: automatic, 1 for small networks where more threads only add overhead)"
        ),
    )
    out: str | None = field(
        default=None, metadata=option_doc("run directory (default runs/<data>-<flow>-<timestamp>)")
    )
    plots: bool = field(default=True, metadata=option_doc("write PNG plots at the end"))
    quiet: bool = field(default=False, metadata=option_doc("no progress bar"))
