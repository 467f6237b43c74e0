"""Several 2-rank checks in one ``torchrun`` launch (each launch costs three fresh torch imports).

Run by ``tests/test_distributed.py`` as ``torchrun --standalone --nproc_per_node=2
tests/ddp_scenarios.py OUT TABLE NAME ...``. Every rank runs the named scenarios in order, in
``OUT``, each on a gloo group of its own (a file store in ``OUT``): the library ones directly,
the command-line ones through ``flowforge.cli.main``, which trains on the group it finds and
leaves it at the end of the run. After each scenario a rank writes ``OUT/<name>.<rank>.done``; on an error it
writes ``OUT/<name>.<rank>.error`` (the traceback) and stops, so the tests name what failed.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from cli_util import TINY_TABLE

#: 2 ranks, 6 steps, global batch 32 (16 rows per rank); one process takes the same 32 rows
RUN = [*TINY_TABLE, "--device", "cpu", "--steps", "6", "--eval-every", "3", "--batch-size", "32"]
#: a tiny learning rate: the weights after one step are the (data-dependent) initialisation
ACTNORM = ["--steps", "1", "--lr", "1e-9"]
DIGITS = ["--data", "digits", "--quiet", "--no-plots", "--device", "cpu", "--batch-size", "32"]
DIGITS += ["--n-val", "64", "--n-test", "64", "--eval-every", "1"]


def actnorm_args(flow: str, table: str) -> list[str]:
    """``flowforge train`` arguments of the ActNorm check for ``flow`` (nice or glow)."""
    data = ["--data", table, *RUN] if flow == "nice" else DIGITS
    return ["train", "--flow", flow, *data, *ACTNORM]


def batchnorm_case() -> tuple[torch.nn.Module, torch.Tensor]:
    """A BatchNorm with random parameters and the global batch of 10 rows (seeded)."""
    import flowforge as ff

    torch.manual_seed(0)
    bn = ff.transforms.BatchNorm((2, 3, 3))
    with torch.no_grad():
        bn.log_gamma.normal_()
        bn.beta.normal_()
    return bn, torch.randn(10, 2, 3, 3) * 3 + 1


def batchnorm(rank: int, out: Path) -> None:
    """Each rank normalises its uneven slice (4 and 6 rows) of the same global batch."""
    bn, x = batchnorm_case()
    mine = (x[:4] if rank == 0 else x[4:]).requires_grad_()
    z, ladj = bn(mine)
    loss = (z.square().sum() - ladj.sum()) / 10  # this rank's share of the global mean
    loss.backward()
    grads = [p.grad.clone() for p in (bn.log_gamma, bn.beta)]  # type: ignore[union-attr]
    for g in grads:
        dist.all_reduce(g)  # the sum over ranks, as DDP's mean times the world size
    torch.save(
        {"z": z, "ladj": ladj, "grads": grads, "x_grad": mine.grad, "running": bn.running_var},
        out / f"batchnorm.{rank}.pt",
    )


def nan_on_one_rank(rank: int, out: Path) -> None:
    """8gaussians with a NaN in the last row of the second global batch: rank 1's slice only."""
    import flowforge as ff
    from flowforge.data import load_dataset
    from flowforge.fit.distributed import World
    from flowforge.train.batches import TrainStream, prepare_split
    from flowforge.train.config import TrainConfig
    from flowforge.train.loop import Trainer

    class Poisoned(TrainStream):
        def next(self) -> torch.Tensor:
            x = super().next()
            self.calls = getattr(self, "calls", 0) + 1
            if self.calls == 2:
                x[-1, 0] = math.nan
            return x

    cfg = TrainConfig.from_layers({"steps": 4, "eval_every": 2, "batch_size": 64})
    ds = load_dataset("8gaussians", seed=1, n_val=128, n_test=128)
    torch.manual_seed(0)
    flow = ff.flows.RealNVP(features=2, transforms=2, hidden=(16,))
    trainer = Trainer(
        flow,
        Poisoned(ds, cfg.batch_size, cfg.seed),
        prepare_split(ds, "val", cfg.seed),
        cfg,
        cfg.steps,
        torch.device("cpu"),
        world=World(rank, 2),
    )
    with contextlib.redirect_stderr(io.StringIO()) as err:  # the bar and the log lines
        trainer.fit(progress=True)
    torch.save(
        {"model": flow.state_dict(), "nan_total": trainer.recovery.total, "err": err.getvalue()},
        out / f"nan.{rank}.pt",
    )


def _cli(*argv: str) -> None:
    from flowforge.cli import main

    code = main(list(argv))
    if code != 0:
        raise RuntimeError(f"flowforge {' '.join(argv)} exited with status {code}")


def run(rank: int, out: Path, table: str, names: list[str]) -> None:
    library = {"batchnorm": batchnorm, "nan": nan_on_one_rank}
    cli = {
        "actnorm-nice": lambda: _cli(*actnorm_args("nice", table), "--out", "actnorm-nice"),
        "actnorm-glow": lambda: _cli(*actnorm_args("glow", table), "--out", "actnorm-glow"),
        "resume": lambda: _cli("train", "--resume", "split", "--steps", "6", "--quiet"),
    }
    for name in names:
        try:
            # A group of its own per scenario, on a file store: a second group on torchrun's
            # store would find the first one's stale addresses there and hang.
            rdv = f"file://{out / f'{name}.rendezvous'}"
            dist.init_process_group(
                "gloo", init_method=rdv, rank=rank, world_size=2, timeout=timedelta(seconds=20)
            )
            if name in library:
                try:
                    library[name](rank, out)
                    dist.barrier()  # neither rank tears gloo down while the other still talks
                finally:
                    dist.destroy_process_group()
            else:
                cli[name]()  # the run uses this group and leaves it at its end
        except BaseException:
            (out / f"{name}.{rank}.error").write_text(traceback.format_exc())
            raise
        (out / f"{name}.{rank}.done").write_text("")


if __name__ == "__main__":
    import os

    torch.set_num_threads(1)
    out_dir, table_path, *scenarios = sys.argv[1:]
    os.chdir(out_dir)
    run(int(os.environ["RANK"]), Path(out_dir), table_path, scenarios)
