"""Issue 11: standardised tables train in standardised units (float64, then cast).

A column near 1.7e9 that varies by +-100 has float32 spacing 128 in its own units; the rows a
run's flow trains and validates on must keep every distinct value.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from flowforge.data import load_dataset
from flowforge.eval.likelihood import standardized_log_likelihoods
from flowforge.runs.recipe import build_flow
from flowforge.train import run as train_run
from flowforge.train.batches import TrainStream, prepare_split, training_flow
from flowforge.train.config import TrainConfig
from flowforge.train.loop import Trainer
from flowforge.train.model import spec_for


def _big_column_csv(path: Path, n: int = 200) -> Path:
    rng = np.random.default_rng(3)
    big = 1.7e9 + rng.integers(-100, 101, n)
    other = rng.normal(size=n)
    lines = ["t,y"] + [f"{b:.0f},{o:.6f}" for b, o in zip(big, other, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _distinct(x: torch.Tensor) -> int:
    return int(torch.unique(x).numel())


def test_the_trained_model_sees_every_distinct_value(tmp_path: Path, monkeypatch) -> None:
    csv = _big_column_csv(tmp_path / "big.csv")
    seen: list[torch.Tensor] = []
    vals: list[torch.Tensor] = []
    step = Trainer.train_step

    def spy(self: Trainer, x: torch.Tensor) -> float | None:
        seen.append(x.detach().clone())
        vals.append(self.val.detach().clone())
        return step(self, x)

    monkeypatch.setattr(Trainer, "train_step", spy)
    cfg = TrainConfig.from_layers(
        {"data": str(csv), "flow": "maf", "transforms": 1, "hidden": (8,), "batch_size": 160},
        {"epochs": 1.0, "plots": False, "quiet": True, "threads": 1, "out": str(tmp_path / "r")},
    )
    train_run.start_run(cfg)
    ds = load_dataset(str(csv))
    assert ds.train is not None and ds.val is not None
    x = torch.cat(seen)
    assert x.shape[0] == ds.train.shape[0]  # one epoch of the training rows
    # every distinct value of the big column reaches the model (float32 own units: ~3)
    assert _distinct(x[:, 0]) == _distinct(ds.train[:, 0]) > 100
    assert _distinct(vals[0][:, 0]) == _distinct(ds.val[:, 0]) > 10


def test_the_view_has_the_flows_density_and_state(tmp_path: Path) -> None:
    csv = _big_column_csv(tmp_path / "big.csv")
    ds = load_dataset(str(csv))
    cfg = TrainConfig.from_layers({"data": str(csv), "flow": "realnvp", "transforms": 2})
    torch.manual_seed(0)
    flow = build_flow(spec_for(cfg, ds))
    with torch.no_grad():  # random, not identity, parameters
        for p in flow.parameters():
            p.normal_(0, 0.3)
    view = training_flow(flow, ds)
    assert list(view.state_dict()) == list(flow.state_dict())
    assert ds.val is not None and ds.standardizer is not None
    ref = standardized_log_likelihoods(flow, ds.val, ds.standardizer.log_abs_det())
    got = view.log_prob(prepare_split(ds, "val", 0, standardized=True)).double()  # type: ignore[operator]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
    # parameters are shared: a change to the view is a change to the flow
    with torch.no_grad():
        next(view.parameters()).add_(1.0)
    ref2 = standardized_log_likelihoods(flow, ds.val, ds.standardizer.log_abs_det())
    assert not torch.allclose(ref, ref2)
    batch = TrainStream(ds, 16, 0, standardized=True).next()
    assert _distinct(batch[:, 0]) > 8


def test_unstandardised_data_keep_the_flow() -> None:
    ds = load_dataset("8gaussians", n_val=50, n_test=50)
    cfg = TrainConfig.from_layers({"flow": "maf", "transforms": 1, "hidden": (8,)})
    flow = build_flow(spec_for(cfg, ds))
    assert training_flow(flow, ds) is flow
    torch.testing.assert_close(prepare_split(ds, "val", 0, True), ds.val)
