"""Image presets as flows: shapes, temperature sampling, class-conditioning."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from registry import randomize

DT = torch.float64


def _glow(context: int = 0) -> ff.Flow:
    torch.manual_seed(0)
    flow = ff.flows.Glow((1, 4, 4), context=context, levels=2, depth=2, hidden=(8, 8))
    return randomize(flow, 0.1).to(DT).eval()  # type: ignore[return-value]


def test_temperature_scales_the_latent_exactly() -> None:
    flow = _glow()
    x = flow.sample(4000, temperature=0.5)
    assert x.shape == (4000, 1, 4, 4)
    with torch.no_grad():
        z, _ = flow.bijection(x)
    assert abs(float(z.std()) - 0.5) < 0.02 and abs(float(z.mean())) < 0.02


def test_sample_and_log_prob_at_a_temperature_is_the_flow_density() -> None:
    flow = _glow()
    with torch.no_grad():
        x, lp = flow.sample_and_log_prob(16, temperature=0.7)
        assert torch.allclose(lp, flow.log_prob(x), atol=1e-8)


def test_temperature_needs_a_standard_normal_base() -> None:
    base = ff.distributions.DiagNormal(16)
    flow = ff.flows.Glow((1, 4, 4), levels=2, depth=1, hidden=(4, 4), base=base)
    flow.sample(2)  # T = 1 is fine with any base
    with pytest.raises(ValueError, match="StandardNormal"):
        flow.sample(2, temperature=0.5)
    with pytest.raises(ValueError, match="T > 0"):
        _glow().sample(2, temperature=0.0)


@pytest.mark.parametrize("preset", ["glow", "multiscale_realnvp"])
def test_class_conditional_image_flow(preset: str) -> None:
    torch.manual_seed(1)
    cls = ff.flows.PRESETS[preset]
    flow = randomize(cls((1, 4, 4), context=3, levels=2, depth=1, hidden=(8, 8)), 0.1).to(DT).eval()
    labels = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 3).to(DT)
    x = torch.randn(3, 1, 4, 4, dtype=DT)
    lp = flow.log_prob(x[:1].expand(3, 1, 4, 4), labels)
    assert lp.shape == (3,) and len(set(lp.tolist())) == 3  # the label changes the density
    xs = flow.sample(5, labels)
    assert xs.shape == (5, 3, 1, 4, 4)
    with pytest.raises(ValueError, match="context"):
        flow.log_prob(x)


def test_image_presets_check_their_shape() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        ff.flows.Glow((1, 8, 12), levels=3)
    with pytest.raises(ValueError, match=r"shape=\(C, H, W\)"):
        ff.flows.Glow((64,))
    with pytest.raises(ValueError, match="hidden"):
        ff.flows.MultiscaleRealNVP((1, 8, 8), hidden=(8, 0))
    with pytest.raises(ValueError, match="hidden"):
        ff.flows.Glow((1, 8, 8), hidden=())
