"""Checkpoints: a whole training state as one safetensors file; loading one executes no code.

A checkpoint is one ``.safetensors`` file written atomically. Its tensors are every tensor of a
nested training state (model, optimizer, random generators, best weights); the rest of the state
(step, counters, learning-rate state, optimizer hyper-parameters) is JSON kept in the file's
metadata, with each tensor replaced by a reference ``{"__tensor__": key}``. So the whole state
survives a SIGKILL at any moment (old file or new file, never a torn one) and is rebuilt exactly.
The file reading and writing (and the plain weights files) are :mod:`flowforge.runs.weights`.
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch import Tensor

from flowforge.runs.errors import RunError
from flowforge.runs.weights import read_safetensors, write_safetensors

__all__ = [
    "CHECKPOINT_FORMAT",
    "decode_state",
    "encode_state",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "flowforge-checkpoint"


def encode_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, Tensor]]:
    """Split a nested state into JSON-able data and a flat dictionary of tensors.

    Dictionaries with non-string keys (an optimizer's ``state``) are stored as
    ``{"__items__": [[key, value], ...]}``; tuples become lists.

    Args:
        state: nested dicts, lists, tuples, tensors, numbers, strings, booleans and ``None``.
        prefix: prefix of the tensor keys.

    Returns:
        ``(tree, tensors)``: ``tree`` has ``{"__tensor__": key}`` where ``state`` had a tensor.

    Example:
        >>> import torch
        >>> tree, tensors = encode_state({"step": 3, "w": torch.ones(2), 0: [1.5]})
        >>> tree["__items__"][1], list(tensors)
        (['w', {'__tensor__': 'w'}], ['w'])
        >>> decode_state(tree, tensors)["w"]
        tensor([1., 1.])
    """
    tensors: dict[str, Tensor] = {}

    def enc(obj: Any, path: str) -> Any:
        if isinstance(obj, Tensor):
            key = path or "tensor"
            tensors[key] = obj.detach().to("cpu").contiguous().clone()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            if all(isinstance(k, str) for k in obj):
                return {k: enc(v, f"{path}.{k}" if path else k) for k, v in obj.items()}
            return {
                "__items__": [
                    [k, enc(v, f"{path}.{k}" if path else str(k))] for k, v in obj.items()
                ]
            }
        if isinstance(obj, (list, tuple)):
            return [enc(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(obj)]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store a {type(obj).__name__} at {path!r} in a checkpoint")

    return enc(state, prefix), tensors


def decode_state(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Invert :func:`encode_state` (lists stay lists, non-string keys come back)."""
    if isinstance(tree, dict):
        if set(tree) == {"__tensor__"}:
            return tensors[tree["__tensor__"]]
        if set(tree) == {"__items__"}:
            return {k: decode_state(v, tensors) for k, v in tree["__items__"]}
        return {k: decode_state(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode_state(v, tensors) for v in tree]
    return tree


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a nested training state to ``path`` atomically (see :func:`encode_state`)."""
    tree, tensors = encode_state(state)
    metadata = {"format": CHECKPOINT_FORMAT, "version": "1", "state": json.dumps(tree)}
    write_safetensors(path, tensors, metadata)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_checkpoint`.

    Raises:
        RunError: if the file is missing, corrupted or not a flowforge checkpoint.
    """
    tensors, metadata = read_safetensors(path, CHECKPOINT_FORMAT)
    try:
        tree = json.loads(metadata["state"])
        state = decode_state(tree, tensors)
    except (KeyError, ValueError, TypeError) as e:
        raise RunError(f"{path} has a corrupted state record ({e})") from None
    if not isinstance(state, dict):
        raise RunError(f"{path} has a corrupted state record")
    return state
