"""Checkpoints and weights: exact round trips, atomic writes, clear errors on bad files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from flowforge.runs import RunError, load_weights, save_weights
from flowforge.runs.atomic import atomic_write_bytes
from flowforge.train.checkpoint import decode_state, encode_state, load_checkpoint, save_checkpoint


def _optimizer_with_state() -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.8, 0.9))
    p.grad = torch.randn(3, 2)
    opt.step()
    return opt


def test_encode_decode_round_trip() -> None:
    state = {"a": torch.arange(3.0), "n": 2, "x": [1.5, None, {"b": torch.ones(1)}], 7: "int key"}
    tree, tensors = encode_state(state)
    back = decode_state(tree, tensors)
    assert back[7] == "int key" and back["n"] == 2
    assert torch.equal(back["a"], state["a"]) and torch.equal(back["x"][2]["b"], torch.ones(1))


def test_checkpoint_round_trip_is_exact(tmp_path: Path) -> None:
    opt = _optimizer_with_state()
    gen = torch.Generator().manual_seed(5)
    state = {
        "optimizer": opt.state_dict(),
        "rng": gen.get_state(),
        "best": float("inf"),
        "counters": {"step": 12},
    }
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, state)
    back = load_checkpoint(path)
    assert back["best"] == float("inf") and back["counters"] == {"step": 12}
    opt2 = _optimizer_with_state()
    opt2.load_state_dict(back["optimizer"])
    s1, s2 = opt.state_dict()["state"][0], opt2.state_dict()["state"][0]
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    g2 = torch.Generator()
    g2.set_state(back["rng"])
    assert torch.equal(torch.rand(4, generator=g2), torch.rand(4, generator=gen))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "corrupted or not a safetensors file"),
        (b"\x00" * 3, "corrupted or not a safetensors file"),
        (b"PK\x03\x04 a zip or a pickle" * 10, "corrupted or not a safetensors file"),
    ],
)
def test_corrupted_files_give_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "ck.safetensors"
    path.write_bytes(content)
    with pytest.raises(RunError, match=message):
        load_checkpoint(path)


def test_truncated_checkpoint_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.randn(100)})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(RunError, match="corrupted"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(RunError, match="without flowforge metadata"):
        load_weights(path, torch.nn.Linear(2, 1))
    save_weights(path, torch.nn.Linear(2, 1))
    with pytest.raises(
        RunError, match="'flowforge-weights' file, expected a 'flowforge-checkpoint'"
    ):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    save_weights(path, torch.nn.Linear(2, 3))
    with pytest.raises(RunError, match=r"does not fit .*bad shape: bias, weight"):
        load_weights(path, torch.nn.Linear(2, 4))
    with pytest.raises(RunError, match=r"missing: 0.bias"):
        load_weights(path, torch.nn.Sequential(torch.nn.Linear(2, 3)))
    with pytest.raises(RunError, match="missing file"):
        load_weights(tmp_path / "nope.safetensors", torch.nn.Linear(2, 3))


def test_atomic_write_keeps_the_old_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.zeros(3)})
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # as if the process were stopped just before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"w": torch.ones(3)})
    assert path.read_bytes() == before
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ck.safetensors", "ck.safetensors.sha256"]  # no temp file left


def test_atomic_write_gives_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    atomic_write_bytes(path, b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
