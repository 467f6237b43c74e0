"""Data-parallel training: torchrun with 2 CPU processes (gloo) against one process, the shard
arithmetic, DDP over the fused kernels, bf16 autocast of the networks, a killed rank.

Two torchrun launches are real launches of ``torchrun -m flowforge train`` (``torchrun`` started
as a subprocess): the 2-rank run against one process, and the killed rank. The other 2-rank
checks (BatchNorm, a NaN on one rank, ActNorm for NICE and Glow, resume across world sizes) run
in one launch of ``tests/ddp_scenarios.py`` (each launch costs three fresh torch imports); the
1-process references run ``cli.main`` in this process. CUDA paths (nccl, bf16 training) are
skipped without a GPU, with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

import flowforge as ff
from cli_util import TINY_TABLE, assert_ok, cli_env, run_cli
from ddp_scenarios import RUN, actnorm_args, batchnorm_case
from flowforge.fit.distributed import (
    ObjectiveModule,
    World,
    launch_from_env,
    shard,
    wrap_ddp,
)
from flowforge.fit.precision import network_autocast, networks_of
from flowforge.train.checkpoint import load_checkpoint
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.losses import MaximumLikelihood
from flowforge.train.run import start_run

TORCHRUN = Path(sys.executable).with_name("torchrun")
SCENARIO_SCRIPT = Path(__file__).with_name("ddp_scenarios.py")
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason="no torchrun next to python")


def torchrun(
    *args: str | Path, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc_per_node=2 -m flowforge ARGS`` (one node, a local rendezvous)."""
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "flowforge"]
    return subprocess.run(
        [*cmd, *map(str, args)],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_table(path: Path, rows: int = 600) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3))
    x[:, 1] += x[:, 0] ** 2  # not Gaussian: the flow has something to learn
    np.save(path, x.astype(np.float32))
    return path


def model_state(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint.safetensors")["model"]


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


# -- shards, environment ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 3, 32, 33])
def test_shards_are_disjoint_cover_the_batch_and_weight_to_its_mean(n: int) -> None:
    x = torch.randn(n, 2)
    parts = [shard(x, World(rank, 3)) for rank in range(3)]
    real = [p for p, w in parts if w > 0]
    assert torch.equal(torch.cat(real), x)  # the union, in order, each row once
    loss = (x**2).sum(1)
    # DDP averages the weighted means of the 3 ranks: the mean of the whole batch
    ddp = sum(w * float((p**2).sum(1).mean()) for p, w in parts) / 3
    assert ddp == pytest.approx(float(loss.mean()), rel=1e-6)
    assert all(p.shape[0] >= 1 for p, _ in parts)  # every rank takes part in the all-reduce


def test_launch_env() -> None:
    assert launch_from_env({}) is None
    assert launch_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (1, 2, 1)
    with pytest.raises(ConfigError, match="RANK < WORLD_SIZE"):
        launch_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="must be integers"):
        launch_from_env({"RANK": "a", "WORLD_SIZE": "2"})


# -- DDP over the fused kernels (one gloo process) ------------------------------------------------


@pytest.fixture
def gloo_group(tmp_path: Path):  # type: ignore[no-untyped-def]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdv'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("name", ["maf", "realnvp", "nsf"])
def test_ddp_averages_the_fused_kernels_gradients_like_the_plain_modules(
    name: str, gloo_group: None
) -> None:
    torch.manual_seed(1)
    flow = ff.flows.PRESETS[name](features=4, transforms=2, hidden=(16,))
    with torch.no_grad():  # random, not zero-initialised, output layers
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(64, 4)
    grads = []
    for plain in (False, True):
        module = ObjectiveModule(flow, None, lambda b: MaximumLikelihood()(flow, b))
        ddp = wrap_ddp(module, torch.device("cpu"))
        flow.zero_grad(set_to_none=True)
        if plain:
            with ff.functional.plain_modules():
                value, _ = ddp(x, 1.0)
        else:
            value, _ = ddp(x, 1.0)
        value.backward()
        grads.append(torch.cat([p.grad.flatten() for p in flow.parameters()]))  # type: ignore[union-attr]
    assert grads[0].abs().max() > 1e-3
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


class _DtypeLog(TorchDispatchMode):
    """The dtypes of the floating outputs of every op, inside the networks and outside."""

    def __init__(self, inside: list[bool]) -> None:
        super().__init__()
        self.flag = inside
        self.inside: set[torch.dtype] = set()
        self.outside: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                (self.inside if self.flag[0] else self.outside).add(t.dtype)
        return out


# -- bf16 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["maf", "nsf", "realnvp"])
def test_bf16_autocast_runs_the_networks_in_bf16_and_keeps_log_prob_float32(name: str) -> None:
    torch.manual_seed(0)
    flow = ff.flows.PRESETS[name](features=4, transforms=2, hidden=(32,))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(256, 4)
    with ff.functional.plain_modules():
        reference = flow.log_prob(x)
    nets = networks_of(flow)
    inside = [False]
    for net in nets:  # mark the ops that run inside a network
        net.register_forward_pre_hook(lambda m, i: inside.__setitem__(0, True))
        net.register_forward_hook(lambda m, i, o: inside.__setitem__(0, False))
    with _DtypeLog(inside) as log, network_autocast(flow, device_type="cpu"):
        lp = flow.log_prob(x)
    assert nets and torch.bfloat16 in log.inside  # the networks' matmuls ran in bf16
    assert torch.bfloat16 not in log.outside  # log-dets, base, log_prob: float32 only
    assert torch.float32 in log.outside
    assert lp.dtype == torch.float32
    diff = (lp - reference).detach().abs()
    assert 0 < float(diff.max()) < 0.1  # bf16 networks: close, but not the same numbers
    assert "forward" not in vars(networks_of(flow)[0])  # restored
    assert float(flow.log_prob(x).sub(reference).detach().abs().max()) < 1e-4


def test_bf16_training_runs_on_the_cpu_and_stays_close_to_float32(tmp_path: Path) -> None:
    losses = {}
    for precision in ("float32", "bf16"):
        options = {"precision": precision, "device": "cpu", "steps": 3, "eval_every": 3}
        options |= {"n_val": 256, "n_test": 256, "hidden": [32], "transforms": 2, "quiet": True}
        options |= {"plots": False, "flow": "realnvp", "out": str(tmp_path / precision)}
        result = start_run(TrainConfig.from_layers(options))
        assert result is not None
        record = json.loads((tmp_path / precision / "config.json").read_text())
        assert record["config"]["precision"] == precision
        (line,) = (tmp_path / precision / "metrics.jsonl").read_text().splitlines()
        losses[precision] = json.loads(line)["train_loss"]
    assert losses["bf16"] != losses["float32"]  # the networks did compute in bf16
    assert losses["bf16"] == pytest.approx(losses["float32"], abs=0.05)


def test_bf16_is_refused_for_a_flow_without_networks(tmp_path: Path) -> None:
    options = {"precision": "bf16", "device": "cpu", "flow": "ffjord", "out": str(tmp_path / "r")}
    with pytest.raises(ConfigError, match="casts MLP, MADE and ConvNet networks; this flow"):
        start_run(TrainConfig.from_layers(options))
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 training needs CUDA: no GPU here")
def test_bf16_training_step_on_cuda(tmp_path: Path) -> None:  # pragma: no cover - GPU only
    x = torch.randn(512, 4, device="cuda")
    for name in ("maf", "nsf", "realnvp"):
        flow = ff.flows.PRESETS[name](features=4, transforms=2, hidden=(64,)).cuda()
        with network_autocast(flow, device_type="cuda"):
            loss = -flow.log_prob(x).mean()
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        ref = flow.log_prob(x).double().cpu()
        assert torch.allclose(flow.cpu().log_prob(x.cpu()).double(), ref, atol=1e-4)


# -- torchrun: 2 CPU ranks against one process --------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 2-rank ``torchrun -m flowforge`` run (default run directory, in its own folder) and a
    1-process run of the same command (in this process)."""
    root = tmp_path_factory.mktemp("ddp")
    table = write_table(root / "table.npy")
    (root / "two").mkdir()
    proc = torchrun("train", "--data", table, "--flow", "realnvp", *RUN, cwd=root / "two")
    assert_ok(proc)
    assert "run directory" in proc.stdout and proc.stdout.count("test NLL") == 1  # rank 0 only
    one = run_cli("train", "--data", table, "--flow", "realnvp", *RUN, "--out", "one", cwd=root)
    assert_ok(one)
    return root, root / "two", root / "one"


@needs_torchrun
def test_two_ranks_train_like_one_process_with_the_global_batch(
    pair: tuple[Path, Path, Path],
) -> None:
    _, two, one = pair
    (run,) = (two / "runs").iterdir()
    assert max_difference(model_state(run), model_state(one)) < 1e-6
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [3, 6]  # one record per evaluation: rank 0 alone
    assert records[1]["train_loss"] < records[0]["train_loss"]  # it trained
    single = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    for r, s in zip(records, single, strict=True):  # validation over all rows, not a slice
        assert r["val_nll"] == pytest.approx(s["val_nll"], abs=1e-5)
        assert r["train_loss"] == pytest.approx(s["train_loss"], abs=1e-5)


@needs_torchrun
def test_exactly_one_run_directory_is_written(pair: tuple[Path, Path, Path]) -> None:
    _, two, _ = pair
    written = sorted(p.relative_to(two) for p in two.rglob("*"))
    runs = [p for p in written if len(p.parts) == 2]
    assert len(runs) == 1, written  # no second directory (another rank's timestamp)
    assert all(p.parts[0] == "runs" for p in written), written


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--flow", "nosuch"], "invalid choice: 'nosuch'"),
        (["--steps", "0"], "steps must be positive"),
    ],
)
def test_bad_input_is_printed_once_by_rank_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    """Every rank meets the same bad flag: rank 0 prints it, the others exit 2 silently (it
    was printed once per rank)."""
    for rank, printed in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        proc = run_cli("train", *args, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.count("flowforge train: error:") == printed, proc.stderr
        assert printed == 0 or expected in proc.stderr
    assert list(tmp_path.iterdir()) == []


@needs_torchrun
@pytest.mark.parametrize("args", [["--flow", "nosuch"], ["--data", "missing.csv"]])
def test_bad_input_under_torchrun_is_printed_once(tmp_path: Path, args: list[str]) -> None:
    proc = torchrun("train", *args, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("flowforge train: error:") == 1, proc.stderr
    # rank 1, waiting for rank 0's data, printed gloo's "Connection closed by peer" traceback
    assert "[rank1]" not in proc.stderr and "Connection closed" not in proc.stderr, proc.stderr


# -- several 2-rank scenarios in one torchrun launch (tests/ddp_scenarios.py) --------------------

SCENARIOS = ["batchnorm", "nan", "actnorm-nice", "resume", "actnorm-glow"]
RESUME_BASE = ["--flow", "realnvp", *RUN, "--schedule", "constant"]


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One launch of 2 ranks running every scenario of ``SCENARIOS`` in order, in ``root``;
    before it, one process trains ``split`` for 3 of 6 steps (resumed there on 2 ranks)."""
    root = tmp_path_factory.mktemp("scenarios")
    table = write_table(root / "table.npy")
    split = ["train", "--data", table, *RESUME_BASE, "--steps", "3", "--out", "split"]
    assert_ok(run_cli(*split, cwd=root))
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(SCENARIO_SCRIPT)]
    proc = subprocess.run(
        [*cmd, str(root), str(table), *SCENARIOS],
        cwd=root,
        env=cli_env() | {"FLOWFORGE_DIST_TIMEOUT": "20"},  # a hang fails in 20 s, not 600
        capture_output=True,
        text=True,
        timeout=300,
    )
    return root, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def _ran(scenarios: tuple[Path, str], name: str) -> Path:
    """The folder of the launch, after checking that both ranks finished scenario ``name``."""
    root, output = scenarios
    for rank in (0, 1):
        error = root / f"{name}.{rank}.error"
        assert not error.exists(), f"{name} failed on rank {rank}:\n{error.read_text()}"
        failed = sorted(p.name for p in root.glob("*.error"))
        assert (root / f"{name}.{rank}.done").exists(), (
            f"{name} did not run on rank {rank} (errors: {failed})\n{output}"
        )
    return root


@needs_torchrun
@pytest.mark.slow
def test_batchnorm_uses_the_statistics_and_gradient_of_the_global_batch(
    scenarios: tuple[Path, str],
) -> None:
    root = _ran(scenarios, "batchnorm")
    a, b = (torch.load(root / f"batchnorm.{r}.pt") for r in (0, 1))
    bn, x = batchnorm_case()
    x.requires_grad_()
    z, ladj = bn(x)  # one process, the whole batch
    ((z.square().sum() - ladj.sum()) / 10).backward()
    torch.testing.assert_close(torch.cat([a["z"], b["z"]]), z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([a["ladj"], b["ladj"]]), ladj, rtol=1e-5, atol=1e-5)
    # the gradient through the shared statistics reaches every rank's rows
    torch.testing.assert_close(torch.cat([a["x_grad"], b["x_grad"]]), x.grad, rtol=1e-4, atol=1e-5)
    for got in (a, b):
        torch.testing.assert_close(got["grads"][0], bn.log_gamma.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["grads"][1], bn.beta.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["running"], bn.running_var, rtol=1e-5, atol=1e-6)


@needs_torchrun
@pytest.mark.slow
def test_a_nan_on_one_rank_is_skipped_on_every_rank(scenarios: tuple[Path, str]) -> None:
    root = _ran(scenarios, "nan")
    a, b = (torch.load(root / f"nan.{r}.pt") for r in (0, 1))
    assert a["nan_total"] == b["nan_total"] == 1  # rank 0's slice was finite: it skipped too
    assert max_difference(a["model"], b["model"]) == 0.0
    # with progress=True, rank 0 alone shows the bar and prints the log lines
    assert "skipped the batch" in a["err"] and b["err"] == "", (a["err"], b["err"])


@needs_torchrun
@pytest.mark.slow
@pytest.mark.parametrize("flow", ["nice", "glow"])
def test_actnorm_starts_from_the_global_first_batch_on_every_rank(
    flow: str, scenarios: tuple[Path, str]
) -> None:
    """NICE ends in an ActNorm, Glow (on digits) has one per step: with a tiny learning rate
    the weights after one step are the initialisation. Every rank must hold the same (the run
    checks it, else fails) and the same as one process initialised on the 32 rows."""
    root = _ran(scenarios, f"actnorm-{flow}")
    args = actnorm_args(flow, str(root / "table.npy"))
    assert_ok(run_cli(*args, "--out", f"one-{flow}", cwd=root))
    a, b = model_state(root / f"actnorm-{flow}"), model_state(root / f"one-{flow}")
    act = [k for k in a if k.endswith((".loc", ".log_scale"))]
    assert act and max(float(a[k].abs().max()) for k in act) > 1e-2  # data-initialised
    assert max_difference(a, b) < 1e-6


@needs_torchrun
@pytest.mark.slow
def test_resume_across_world_sizes_continues_the_same_run(scenarios: tuple[Path, str]) -> None:
    """1 process for 3 steps, then 2 ranks to 6: the same weights as 6 steps in one process."""
    root = _ran(scenarios, "resume")
    whole = ["train", "--data", root / "table.npy", *RESUME_BASE, "--out", "whole"]
    assert_ok(run_cli(*whole, cwd=root))
    assert max_difference(model_state(root / "split"), model_state(root / "whole")) < 1e-6


def _rank_pid(agent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with ``RANK=rank`` (a child of the agent)."""
    for task in Path(f"/proc/{agent}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
    return None


@needs_torchrun
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_a_killed_rank_fails_the_job_and_resume_completes_at_another_world_size(
    tmp_path: Path,
) -> None:
    table = write_table(tmp_path / "table.npy")
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "flowforge", "train"]
    cmd += ["--data", str(table), "--flow", "realnvp", *TINY_TABLE, "--device", "cpu"]
    cmd += ["--steps", "100000", "--eval-every", "5", "--batch-size", "32", "--out", "run"]
    env = cli_env() | {"FLOWFORGE_DIST_TIMEOUT": "20"}
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 90
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        proc.communicate(timeout=60)  # no hang: the job ends well within the timeout
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert time.monotonic() - start < 60
    step = int(load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")["counters"]["step"])
    assert step >= 10
    res = run_cli("train", "--resume", "run", "--steps", str(step + 5), "--quiet", cwd=tmp_path)
    assert_ok(res)  # one process resumes the 2-rank checkpoint
    assert f"trained for {step + 5} steps" in res.stdout
