"""Weights as safetensors files, written atomically and read without executing code.

``safetensors`` is imported when a file is read or written, not when :mod:`flowforge` is.
Every file flowforge writes carries a ``format`` in its metadata (``flowforge-weights`` here,
``flowforge-checkpoint`` for :mod:`flowforge.train.checkpoint`), so a foreign or swapped file
is named as such instead of loading into the wrong place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from flowforge.runs.atomic import atomic_write_bytes
from flowforge.runs.errors import RunError

__all__ = [
    "WEIGHTS_FORMAT",
    "load_state",
    "load_weights",
    "read_safetensors",
    "save_weights",
    "write_safetensors",
]

WEIGHTS_FORMAT = "flowforge-weights"


def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, str]
) -> None:
    """Write ``tensors`` (CPU, contiguous) and string ``metadata`` to ``path`` atomically."""
    from safetensors.torch import save as save_bytes

    atomic_write_bytes(path, save_bytes(tensors, metadata=metadata))


def read_safetensors(
    path: str | os.PathLike[str], expected_format: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a flowforge safetensors file: its tensors and its metadata.

    Args:
        path: the file.
        expected_format: the ``format`` its metadata must declare.

    Raises:
        RunError: if the file is missing, is not a safetensors file, or was not written by
            flowforge as ``expected_format``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

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


def save_weights(path: str | os.PathLike[str], module: nn.Module | dict[str, Tensor]) -> None:
    """Write a module's ``state_dict`` (or a state dict) to ``path`` atomically."""
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}
    write_safetensors(path, tensors, {"format": WEIGHTS_FORMAT})


def load_weights(path: str | os.PathLike[str], module: nn.Module) -> None:
    """Load weights written by :func:`save_weights` into ``module`` (keys must match exactly).

    Raises:
        RunError: if the file is missing, corrupted, foreign, or its tensors do not fit.
    """
    tensors, _ = read_safetensors(path, WEIGHTS_FORMAT)
    load_state(module, tensors, str(path))


def load_state(module: nn.Module, tensors: dict[str, Tensor], origin: str) -> None:
    """``module.load_state_dict(tensors)`` with a one-line :class:`RunError` on a mismatch.

    Args:
        module: where the tensors go.
        tensors: a state dict with exactly ``module``'s keys and shapes.
        origin: where the tensors come from, for the message.

    Raises:
        RunError: naming the first missing, unexpected and wrongly shaped keys.
    """
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
