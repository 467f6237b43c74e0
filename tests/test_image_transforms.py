"""Image bijections against references written out another way (loops, conv2d, closed forms).

The contract tests (test_contract.py) check round trips and log-determinants; these check that
each map is the map its docstring describes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import flowforge as ff
from registry import randomize

T = ff.transforms
DT = torch.float64


def test_squeeze_layout_matches_a_loop() -> None:
    x = torch.randn(2, 3, 4, 6, dtype=DT)
    z, ladj = T.Squeeze((3, 4, 6))(x)
    assert z.shape == (2, 12, 2, 3) and torch.equal(ladj, torch.zeros(2, dtype=DT))
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.equal(z[:, c * 4 + i * 2 + j], x[:, c, i::2, j::2])


def test_squeeze_refuses_odd_sizes() -> None:
    with pytest.raises(ValueError, match="divisible by factor 2"):
        T.Squeeze((1, 5, 4))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        T.Squeeze((4, 4))


def test_conv1x1_is_a_1x1_convolution() -> None:
    conv = randomize(T.Conv1x1((3, 4, 5))).to(DT)
    x = torch.randn(2, 3, 4, 5, dtype=DT)
    z, ladj = conv(x)
    w = conv.weight
    assert torch.allclose(z, F.conv2d(x, w[:, :, None, None]))
    assert torch.allclose(ladj, 20 * torch.log(torch.det(w).abs()).expand(2))


def test_lu_conv1x1_is_a_1x1_convolution() -> None:
    conv = randomize(T.LUConv1x1((3, 2, 2))).to(DT)
    x = torch.randn(2, 3, 2, 2, dtype=DT)
    z, ladj = conv(x)
    w, b = conv.linear.weight(), conv.linear.bias
    assert torch.allclose(z, F.conv2d(x, w[:, :, None, None], b))
    assert torch.allclose(ladj, 4 * torch.log(torch.det(w).abs()).expand(2))


def test_conv1x1_singular_weight_is_a_clear_error() -> None:
    conv = T.Conv1x1((2, 2, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="singular"):
        conv(torch.randn(1, 2, 2, 2))
    with pytest.raises(ValueError, match="singular"):
        conv.inverse(torch.randn(1, 2, 2, 2))


def test_conv1x1_float32_inverse_is_accurate_for_a_badly_conditioned_weight() -> None:
    conv = T.Conv1x1((4, 2, 2))
    with torch.no_grad():
        conv.weight.copy_(torch.diag(torch.tensor([1.0, 1e-3, 1.0, 2.0])) + 0.3)
    x = torch.randn(8, 4, 2, 2)
    z, _ = conv(x)
    back, _ = conv.inverse(z)
    assert (back - x).abs().max() < 1e-3


def test_sigmoid_affine_closed_form() -> None:
    t = T.SigmoidAffine()
    x, h, shift = (torch.randn(5, 3, dtype=DT) for _ in range(3))
    z, ladj = t(x, torch.stack([h, shift], -1))
    scale = torch.sigmoid(h + 2)
    assert torch.allclose(z, (x + shift) * scale) and torch.allclose(ladj, torch.log(scale))
    # Extreme raw outputs stay finite.
    z, ladj = t(x, torch.stack([torch.full_like(h, -1e4), shift], -1))
    assert torch.isfinite(ladj).all() and torch.isfinite(z).all()


def _net(cin: int, cout: int) -> ff.nn.ConvNet:
    return randomize(ff.nn.ConvNet(cin, cout, hidden=(8, 8))).to(DT)  # type: ignore[return-value]


def test_channel_coupling_conditions_on_the_first_half() -> None:
    torch.manual_seed(0)
    t = T.Affine(3.0)
    layer = T.ChannelCoupling((4, 3, 3), t, _net(2, 4)).to(DT)
    x = torch.randn(2, 4, 3, 3, dtype=DT)
    z, ladj = layer(x)
    out = layer.net(x[:, :2])  # (N, P * 2, H, W): P blocks of 2 channels
    raw, shift = out[:, :2], out[:, 2:]
    s = 3.0 * torch.tanh(raw / 3.0)
    assert torch.equal(z[:, :2], x[:, :2])
    assert torch.allclose(z[:, 2:], x[:, 2:] * torch.exp(s) + shift)
    assert torch.allclose(ladj, s.sum((1, 2, 3)))


def test_context_enters_image_couplings() -> None:
    torch.manual_seed(1)
    for layer in (
        T.ChannelCoupling((2, 2, 2), T.Affine(), _net(1 + 3, 2), context=3),
        T.CheckerboardCoupling((2, 2, 2), T.Affine(), _net(2 + 3, 4), context=3),
    ):
        layer.to(DT)
        x = torch.randn(1, 2, 2, 2, dtype=DT).expand(2, 2, 2, 2)
        c = torch.randn(2, 3, dtype=DT)
        z, ladj = layer(x, c)
        assert not torch.allclose(z[0], z[1]) and not torch.allclose(ladj[0], ladj[1])
        with pytest.raises(ValueError, match="context"):
            layer(x)


def test_checkerboard_parameters_depend_on_the_kept_pixels_only() -> None:
    torch.manual_seed(2)
    layer = T.CheckerboardCoupling((1, 4, 4), T.Affine(), _net(1, 2), parity=1).to(DT)
    keep = T.checkerboard(4, 4, parity=1)
    x = torch.randn(1, 1, 4, 4, dtype=DT)
    z, _ = layer(x)
    assert torch.equal(z[0, 0][keep], x[0, 0][keep])
    # Changing a transformed pixel changes only that pixel's output.
    y = x.clone()
    y[0, 0, 0, 0] += 1.0  # (0 + 0 + 1) is odd: a transformed pixel at parity 1
    assert not keep[0, 0]
    z2, _ = layer(y)
    changed = (z2 - z).abs()[0, 0] > 0
    assert changed[0, 0] and changed.sum() == 1


def test_multiscale_latent_order_is_as_documented() -> None:
    torch.manual_seed(3)
    act = T.ActNorm((4, 2, 2))
    randomize(act)
    ms = T.Multiscale([ff.Compose([T.Squeeze((1, 4, 4)), act]), T.Squeeze((2, 2, 2))]).to(DT)
    x = torch.randn(3, 1, 4, 4, dtype=DT)
    z, _ = ms(x)
    h, _ = ms.levels[0](x)  # (3, 4, 2, 2)
    assert torch.equal(z[:, :8], h[:, 2:].flatten(1))  # level 0's factored (last) channels
    last, _ = ms.levels[1](h[:, :2])
    assert torch.equal(z[:, 8:], last.flatten(1))


def test_multiscale_checks_its_levels() -> None:
    with pytest.raises(ValueError, match=r"level 1 takes events of shape \(4, 2, 2\)"):
        T.Multiscale([T.Squeeze((1, 4, 4)), T.ActNorm((4, 2, 2))])
    ms = T.Multiscale([T.Squeeze((1, 4, 4)), T.ActNorm((2, 2, 2))])
    assert ms.inv.event_shape == (16,) and ms.parts == [(2, 2, 2), (2, 2, 2)]


def test_spatial_context_enters_as_feature_maps() -> None:
    torch.manual_seed(4)
    layer = T.ChannelCoupling(
        (2, 3, 4), T.Affine(3.0), _net(1 + 2, 2), context=2 * 12, spatial=True
    )
    layer.to(DT)
    assert layer.context_channels == 2
    x = torch.randn(5, 2, 3, 4, dtype=DT)
    maps = torch.randn(5, 2, 3, 4, dtype=DT)  # F = 2 feature maps of the image's size
    z, ladj = layer(x, maps.flatten(1))
    out = layer.net(torch.cat([x[:, :1], maps], 1))  # the kept half, then the maps
    s = 3.0 * torch.tanh(out[:, :1] / 3.0)
    assert torch.allclose(z[:, 1:], x[:, 1:] * torch.exp(s) + out[:, 1:])
    assert torch.allclose(ladj, s.sum((1, 2, 3)))
    # A feature at one pixel moves the outputs near that pixel only (3x3 kernels, two of them).
    bumped = maps.clone()
    bumped[:, :, 0, 0] += 1.0
    moved = (layer(x, bumped.flatten(1))[0] - z).abs().sum((0, 1)) > 0
    assert moved[0, 0] and not moved[:, 3].any()


def test_spatial_context_size_must_hold_whole_maps() -> None:
    with pytest.raises(ValueError, match="positive multiple of 12"):
        T.CheckerboardCoupling((1, 3, 4), T.Affine(), _net(1, 2), context=13, spatial=True)


def test_lu_conv1x1_output_is_channels_last_as_documented() -> None:
    conv = randomize(T.LUConv1x1((3, 4, 5)))
    x = torch.randn(2, 3, 4, 5)
    for y in (conv(x)[0], conv.inverse(x)[0]):
        assert y.shape == (2, 3, 4, 5)
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    # Extra batch dimensions: memory ordered (*, H, W, C) too.
    y = conv(torch.randn(2, 2, 3, 4, 5))[0]
    assert y.shape == (2, 2, 3, 4, 5) and y.movedim(-3, -1).is_contiguous()
