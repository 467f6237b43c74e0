"""TarFlow on CIFAR-10 or ImageNet 32x32 from files on disk: one command for a GPU machine.

Trains ``ff.flows.TarFlow`` for ``--steps`` steps and reports the median step time, images
per second, peak memory and the test bits/dim after training (uniform dequantization of the
clean test images; the flow sees ``2u - 1``, so noise augmentation never meets a logit).

Data (nothing is downloaded):
- ``--data cifar10``: the python batches of ``cifar-10-python.tar.gz`` under
  ``<data-dir>/cifar10/cifar-10-batches-py/`` (as ``flowforge datasets`` says);
- ``--data imagenet32``: the downsampled ImageNet ``.npz`` files (``train_data_batch_*.npz``
  and ``val_data.npz``, each with ``data``: ``(N, 3072)`` uint8) under ``<data-dir>/imagenet32/``;
- ``--data synthetic``: random 8-bit images (the CPU smoke test; no numbers to report).

Usage:
    python benchmarks/tarflow_gpu.py --data cifar10 --data-dir ~/data --steps 2000 --bf16
    python benchmarks/tarflow_gpu.py --data synthetic --shape 3 8 8 --steps 3 --width 16 \\
        --blocks 2 --heads 2 --batch 4 --device cpu       # smoke test

Defaults follow the paper's small recipes (arXiv:2412.06329): patch 2, 8 blocks of 4 layers
of width 256 here (the CIFAR-10 likelihood model was larger), noise 0.05 on ``[-1, 1]``,
AdamW (0.9, 0.95), weight decay 1e-4, cosine schedule with warmup, gradient clipping at 1.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

import flowforge as ff
from flowforge.core import Compose, Flow
from flowforge.fit.precision import network_autocast


def load_images(name: str, root: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """``(train, test)`` uint8 arrays ``(N, C, H, W)``."""
    if name == "cifar10":
        from flowforge.data.images import load_cifar10

        ds = load_cifar10(root)
        assert ds.train is not None and ds.test is not None
        return np.asarray(ds.train, dtype=np.uint8), np.asarray(ds.test, dtype=np.uint8)
    if name == "imagenet32":
        folder = root / "imagenet32"
        train_files = sorted(folder.glob("train_data_batch_*.npz"))
        if not train_files or not (folder / "val_data.npz").is_file():
            raise SystemExit(
                f"imagenet32: expected {folder}/train_data_batch_*.npz and val_data.npz "
                "(the downsampled ImageNet 32x32 files)"
            )

        def read(path: Path) -> np.ndarray:
            with np.load(path, allow_pickle=False) as f:
                return np.asarray(f["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)

        return np.concatenate([read(p) for p in train_files]), read(folder / "val_data.npz")
    if name == "synthetic":
        g = np.random.default_rng(0)
        return g.integers(0, 256, (64, *shape), dtype=np.uint8), g.integers(
            0, 256, (16, *shape), dtype=np.uint8
        )
    raise SystemExit(f"unknown --data {name!r}; expected cifar10, imagenet32 or synthetic")


def build(shape: tuple[int, int, int], args: argparse.Namespace) -> Flow:
    """TarFlow behind the fixed ``u -> 2u - 1`` (its log-Jacobian is in every density)."""
    tarflow = ff.flows.TarFlow(
        shape=shape,
        patch=args.patch,
        blocks=args.blocks,
        layers=args.layers,
        width=args.width,
        heads=args.heads,
    )
    half = torch.full(shape, 0.5, dtype=torch.float64)
    return Flow(Compose([ff.transforms.Standardize(half, half), tarflow.bijection]), tarflow.base)


def bits_per_dim(flow: Flow, levels: torch.Tensor, device: torch.device, batch: int) -> float:
    """Test bits/dim of uint8 images, uniformly dequantized, ``-log p(u) / (D log 2) + 8``."""
    g = torch.Generator().manual_seed(0)
    total, d = 0.0, math.prod(levels.shape[1:])
    with torch.no_grad():
        for i in range(0, len(levels), batch):
            x = levels[i : i + batch].float()
            u = ((x + torch.rand(x.shape, generator=g)) / 256).to(device)
            total += -flow.log_prob(u).double().sum().item()
    return total / (len(levels) * d * math.log(2)) + 8.0


def peak_memory(device: torch.device) -> float:
    """Peak memory in MiB: allocated on the GPU, the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--shape", type=int, nargs=3, default=(3, 32, 32), help="synthetic only")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=8)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.05, help="std on the [-1, 1] scale")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast of the transformers")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training loss")
    ap.add_argument("--test-images", type=int, default=10_000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    train, test = load_images(args.data, Path(args.data_dir).expanduser(), tuple(args.shape))
    shape = tuple(train.shape[1:])
    flow = build(shape, args).to(device)  # type: ignore[arg-type]
    params = sum(p.numel() for p in flow.parameters())
    opt = torch.optim.AdamW(flow.parameters(), args.lr, betas=(0.9, 0.95), weight_decay=1e-4)

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return (step + 1) / args.warmup
        return 0.5 * (
            1 + math.cos(math.pi * (step - args.warmup) / max(args.steps - args.warmup, 1))
        )

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    train_t = torch.from_numpy(train)
    d = math.prod(shape)

    def loss_of(u: torch.Tensor) -> torch.Tensor:
        return -flow.log_prob(u).mean() / (d * math.log(2))  # bits/dim of the noisy batch

    step_loss = torch.compile(loss_of) if args.compile else loss_of
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, last = [], float("nan")
    for step in range(args.steps):
        idx = torch.randint(0, len(train_t), (args.batch,))
        x = train_t[idx].float().to(device, non_blocking=True)
        u = (x + torch.rand_like(x)) / 256 + (args.noise / 2) * torch.randn_like(x)  # [-1,1] std
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        if args.bf16:
            with network_autocast(flow, device_type=device.type):
                loss = step_loss(u)
        else:
            loss = step_loss(u)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
        last = float(loss.detach())
        if not math.isfinite(last):
            raise SystemExit(f"non-finite loss at step {step}")
    flow.eval()
    step_time = float(np.median(times[min(5, len(times) - 1) :]))
    result = {
        "data": args.data,
        "parameters": params,
        "steps": args.steps,
        "batch": args.batch,
        "bf16": bool(args.bf16),
        "step_seconds": step_time,
        "images_per_second": args.batch / step_time,
        "peak_memory_mib": peak_memory(device),
        "train_noisy_bpd_last": last + 8.0,
        "test_bpd": bits_per_dim(
            flow, torch.from_numpy(test[: args.test_images]), device, args.batch
        ),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
