"""Checkpoints: re-exported from :mod:`flowforge.runs.checkpoint`, where they are written."""

from flowforge.runs.checkpoint import (
    CHECKPOINT_FORMAT,
    decode_state,
    encode_state,
    load_checkpoint,
    save_checkpoint,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "decode_state",
    "encode_state",
    "load_checkpoint",
    "save_checkpoint",
]
