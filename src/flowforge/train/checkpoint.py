"""Checkpoints and weights as safetensors files: loading one executes no code.

A checkpoint is one ``.safetensors`` file written atomically. Its tensors are every tensor of a
nested training state (model, optimizer, random generators, best weights); the rest of the state
(step, counters, learning-rate state, optimizer hyper-parameters) is JSON kept in the file's
metadata, with each tensor replaced by a reference ``{"__tensor__": key}``. So the whole state
survives a SIGKILL at any moment (old file or new file, never a torn one) and is rebuilt exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from torch import Tensor, nn

from flowforge.train.atomic import atomic_write_bytes

__all__ = [
    "RunError",
    "decode_state",
    "encode_state",
    "load_checkpoint",
    "load_weights",
    "read_safetensors",
    "save_checkpoint",
    "save_weights",
]

CHECKPOINT_FORMAT = "flowforge-checkpoint"
WEIGHTS_FORMAT = "flowforge-weights"


class RunError(ValueError):
    """A run directory or one of its files is missing, corrupted or not flowforge's (one line)."""


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


def read_safetensors(
    path: str | os.PathLike[str], expected_format: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a flowforge safetensors file: its tensors and its metadata.

    Raises:
        RunError: if the file is missing, is not a safetensors file, or was not written by
            flowforge as ``expected_format``.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise RunError(f"missing file: {p}") from None
    except OSError as e:
        raise RunError(f"cannot read {p}: {e.strerror}") from None
    try:
        tensors = load_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError, OverflowError) as e:
        raise RunError(f"{p} is corrupted or not a safetensors file ({e})") from None
    metadata = header.get("__metadata__") or {}
    found = metadata.get("format")
    if found != expected_format:
        what = f"a {found!r} file" if found else "a file without flowforge metadata"
        raise RunError(f"{p} is {what}, expected a {expected_format!r} file written by flowforge")
    return tensors, metadata


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Write a nested training state to ``path`` atomically (see :func:`encode_state`)."""
    tree, tensors = encode_state(state)
    metadata = {"format": CHECKPOINT_FORMAT, "version": "1", "state": json.dumps(tree)}
    atomic_write_bytes(path, save_bytes(tensors, metadata=metadata))


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


def save_weights(path: str | os.PathLike[str], module: nn.Module | dict[str, Tensor]) -> None:
    """Write a module's ``state_dict`` (or a state dict) to ``path`` atomically."""
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    atomic_write_bytes(path, save_bytes(tensors, metadata={"format": WEIGHTS_FORMAT}))


def load_weights(path: str | os.PathLike[str], module: nn.Module) -> None:
    """Load weights written by :func:`save_weights` into ``module`` (keys must match exactly).

    Raises:
        RunError: if the file is missing, corrupted, foreign, or its tensors do not fit.
    """
    tensors, _ = read_safetensors(path, WEIGHTS_FORMAT)
    load_state(module, tensors, str(path))


def load_state(module: nn.Module, tensors: dict[str, Tensor], origin: str) -> None:
    """``module.load_state_dict(tensors)`` with a one-line :class:`RunError` on a mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("bad shape", wrong)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        raise RunError(f"{origin} does not fit the flow in config.json ({'; '.join(parts)})")
    with torch.no_grad():
        module.load_state_dict(tensors, strict=True)
