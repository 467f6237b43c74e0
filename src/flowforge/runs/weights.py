"""Weights as safetensors files, written atomically and read without executing code.

``safetensors`` is imported when a file is read or written, not when :mod:`flowforge` is.
Every file flowforge writes carries a ``format`` in its metadata (``flowforge-weights`` here,
``flowforge-checkpoint`` for :mod:`flowforge.runs.checkpoint`), so a foreign or swapped file
is named as such instead of loading into the wrong place.

Every file carries the SHA-256 of its tensor bytes in its own metadata (``sha256``), so the
digest and the data are replaced together by one atomic rename: a run killed at any instant
never has a digest that disagrees with its file. Reading verifies it, so flipped bytes are a
clear :class:`RunError` naming the file instead of weights that score NaN. A copy of the whole
file's digest is written beside it, ``<file>.sha256`` (``sha256sum -c model.safetensors.sha256``
checks it by hand); it is a convenience, not what loading trusts (files written before the
embedded digest are still checked against it).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from flowforge.runs.atomic import atomic_write_bytes, atomic_write_text
from flowforge.runs.errors import RunError

__all__ = [
    "CHECKSUM_SUFFIX",
    "WEIGHTS_FORMAT",
    "checksum_path",
    "load_state",
    "load_weights",
    "read_safetensors",
    "save_weights",
    "write_safetensors",
]

WEIGHTS_FORMAT = "flowforge-weights"

#: The checksum written beside every weights file: ``model.safetensors.sha256``.
CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | os.PathLike[str]) -> Path:
    """The checksum file beside a weights file (``model.safetensors.sha256``)."""
    p = Path(path)
    return p.with_name(p.name + CHECKSUM_SUFFIX)


def _verify_checksum(p: Path, data: bytes) -> None:
    side = checksum_path(p)
    try:
        text = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(
            f"{p}: its checksum file {side.name} is missing; the weights cannot be verified "
            f"(restore it, or train the run again)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read the checksum file {side}: {e}") from None
    expected = text.split()[0].lower() if text.split() else ""
    actual = hashlib.sha256(data).hexdigest()
    if expected != actual:
        raise RunError(
            f"{p} is corrupted: its SHA-256 {actual[:16]}... does not match the checksum "
            f"{expected[:16] or '(empty)'}... in {side.name}; restore the file or train again"
        )


def _payload(data: bytes) -> bytes:
    """The tensor bytes of a safetensors file (everything after its JSON header)."""
    return data[8 + int.from_bytes(data[:8], "little") :]


def write_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], metadata: dict[str, str]
) -> None:
    """Write ``tensors`` (CPU, contiguous) and string ``metadata`` to ``path`` atomically."""
    from safetensors.torch import save as save_bytes

    plain = save_bytes(tensors, metadata=metadata)
    digest = hashlib.sha256(_payload(plain)).hexdigest()  # the tensor bytes, header aside
    data = save_bytes(tensors, metadata={**metadata, "checksum": "sha256", "sha256": digest})
    atomic_write_bytes(path, data)
    name = Path(path).name
    atomic_write_text(checksum_path(path), f"{hashlib.sha256(data).hexdigest()}  {name}\n")


def read_safetensors(
    path: str | os.PathLike[str], expected_format: str
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a flowforge safetensors file: its tensors and its metadata.

    Args:
        path: the file.
        expected_format: the ``format`` its metadata must declare.

    Raises:
        RunError: if the file is missing, is not a safetensors file, was not written by
            flowforge as ``expected_format``, or does not match its checksum file.
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
    if "sha256" in metadata:
        actual = hashlib.sha256(_payload(data)).hexdigest()
        if actual != metadata["sha256"]:
            raise RunError(
                f"{p} is corrupted: its SHA-256 {actual[:16]}... does not match the digest "
                f"{metadata['sha256'][:16]}... it was written with; restore the file or train again"
            )
    elif metadata.get("checksum") == "sha256":  # written before the embedded digest
        _verify_checksum(p, data)
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
