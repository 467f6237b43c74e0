"""ActNorm's data-dependent initialisation and BatchNorm's running statistics."""

from __future__ import annotations

import torch

import flowforge as ff


def test_actnorm_initialises_once_from_the_first_training_batch() -> None:
    layer = ff.transforms.ActNorm(3)
    x = torch.randn(500, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([2.0, -1.0, 0.0])
    z, _ = layer(x)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(3), atol=1e-4)
    assert layer.initialized.item() == 1.0
    loc = layer.loc.detach().clone()
    layer(x * 10)  # a second batch does not re-initialise
    assert torch.equal(layer.loc.detach(), loc)


def test_actnorm_image_statistics_are_per_channel() -> None:
    layer = ff.transforms.ActNorm((2, 4, 4))
    x = torch.randn(64, 2, 4, 4) * torch.tensor([3.0, 0.5]).view(2, 1, 1)
    z, ladj = layer(x)
    assert torch.allclose(z.transpose(0, 1).reshape(2, -1).std(1), torch.ones(2), atol=1e-4)
    assert torch.allclose(ladj, -16 * layer.log_scale.sum().expand(64))


def test_actnorm_flag_survives_save_and_load_and_is_reread() -> None:
    trained = ff.transforms.ActNorm(3)
    trained(torch.randn(100, 3) * 4)
    fresh = ff.transforms.ActNorm(3)
    fresh(torch.randn(100, 3))  # initialised from other data first
    fresh.load_state_dict(trained.state_dict())
    fresh(torch.randn(100, 3))  # must not re-initialise: the loaded flag says done
    assert torch.equal(fresh.loc, trained.loc) and torch.equal(fresh.log_scale, trained.log_scale)
    blank = ff.transforms.ActNorm(3)
    fresh.load_state_dict(blank.state_dict())  # an uninitialised state: initialise again
    fresh(torch.randn(100, 3) * 7)
    assert fresh.initialized.item() == 1.0 and fresh.log_scale.mean() > 1.0


def test_actnorm_is_not_initialised_in_eval_mode_or_by_sampling() -> None:
    flow = ff.flows.NICE(features=4, transforms=2, hidden=(8,))
    flow.sample(10)
    flow.eval()
    flow.log_prob(torch.randn(10, 4))
    act = next(m for m in flow.modules() if isinstance(m, ff.transforms.ActNorm))
    assert act.initialized.item() == 0.0


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval() -> None:
    layer = ff.transforms.BatchNorm(2, momentum=1.0)
    x = torch.randn(256, 2) * 3 + 1
    z, _ = layer(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(layer.running_mean, x.mean(0), atol=1e-6)
    layer.eval()
    z_eval, _ = layer(x)
    assert torch.allclose(z_eval, z, atol=1e-4)
    assert torch.allclose(layer.inverse(z_eval)[0], x, atol=1e-4)


def test_actnorm_leaves_the_scale_of_a_channel_constant_in_the_first_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 2, 2) * torch.tensor([2.0, 1.0, 0.5]).view(3, 1, 1)
    x[:, 1] = 7.0  # constant in the first batch (a border pixel, zero-padded data ...)
    layer = ff.transforms.ActNorm((3, 2, 2))
    z, _ = layer(x)
    assert layer.log_scale[1].item() == 0.0 and abs(layer.loc[1].item() - 7.0) < 1e-6
    std = x.transpose(0, 1).reshape(3, -1).std(dim=1)
    torch.testing.assert_close(layer.log_scale[[0, 2]], std[[0, 2]].log())
    assert torch.isfinite(z).all() and z[:, 1].abs().max() == 0.0
    later = torch.randn(8, 3, 2, 2) + 7.0  # the channel varies later: no 1e6 spike
    assert layer(later)[0][:, 1].abs().max() < 10
