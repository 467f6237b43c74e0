"""The optimisation options of :class:`~flowforge.train.config.TrainConfig`.

:class:`OptimOptions` holds how long to train (``steps`` or ``epochs``), the batch, the
optimizer and its learning-rate schedule, the weight average, clipping, validation and early
stopping, and the policy on a non-finite loss: what :class:`~flowforge.train.loop.Trainer`
runs on the engine's parts (:mod:`flowforge.fit`).

Example:
    >>> OptimOptions().steps, OptimOptions(epochs=2.5).epochs, OptimOptions().schedule
    (1500, 2.5, 'cosine')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowforge.train.coerce import option_doc

__all__ = ["OptimOptions"]


@dataclass
class OptimOptions:
    """The optimisation options of a training run, with their defaults."""

    steps: int = field(default=1500, metadata=option_doc("gradient steps (excludes --epochs)"))
    epochs: float | None = field(
        default=None, metadata=option_doc("passes over the training set (excludes --steps)")
    )
    batch_size: int = field(default=256, metadata=option_doc("batch size"))
    lr: float = field(default=2e-3, metadata=option_doc("peak learning rate"))
    optimizer: str = field(
        default="adam", metadata=option_doc("optimizer", choices=("adam", "adamw"))
    )
    weight_decay: float = field(
        default=0.0, metadata=option_doc("weight decay (decoupled for adamw)")
    )
    schedule: str = field(
        default="cosine",
        metadata=option_doc("learning-rate schedule", ("cosine", "plateau", "constant")),
    )
    min_lr: float = field(default=0.0, metadata=option_doc("cosine: final learning rate"))
    lr_factor: float = field(
        default=0.5,
        metadata=option_doc("plateau: factor applied after lr_patience bad evaluations"),
    )
    lr_patience: int = field(
        default=3, metadata=option_doc("plateau: evaluations without improvement before lowering")
    )
    warmup_steps: int = field(
        default=0,
        metadata=option_doc(
            "linear learning-rate warmup over the first N steps, before the schedule"
        ),
    )
    ema_decay: float = field(
        default=0.0,
        metadata=option_doc(
            "exponential moving average of the weights (e.g. 0.999; 0 disables): the average is "
            "what is validated, kept as best and saved"
        ),
    )
    clip_grad: float = field(
        default=5.0, metadata=option_doc("gradient-norm clipping threshold (0 disables)")
    )
    eval_every: int = field(
        default=100, metadata=option_doc("validate and checkpoint every N steps")
    )
    eval_batch_size: int = field(
        default=4096, metadata=option_doc("batch size for validation and test")
    )
    patience: int = field(
        default=0,
        metadata=option_doc("early stopping: evaluations without improvement (0 disables)"),
    )
    restore_best: bool = field(
        default=True, metadata=option_doc("end with the weights of the best validation NLL")
    )
    on_nan: str = field(
        default="recover", metadata=option_doc("on a non-finite loss", choices=("recover", "stop"))
    )
    nan_lr_factor: float = field(
        default=0.5, metadata=option_doc("recover: learning-rate factor after a non-finite loss")
    )
    max_nan_recoveries: int = field(
        default=5, metadata=option_doc("recover: stop after this many in a row")
    )
