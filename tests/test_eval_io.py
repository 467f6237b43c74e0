"""Run records, model specs and likelihood summaries, in process."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from flowforge.data import load_dataset
from flowforge.eval.likelihood import NonFiniteLikelihood, bits_per_dim, summarize
from flowforge.runs import ModelSpec, RunError, build_flow, check_output, read_run_record
from flowforge.train.batches import steps_per_epoch
from flowforge.train.config import ConfigError, TrainConfig
from flowforge.train.model import spec_for
from flowforge.train.run import resolve_device
from flowforge.transforms import Standardize


def test_summary_and_bits_per_dim() -> None:
    ll = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)
    s = summarize(ll, dim=4, levels=256)
    assert (s.nll, s.n) == (2.0, 3)
    assert s.nll_err == pytest.approx(2 * 1.0 / math.sqrt(3))
    assert s.bpd == pytest.approx((2.0 + 4 * math.log(256)) / (4 * math.log(2)))
    assert s.bpd_err == pytest.approx(s.nll_err / (4 * math.log(2)))
    assert bits_per_dim(0.0, 10, 2) == pytest.approx(1.0)  # uniform on [0,1): 1 bit per value


def test_non_finite_log_likelihoods_are_an_error_naming_the_rows() -> None:
    ll = torch.tensor([-1.0, float("nan"), -3.0, -float("inf"), 2.0], dtype=torch.float64)
    with pytest.raises(NonFiniteLikelihood, match=r"2 of 5 rows \(rows 1, 3; 0-based\)"):
        summarize(ll)
    with pytest.raises(NonFiniteLikelihood, match="rows 1, 3"):
        summarize(ll, dim=4, levels=17)


def test_run_record_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no run directory"):
        read_run_record(tmp_path / "missing")
    with pytest.raises(RunError, match=r"config\.json is missing"):
        read_run_record(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(RunError, match="corrupted: not valid JSON"):
        read_run_record(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(RunError, match="not a flowforge run record"):
        read_run_record(tmp_path)


def test_check_output(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"unsupported output type '\.txt'"):
        check_output(tmp_path / "x.txt", (".npy", ".csv"))
    with pytest.raises(RunError, match="does not exist"):
        check_output(tmp_path / "no" / "x.npy", (".npy",))
    check_output(tmp_path / "x.npy", (".npy",))


def test_spec_errors_name_the_option() -> None:
    ds = load_dataset("moons", n_val=10, n_test=10)
    msg = "flow 'maf' takes no option 'bins' (is not an option of it); valid: transforms, hidden"
    with pytest.raises(ConfigError, match=re.escape(msg)):
        spec_for(TrainConfig(flow="maf", bins=4), ds)
    with pytest.raises(ConfigError, match=r"takes no option 'features' \(comes from the data\)"):
        spec_for(TrainConfig(flow="maf", flow_options={"features": 3}), ds)
    with pytest.raises(ConfigError, match=r"unknown flow 'nope'; valid flows: (\w+, )*maf, "):
        spec_for(TrainConfig(flow="nope"), ds)
    with pytest.raises(ConfigError, match="no epochs; use --steps"):
        steps_per_epoch(ds, 64)
    spec = spec_for(TrainConfig(flow="nsf", flow_options={"coupling": True}), ds)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="cannot build flow 'nsf'"):
        build_flow(ModelSpec("nsf", {**spec.kwargs, "transforms": 0}, "toy", (2,)))


def test_image_flow_includes_the_logit_jacobian() -> None:
    spec = ModelSpec(
        "maf", {"features": 4, "transforms": 1, "hidden": (8,)}, "image", (1, 2, 2), 17, 0.05
    )
    torch.manual_seed(0)
    flow = build_flow(spec)
    torch.manual_seed(0)
    bare = build_flow(ModelSpec("maf", spec.kwargs, "toy", (4,)))
    flow, bare = flow.double(), bare.double()
    with torch.no_grad():  # random, non-zero weights: an identity MADE would hide a bad reshape
        for p in bare.parameters():
            p.normal_(0.0, 0.3)
        flow.bijection.bijections[2].load_state_dict(bare.bijection.state_dict())  # type: ignore[index]
    assert flow.event_shape == (1, 2, 2)  # the flow takes images, the MAF sees them flattened
    u = torch.rand(5, 1, 2, 2, dtype=torch.float64)
    s = 0.05 + 0.9 * u
    y = (torch.log(s) - torch.log1p(-s)).reshape(5, 4)
    ladj = (math.log(0.9) - torch.log(s) - torch.log1p(-s)).reshape(5, 4).sum(-1)
    assert torch.allclose(flow.log_prob(u), bare.log_prob(y) + ladj)
    assert flow.sample(3).shape == (3, 1, 2, 2)


def test_standardize_log_det_matches_autograd() -> None:
    mean = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    std = torch.tensor([0.5, 2.0, 10.0], dtype=torch.float64)
    b = Standardize(mean, std).double()
    x = torch.randn(3, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: b(v[None])[0][0], x)
    _, ladj = b(x[None])
    assert ladj.item() == pytest.approx(torch.linalg.slogdet(jac)[1].item())
    z, _ = b(x[None])
    back, inv_ladj = b.inverse(z)
    assert torch.allclose(back[0], x) and inv_ladj.item() == pytest.approx(-ladj.item())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
