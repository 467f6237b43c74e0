"""Bits/dim: one function, checked on a model whose likelihood is known in closed form.

``Flow(Logit(alpha=0), StandardLogistic)`` is exactly the uniform density on ``[0, 1)^D``, so
uniformly dequantized ``K``-level data get ``log p(u) = 0`` and ``log2 K`` bits/dim exactly,
whatever the batch, the split or the path (in memory, ``test_summary``, ``score_rows``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import flowforge as ff
from flowforge.data import Dataset, dequantize
from flowforge.eval.likelihood import NonFiniteLikelihood, bits_per_dim, log_likelihoods, summarize
from flowforge.eval.score import score_rows
from flowforge.runs import ModelSpec, Run, run_files
from flowforge.train import run as train_run
from flowforge.train.batches import prepare_split
from flowforge.train.config import TrainConfig

F64 = torch.float64


def uniform_flow(shape: tuple[int, ...]) -> ff.Flow:
    """The uniform density on [0, 1)^shape as a flow."""
    logit = ff.transforms.Logit(0.0, shape)
    return ff.Flow(logit, ff.distributions.StandardLogistic(shape)).double()


def _levels(n: int, shape: tuple[int, ...], k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, (n, *shape), generator=g).to(F64)


@pytest.mark.parametrize(("shape", "k"), [((1, 8, 8), 17), ((3, 4, 4), 256)])
def test_uniform_model_scores_log2_levels_exactly(shape: tuple[int, ...], k: int) -> None:
    flow = uniform_flow(shape)
    u = dequantize(_levels(300, shape, k), k, torch.Generator().manual_seed(1))
    ll = log_likelihoods(flow, u, batch_size=64)
    s = summarize(ll, math.prod(shape), k)
    assert s.bpd == pytest.approx(math.log2(k), abs=1e-9)
    assert s.bpd_err == pytest.approx(0.0, abs=1e-9)
    assert s.nll == pytest.approx(0.0, abs=1e-8)


def test_levels_are_two_to_the_bits() -> None:
    # 8-bit data under the uniform model: 8 bits/dim, not log2(255)
    assert bits_per_dim(0.0, 3072, 256) == pytest.approx(8.0, abs=1e-12)
    assert bits_per_dim(0.0, 64, 17) == pytest.approx(math.log2(17), abs=1e-12)


def test_bits_per_dim_is_per_image_whatever_the_batch() -> None:
    d, k = 64, 17
    g = torch.Generator().manual_seed(2)
    ll = -50.0 + 20.0 * torch.randn(37, generator=g, dtype=F64)  # per-image log p(u)
    per_image = bits_per_dim(ll, d, k)
    assert per_image.shape == (37,)
    torch.testing.assert_close(per_image, (-ll + d * math.log(k)) / (d * math.log(2)))
    # the same images in other batches: the same numbers
    torch.testing.assert_close(
        torch.cat([bits_per_dim(ll[:5], d, k), bits_per_dim(ll[5:], d, k)]), per_image
    )
    s = summarize(ll, d, k)
    assert s.bpd == pytest.approx(per_image.mean().item(), rel=1e-12)
    assert s.bpd_err == pytest.approx(2 * per_image.std().item() / math.sqrt(37), rel=1e-12)
    assert s.bpd_err == pytest.approx(s.nll_err / (d * math.log(2)), rel=1e-12)


def _image_dataset(shape: tuple[int, ...], k: int) -> Dataset:
    return Dataset(
        name="fake",
        kind="image",
        event_shape=shape,
        train=_levels(40, shape, k, 3).float(),
        val=_levels(30, shape, k, 4).float(),
        test=_levels(50, shape, k, 5).float(),
        levels=k,
    )


def test_run_paths_count_the_noise_once(tmp_path: Path) -> None:
    shape, k = (1, 8, 8), 17
    ds = _image_dataset(shape, k)
    flow = uniform_flow(shape)
    s = train_run.test_summary(flow, ds, TrainConfig(data="digits"), "test")
    assert s.n == 50 and s.bpd == pytest.approx(math.log2(k), abs=1e-9)
    spec = ModelSpec("glow", {}, "image", shape, levels=k, logit_alpha=0.0)
    run = Run(run_files(tmp_path), spec, {}, flow)
    x = ds.test.numpy().astype(np.float64)
    for rows in (x, x.reshape(50, -1)):  # images or flattened rows
        scores = score_rows(run, rows, seed=3)
        torch.testing.assert_close(scores, torch.zeros(50, dtype=F64), atol=1e-9, rtol=0)
    # the noise stays within one level (added once): the levels come back by flooring
    u = prepare_split(ds, "test", 0)
    assert u.shape == (50, *shape) and torch.equal((u * k).floor(), ds.test)
    # a flow that is not uniform: the score is log p of the image dequantized once, seeded
    torch.manual_seed(0)
    glow = ff.flows.Glow(shape=shape, levels=1, depth=1, hidden=(4, 4)).double()
    with torch.no_grad():
        for p in glow.parameters():
            p.normal_(0.0, 0.05)
    run = Run(run_files(tmp_path), spec, {}, glow)
    once = dequantize(ds.test.double(), k, torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = glow.log_prob(once)
    torch.testing.assert_close(score_rows(run, x, seed=3), expected, rtol=1e-12, atol=1e-10)


def test_a_non_finite_row_stops_the_evaluation() -> None:
    shape, k = (1, 2, 2), 4
    ds = _image_dataset(shape, k)
    ds.test[7, 0, 1, 0] = -2  # u < 0: outside the uniform model's support
    with pytest.raises(NonFiniteLikelihood, match=r"rows 7; 0-based"):
        train_run.test_summary(uniform_flow(shape), ds, TrainConfig(data="digits"), "test")
