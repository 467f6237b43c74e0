"""Data-parallel training over several processes: ``torchrun`` starts them, PyTorch's
``DistributedDataParallel`` (DDP) averages the gradients.

A process started by ``torchrun`` has ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in its
environment (:func:`launch_from_env`); :func:`init_world` then joins the process group, with the backend
of each device (``nccl`` on CUDA, ``gloo`` on the CPU), each rank on ``cuda:LOCAL_RANK`` (or the
CPU with ``--device cpu``, :func:`rank_device`). Without those variables everything here is a no-op and a
run is the ordinary single process.

The run is the same experiment at every world size: ``batch_size`` is the *global* batch. Every
rank draws the same global batch from the same stream (:class:`~flowforge.train.batches.
TrainStream`, one seed: the same rows in the same order as one process, and the same fresh
samples for the toy sets) and trains on its own slice (:func:`shard`), so no two ranks see the
same rows, the union of the slices is the single-process batch, and a checkpoint resumes at any
world size. Each rank's loss is weighted by its share of the rows, so DDP's average is the
gradient of the global batch's mean even when the slices differ in size.

Data-dependent initialisation (ActNorm) runs on the global first batch before DDP wraps the
model (:func:`initialize_from_batch`), and DDP then broadcasts rank 0's parameters and buffers,
so every rank starts identical and as one process would. The validation log-likelihoods are
computed on slices and gathered (:func:`gather_rows`): every rank sees the same validation NLL,
so every rank keeps the same best weights and stops early together; the loss of a step is summed
over the ranks before it is checked, so a non-finite loss on one rank is skipped (or recovered
from) on all. Only rank 0 writes files.

Example (single process: a no-op world):
    >>> import torch
    >>> world = World()
    >>> local, weight = shard(torch.arange(6.0), world)
    >>> local.tolist(), weight
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], 1.0)
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowforge.runs.errors import ConfigError
from flowforge.transforms.normalization import ActNorm

__all__ = [
    "ObjectiveModule",
    "World",
    "broadcast_object",
    "check_in_sync",
    "from_main",
    "gather_rows",
    "init_world",
    "initialize_from_batch",
    "launch_from_env",
    "launch_local",
    "main_first",
    "rank_device",
    "shard",
    "shutdown",
    "wrap_ddp",
]

T = TypeVar("T")

TIMEOUT_ENV = "FLOWFORGE_DIST_TIMEOUT"
"""Seconds a collective may wait for the other ranks before failing (default 600)."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: rank 0 of 1).

    Attributes:
        rank: the global rank.
        size: the number of processes.
        local_rank: the rank on this node (its GPU index).
        comm_device: where collective tensors live (the CUDA device for nccl, else the CPU).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.size > 1

    def on(self, device: torch.device) -> World:
        """This world with ``device`` for the collectives' tensors (CUDA: nccl, CPU: gloo)."""
        return dataclasses.replace(self, comm_device=device)

    @property
    def is_main(self) -> bool:
        """Rank 0, the only one that writes run files, logs and plots."""
        return self.rank == 0


def launch_from_env(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` of a ``torchrun`` launch, or ``None`` without one.

    Raises:
        ConfigError: the variables are present but not integers in range.
    """
    env = dict(os.environ) if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ConfigError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (as torchrun sets them), got "
            f"{env.get('RANK')!r}, {env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}"
        ) from None
    if not (size >= 1 and 0 <= rank < size and local >= 0):
        raise ConfigError(f"expected 0 <= RANK < WORLD_SIZE, got RANK={rank}, WORLD_SIZE={size}")
    return rank, size, local


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run ``python -m flowforge ARGV`` in ``nproc`` processes on this node, as ``torchrun
    --standalone --nproc-per-node NPROC -m flowforge ARGV`` does, and return the exit status.

    Unlike ``torchrun`` itself, a failed rank is no traceback of the launcher: its status is
    returned (2 for bad input, which rank 0 has printed in one line) and any other failure is
    one line naming the rank. The launcher's own log lines (the ``SIGTERM`` sent to the other
    ranks) are left out; the ranks' own output is not touched.
    """
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "flowforge", *argv])
    quiet = logging.getLogger("torch.distributed.elastic")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code == 2 and rank == 0:  # bad input: rank 0 has printed it in one line
            return 2
        if code == 2:  # the others print nothing (it is the same on every rank, as a rule)
            print(f"flowforge: rank {rank} of {nproc} stopped on bad input", file=sys.stderr)
            return 2
        how = f"status {code}" if code >= 0 else f"signal {-code}"
        print(f"flowforge: rank {rank} of {nproc} failed ({how})", file=sys.stderr)
        return code if 0 < code < 128 else 1
    finally:
        quiet.setLevel(level)
    return 0


def rank_device(name: str, world: World) -> torch.device:
    """The device of this rank for ``--device`` ``name``: ``cuda:LOCAL_RANK`` for ``cuda`` (and
    for ``auto`` when CUDA is available), else the CPU; made the current CUDA device.

    Raises:
        ConfigError: ``cuda`` without CUDA, or fewer GPUs than ranks on this node.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use cpu or auto)")
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {world.local_rank} needs GPU cuda:{world.local_rank}, but this node has "
            f"{torch.cuda.device_count()}: start at most that many processes per node"
        )
    device = torch.device("cuda", world.local_rank)
    torch.cuda.set_device(device)
    return device


def init_world() -> World:
    """Join the process group of a ``torchrun`` launch (one process without one: a no-op).

    The backend is gloo for CPU tensors and, where CUDA is available, nccl for CUDA tensors
    (``"cpu:gloo,cuda:nccl"``), so each rank's ``--device`` picks its backend. Collectives time
    out after :data:`TIMEOUT_ENV` seconds (600 by default): a lost rank fails the job instead of
    hanging it. Call :meth:`World.on` with the rank's device for the collectives' tensors.

    Raises:
        ConfigError: malformed torchrun variables or timeout.
    """
    launch = launch_from_env()
    if launch is None:
        return World()
    rank, size, local = launch
    if not dist.is_initialized():
        try:
            seconds = float(os.environ.get(TIMEOUT_ENV, "600"))
        except ValueError:
            raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds") from None
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=seconds))
    return World(rank, size, local)


def from_main(fn: Callable[[], T], world: World, errors: tuple[type[Exception], ...]) -> T:
    """``fn()`` run on rank 0 only and its result sent to every rank; an exception of ``errors``
    raised there is raised on every rank (so all of them fail the same way, none hangs)."""
    if not world.active:
        return fn()
    result: T | None = None
    error: Exception | None = None
    if world.is_main:
        try:
            result = fn()
        except errors as e:
            error = e
    result, error = broadcast_object((result, error), world)
    if error is not None:
        raise error
    return result  # type: ignore[return-value]


def shutdown(finished: bool = True) -> None:
    """Leave the process group (if this process joined one).

    Args:
        finished: the run ended normally on this rank: wait for every rank first, so none
            tears gloo down while another still sends (a rank that exited early aborted with
            "terminate called without an active exception"). After an error there is no
            wait (the other ranks may be gone; their collectives time out instead).
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache), the other ranks after it; an
    exception there is raised on every rank (they got gloo's "Connection closed by peer"
    traceback while rank 0 reported the error)."""
    if world.active and not world.is_main:
        failed = broadcast_object(None, world)
        if failed is not None:
            raise failed
    try:
        yield
    except Exception as e:
        if world.active and world.is_main:
            try:
                pickle.dumps(e)
                sent: Exception = e
            except Exception:  # an exception that cannot travel: its message does
                sent = RuntimeError(f"rank 0 failed: {e}")
            broadcast_object(sent, world)
        raise
    if world.active and world.is_main:
        broadcast_object(None, world)


def broadcast_object(obj: T, world: World) -> T:
    """Rank 0's ``obj`` (picklable) on every rank."""
    if not world.active:
        return obj
    box: list[Any] = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0, device=world.comm_device)
    return box[0]


def all_sum(x: Tensor, world: World) -> Tensor:
    """The sum of ``x`` over the ranks (``x`` itself for one process), on ``x``'s device."""
    if not world.active:
        return x
    y = x.detach().to(world.comm_device, copy=True)
    dist.all_reduce(y)
    return y.to(x.device)


def shard(x: Tensor, world: World) -> tuple[Tensor, float]:
    """This rank's slice of a global batch and the weight of its mean loss.

    The slices are ``torch.tensor_split(x, world.size)`` (sizes differ by at most one row). The
    weight ``n_rank * size / n`` makes DDP's average of the weighted means the mean over the
    global batch. A rank whose slice would be empty (fewer rows than ranks) gets one row with
    weight 0, so it still takes part in the gradient's all-reduce.
    """
    if not world.active:
        return x, 1.0
    local = torch.tensor_split(x, world.size)[world.rank]
    if local.shape[0] == 0:
        return x[:1], 0.0
    return local, local.shape[0] * world.size / x.shape[0]


def gather_rows(local: Tensor, world: World) -> Tensor:
    """The ranks' ``(n_r, ...)`` tensors concatenated in rank order, on every rank (CPU)."""
    if not world.active:
        return local
    sizes = [torch.zeros(1, dtype=torch.long, device=world.comm_device) for _ in range(world.size)]
    n = torch.tensor([local.shape[0]], device=world.comm_device)
    dist.all_gather(sizes, n)
    most = int(max(int(s) for s in sizes))
    padded = torch.zeros((most, *local.shape[1:]), dtype=local.dtype, device=world.comm_device)
    padded[: local.shape[0]] = local.to(world.comm_device)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s)] for p, s in zip(parts, sizes, strict=True)]).cpu()


def check_in_sync(modules: list[nn.Module], world: World, when: str) -> None:
    """Raise if the ranks' parameters and buffers differ (a float64 checksum per tensor).

    Raises:
        RuntimeError: naming the first tensor whose value differs between ranks.
    """
    if not world.active:
        return
    names, sums = [], []
    for i, module in enumerate(modules):
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                names.append(f"{i}.{name}")
                w = torch.arange(1, t.numel() + 1, device=t.device, dtype=torch.float64)
                sums.append((t.detach().double().flatten() * w).sum())
    if not sums:
        return
    mine = torch.stack(sums).to(world.comm_device)
    lowest, highest = mine.clone(), mine.clone()
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    dist.all_reduce(highest, op=dist.ReduceOp.MAX)
    scale = torch.maximum(lowest.abs(), highest.abs()).clamp_min(1.0)
    bad = ((highest - lowest) > 1e-6 * scale).nonzero().flatten().tolist()
    if bad:
        raise RuntimeError(
            f"{when}: the ranks' {names[bad[0]]} differ ({len(bad)} tensors out of sync); "
            "every rank must hold the same weights"
        )


def initialize_from_batch(module: nn.Module, run: Callable[[], object]) -> bool:
    """Data-dependent initialisation (ActNorm) as the first training step would do it.

    Calls ``run()`` (the objective on the global first batch) without gradients and with the
    random state restored afterwards, and keeps only what the ActNorm layers that were not yet
    initialised set: every other parameter and buffer (running statistics) is put back.

    Returns:
        Whether there was anything to initialise.
    """
    fresh = [
        name
        for name, m in module.named_modules()
        if isinstance(m, ActNorm) and not bool(m.initialized)
    ]
    if not fresh:
        return False
    before = copy.deepcopy(module.state_dict())
    device = next(iter(module.parameters())).device
    with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        run()
    after = module.state_dict()
    keep = tuple(f"{name}." for name in fresh)
    module.load_state_dict({k: v if k.startswith(keep) else before[k] for k, v in after.items()})
    return True


class ObjectiveModule(nn.Module):
    """The flow and its objective as one module whose forward is the weighted loss: what DDP
    wraps, so that its gradient hooks cover the flow's and the objective's parameters.

    Args:
        model: the flow.
        objective: an ``nn.Module`` objective with parameters (a learned dequantizer), else
            ``None``.
        loss: ``loss(x) -> Loss`` (the trainer's checked objective), called as ``loss(x,
            context)`` with the rows' ``(B, C)`` context of a conditional flow.
    """

    def __init__(
        self, model: nn.Module, objective: nn.Module | None, loss: Callable[..., Any]
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self._loss = loss

    def forward(
        self, x: Tensor, weight: float, context: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        out = self._loss(x) if context is None else self._loss(x, context)
        return out.value * weight, {k: t.detach() * weight for k, t in out.terms.items()}


def wrap_ddp(module: ObjectiveModule, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` over ``module`` (which broadcasts rank 0's state now)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
