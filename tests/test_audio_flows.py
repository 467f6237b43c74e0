"""Audio flows on (C, T): the squeeze's order, near-singular 1x1 weights, WaveNet, WaveGlow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flowforge as ff
from registry import randomize

T = ff.transforms


def test_squeeze1d_groups_consecutive_samples() -> None:
    x = torch.randn(2, 3, 12, dtype=torch.float64)
    z, _ = T.Squeeze1d((3, 12), factor=4)(x)
    for c in range(3):
        for i in range(4):
            for t in range(3):
                assert z[:, c * 4 + i, t].equal(x[:, c, t * 4 + i])


@pytest.mark.parametrize(("frames", "g"), [(3, 2), (4, 2), (2, 4), (3, 4)])
def test_frame_upsample_matches_a_loop(frames: int, g: int) -> None:
    """Every group's channels hold the features of each of its samples; a group inside one
    frame (hop a multiple of g) keeps one copy."""
    feats, length = 2, 24
    mel = torch.randn(5, feats * frames, dtype=torch.float64)
    up = ff.nn.FrameUpsample(feats, frames, length, g)
    hop = length // frames
    copies = 1 if hop % g == 0 else g
    assert up.channels == feats * copies
    out = up(mel).reshape(5, feats * copies, length // g)
    m = mel.reshape(5, feats, frames)
    for f in range(feats):
        for i in range(g):
            for t in range(length // g):
                sample = t * g + i
                channel = f * copies + (i if copies > 1 else 0)
                assert out[:, channel, t].equal(m[:, f, sample // hop])


@pytest.mark.parametrize("lu", [False, True])
def test_near_singular_1x1_weight_gives_no_nan(lu: bool) -> None:
    """A weight a hair from singular (float32): finite log-det, values and gradients."""
    conv = T.LUConv1x1((3, 16)) if lu else T.Conv1x1((3, 16))
    with torch.no_grad():
        if lu:
            conv.linear.log_diag.copy_(torch.tensor([0.0, -40.0, 0.0]))
        else:
            w = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0 + 1e-6], [0.0, 1.0, 1.0]])
            conv.weight.copy_(w)
    x = torch.randn(4, 3, 16)
    z, ladj = conv(x)
    assert torch.isfinite(z).all() and torch.isfinite(ladj).all()
    assert float(ladj[0].detach()) < -100  # log|det| of ~1e-6 (or e^-40) times 16 steps
    (ladj.sum() + z.square().sum()).backward()
    params = [p for p in conv.parameters() if p.grad is not None]
    assert params and all(torch.isfinite(p.grad).all() for p in params)
    back, _ = conv.inverse(z.detach().double() if not lu else z.detach())
    assert torch.isfinite(back).all()


def test_singular_plain_weight_raises_one_clear_error() -> None:
    conv = T.Conv1x1((2, 4))
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="singular"):
        conv(torch.randn(1, 2, 4))


def test_wavenet_conditioning_reaches_the_output_and_is_local() -> None:
    torch.manual_seed(0)
    net = randomize(ff.nn.WaveNet(2, 3, hidden=8, layers=3, cond_channels=2)).double()
    x = torch.randn(1, 4, 64, dtype=torch.float64)
    y = net(x)
    moved = x.clone()
    moved[:, 2:, 40] += 1.0  # conditioning at step 40
    dy = (net(moved) - y).abs().sum(1)[0]
    reach = (3 - 1) * (2**3 - 1) // 2  # kernel 3, dilations 1, 2, 4: 7 steps each side
    assert dy[40] > 0
    assert dy[: 40 - reach].max() == 0 and dy[40 + reach + 1 :].max() == 0


def test_wavenet_starts_at_zero_and_names_bad_input() -> None:
    net = ff.nn.WaveNet(2, 3, hidden=4, layers=2, cond_channels=1)
    assert net(torch.randn(2, 3, 8)).abs().max() == 0
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, T\)"):
        net(torch.randn(2, 2, 8))


def test_waveglow_vocoder_depends_on_the_mel_and_samples_per_mel() -> None:
    torch.manual_seed(0)
    flow = ff.flows.WaveGlow(
        (1, 32),
        context=2 * 4,
        frame_features=2,
        group=4,
        depth=3,
        early_every=2,
        hidden=4,
        layers=2,
    )
    randomize(flow)
    flow.eval()
    x = torch.randn(3, 1, 32)
    mel = torch.randn(3, 8)
    lp = flow.log_prob(x, mel)
    assert torch.isfinite(lp).all()
    assert not torch.allclose(lp, flow.log_prob(x, mel + 1.0))
    assert flow.sample(2, mel).shape == (2, 3, 1, 32)
    with pytest.raises(ValueError, match=r"context of shape \(\*, 8\)"):
        flow.log_prob(x)


def _harmonic(n: int = 3, length: int = 4096, rate: int = 16000) -> torch.Tensor:
    """``(n, T)`` voiced-speech-like waveforms: 12 harmonics of a gliding pitch, a loudness swell."""
    t = torch.arange(length, dtype=torch.float64) / rate
    out = []
    for k in range(n):
        f0 = 110.0 + 40.0 * k + 30.0 * t / t[-1]
        phase = 2 * torch.pi * torch.cumsum(f0, 0) / rate
        wave = sum(torch.sin(h * phase) / h for h in range(1, 13))
        out.append(0.2 * torch.sin(torch.pi * t / t[-1]) * wave)
    return torch.stack(out)


def test_mel_griffin_lim_is_as_close_as_librosas_and_deterministic() -> None:
    """The torch estimate from mel features lands within 1 dB of librosa's Griffin-Lim (the
    vocoder's baseline) on harmonic waveforms and far below silence or a wrong level."""
    pytest.importorskip("librosa")
    from flowforge.data.audio import mel_features, mel_magnitude, to_levels
    from flowforge.eval.audio import griffin_lim, log_spectral_distance

    x = _harmonic()
    feats = torch.from_numpy(mel_features(to_levels(x.numpy())[:, None], 16000))  # (3, 640)
    gl = ff.nn.MelGriffinLim(40, 16, 4096, 16000)
    y = gl(feats)
    assert y.shape == (3, 1, 4096) and torch.equal(y, gl(feats))  # no random phases
    ours = log_spectral_distance(y[:, 0].double().numpy(), x.numpy(), 16000).mean()
    ref = griffin_lim(mel_magnitude(feats), 16000, 4096).astype("float64")
    theirs = log_spectral_distance(ref, x.numpy(), 16000).mean()
    assert ours < theirs + 1.0, (ours, theirs)
    louder = log_spectral_distance(2 * y[:, 0].double().numpy(), x.numpy(), 16000).mean()
    assert louder > ours + 2.0  # a level off by 6 dB is seen
    assert gl(feats.double()).dtype == torch.float64


def test_accelerated_least_squares_fits_the_mel_closer_than_projected() -> None:
    """The mel inversion: with Nesterov's momentum the same rounds leave a smaller residual
    ``|basis s - mel|`` than the plain projected gradient (saved runs keep the plain one), and
    both stay non-negative."""
    pytest.importorskip("librosa")
    torch.manual_seed(0)
    mel = torch.rand(3, 8, 4) + 0.05  # (N, F, frames) positive mel magnitudes
    c = (torch.log(mel) / 4 + 2).flatten(1)  # the vocoder's feature units
    args = (8, 4, 1024, 8000)
    fast = ff.nn.MelGriffinLim(*args, n_fft=512, nnls_iters=20)
    plain = ff.nn.MelGriffinLim(*args, n_fft=512, nnls_iters=20, nnls="projected")
    target = torch.cat([mel, mel[..., -1:]], -1)

    def residual(gl: ff.nn.MelGriffinLim) -> float:
        s = gl.least_squares(c)
        assert s.min() >= 0
        return float((gl.basis @ s - target).norm())

    assert residual(fast) < 0.7 * residual(plain)
    with pytest.raises(ValueError, match="nnls in"):
        ff.nn.MelGriffinLim(*args, n_fft=512, nnls="lbfgs")


def test_a_refined_source_starts_as_the_least_squares_and_gets_no_likelihood_gradient() -> None:
    """``source_refine``: zero-initialised, the estimate is the plain one; with random weights
    it differs, the vocoder still inverts exactly, and its likelihood gives the refinement no
    gradient (only the spectral fit trains it)."""
    pytest.importorskip("librosa")
    torch.manual_seed(0)
    kwargs = {"context": 4 * 4, "frame_features": 4, "group": 4, "depth": 2, "hidden": 4}
    make = lambda r: ff.flows.WaveGlow(  # noqa: E731
        (1, 256), **kwargs, layers=2, source="griffin-lim", sample_rate=8000, source_iters=2,
        source_refine=r,
    )  # fmt: skip
    flow, plain = make(3), make(0)
    mel = 0.3 * torch.randn(3, 16) + 1.0
    gl = next(m for m in flow.modules() if isinstance(m, ff.nn.MelGriffinLim))
    assert gl.refiner is not None
    plain_gl = next(m for m in plain.modules() if isinstance(m, ff.nn.MelGriffinLim))
    torch.testing.assert_close(gl.magnitudes(mel), plain_gl.magnitudes(mel))
    randomize(flow)
    assert not torch.allclose(gl.magnitudes(mel), plain_gl.magnitudes(mel))
    x = 0.1 * torch.randn(3, 1, 256, dtype=torch.float64)
    flow.double()
    z, _ = flow.bijection(x, mel.double())
    back, _ = flow.bijection.inverse(z, mel.double())
    torch.testing.assert_close(back, x)
    flow.log_prob(x, mel.double()).sum().backward()
    assert all(p.grad is None for p in gl.refiner.parameters())
    assert any(p.grad is not None for p in flow.parameters())


def test_fit_source_lowers_the_spectral_loss_and_trains_only_the_refinement() -> None:
    """``flowforge train``'s fit of a vocoder's refined source, on three tiny segments."""
    pytest.importorskip("librosa")
    from flowforge.data.audio import mel_context, to_levels
    from flowforge.data.base import Dataset
    from flowforge.train.vocoder_source import fit_source

    x = _harmonic(3, 1024)
    rows = torch.from_numpy(to_levels(x.numpy())[:, None].astype("float32"))  # (3, 1, 1024)
    ds = mel_context(
        Dataset("h", "audio", (1, 1024), rows, rows, rows, levels=65536, sample_rate=16000)
    )
    torch.manual_seed(0)
    flow = ff.flows.WaveGlow(
        (1, 1024), context=40 * 4, frame_features=40, group=4, depth=2, hidden=4, layers=2,
        source="griffin-lim", sample_rate=16000, source_iters=2, source_refine=4,
    )  # fmt: skip
    gl = next(m for m in flow.modules() if isinstance(m, ff.nn.MelGriffinLim))
    c = ds.context_of("train")
    wave = ((rows[:, 0].double() - 32768) / 32768).float()
    before = float(gl.spectral_loss(c, wave).detach())
    others = {k: v.clone() for k, v in flow.state_dict().items() if "refiner" not in k}
    fitted = fit_source(flow, ds, seed=0, fit={"steps": 15, "lr": 1e-2})
    assert fitted is not None and fitted["steps"] == 15
    assert float(gl.spectral_loss(c, wave).detach()) < 0.8 * before
    for k, v in flow.state_dict().items():
        if "refiner" not in k:
            assert torch.equal(v, others[k]), k
    plain = ff.flows.WaveGlow((1, 1024), depth=2, hidden=4, layers=2, group=4)
    assert fit_source(plain, ds, seed=0) is None


def test_waveglow_centred_on_griffin_lim_models_the_residual() -> None:
    """An untrained source-centred vocoder (its couplings start at the identity) returns its
    estimate at a tiny temperature; the source needs a sample rate and a known name."""
    pytest.importorskip("librosa")
    torch.manual_seed(0)
    kwargs = {"context": 4 * 4, "frame_features": 4, "group": 4, "depth": 2, "hidden": 4}
    flow = ff.flows.WaveGlow(
        (1, 256), **kwargs, layers=2, source="griffin-lim", sample_rate=8000, source_iters=4
    )
    plain = ff.flows.WaveGlow((1, 256), **kwargs, layers=2)
    mel = 0.3 * torch.randn(3, 16) + 1.0
    shift = next(m for m in flow.modules() if isinstance(m, T.SourceShift))
    estimate = shift.estimate(mel)
    assert estimate.abs().max() > 1e-3  # not a trivial estimate
    drawn = flow.sample(1, mel, temperature=1e-6)[0]
    torch.testing.assert_close(drawn, estimate, atol=1e-5, rtol=0)
    plain_drawn = plain.sample(1, mel, temperature=1e-6)[0]
    assert plain_drawn.abs().max() < 1e-5  # without the source: silence
    with pytest.raises(ValueError, match="sample_rate"):
        ff.flows.WaveGlow((1, 256), **kwargs, source="griffin-lim")
    with pytest.raises(ValueError, match="source is one of"):
        ff.flows.WaveGlow((1, 256), **kwargs, source="world", sample_rate=8000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shape": (1, 30)}, "group >= 2 dividing the length 30"),
        ({"shape": (1, 8, 8)}, r"shape=\(C, T\)"),
        ({"shape": (1, 32), "group": 2, "depth": 9, "early_size": 1}, "fewer than 2"),
        ({"shape": (1, 32), "context": 6, "frame_features": 4}, "frame_features=4"),
    ],
)
def test_waveglow_rejects_bad_arguments_by_name(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ff.flows.WaveGlow(**kwargs)


def test_waveglow_trains_without_nan_on_quiet_and_loud_audio() -> None:
    """A few Adam steps on near-silence and on clipping-level audio: finite loss and weights."""
    torch.manual_seed(0)
    flow = ff.flows.WaveGlow((1, 64), depth=4, early_every=2, hidden=8, layers=2, lu=False)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    t = torch.linspace(0, 20, 64)
    for scale in (1e-4, 1.0):
        x = scale * torch.sin(t * torch.rand(16, 1, 1) * 3) + scale * 1e-3 * torch.randn(16, 1, 64)
        for _ in range(5):
            loss = -flow.log_prob(x).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in flow.parameters())


def test_source_envelope_scales_the_residual_with_an_exact_log_det() -> None:
    """``source_envelope``: the flow models ``(x - s) / a`` with ``a`` the estimate's local RMS
    plus the floor; the log-determinant (against autograd's Jacobian) and the inverse are
    exact, and the correction at ``z = 0`` is ``a`` times the plain flow's."""
    pytest.importorskip("librosa")
    torch.manual_seed(0)
    kwargs = {"context": 4 * 2, "frame_features": 4, "group": 4, "depth": 2, "hidden": 4}
    source = {"source": "griffin-lim", "sample_rate": 8000, "source_iters": 2, "layers": 2}
    flow, plain = (
        ff.flows.WaveGlow((1, 32), **kwargs, **source, source_envelope=e).double()
        for e in (1e-3, 0.0)
    )
    randomize(flow)
    plain.load_state_dict(flow.state_dict())
    mel = (0.3 * torch.randn(2, 8) + 1.0).double()
    shift = next(m for m in flow.modules() if isinstance(m, T.SourceShift))
    s, _, a = shift.net(mel)
    window = torch.hann_window(2 * 16 + 3, dtype=torch.float64)[1:-1]  # hop 16: 33 taps
    padded = torch.nn.functional.pad(s, (16, 16))  # zeros outside the segment
    rms = torch.stack(
        [((padded[..., t : t + 33] ** 2) * window).sum(-1) / window.sum() for t in range(32)], -1
    ).sqrt()
    torch.testing.assert_close(a, rms + 1e-3)
    x = s + 0.05 * torch.randn(2, 1, 32, dtype=torch.float64)
    z, ladj = flow.bijection(x, mel)
    for n in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v, n=n: flow.bijection(v.reshape(1, 1, 32), mel[n : n + 1])[0].reshape(-1),
            x[n].reshape(-1),
        )
        torch.testing.assert_close(ladj[n], torch.linalg.slogdet(jac)[1])
    back, back_ladj = flow.bijection.inverse(z, mel)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(back_ladj, -ladj)
    zero = torch.zeros_like(z)
    torch.testing.assert_close(
        flow.bijection.inverse_value(zero, mel) - s,
        a * (plain.bijection.inverse_value(zero, mel) - s),
    )
    with pytest.raises(ValueError, match="source_envelope"):
        ff.flows.WaveGlow((1, 32), **kwargs, source_envelope=1e-3)


def test_remove_lines_takes_a_per_channel_offset_and_keeps_the_rest() -> None:
    """A pattern repeating every ``g`` samples sits on the multiples of ``rate / g``; width 0
    removes it exactly and leaves a tone between the lines; a width reaches nearby bins."""
    from flowforge.eval.audio import remove_lines

    rate, n, g = 16000, 512, 8
    t = torch.arange(n, dtype=torch.float64)
    pattern = torch.randn(g, dtype=torch.float64).repeat(n // g)
    tone = torch.sin(2 * torch.pi * 1000.0 * t / rate)  # 1 kHz: between 0 and 2 kHz
    near = torch.sin(2 * torch.pi * (2000.0 - 2 * rate / n) * t / rate)  # two bins below 2 kHz
    out = remove_lines((tone + pattern).numpy(), rate / g, 0, rate)
    torch.testing.assert_close(torch.from_numpy(out), tone)
    kept = remove_lines(near.numpy(), rate / g, 0, rate)
    torch.testing.assert_close(torch.from_numpy(kept), near)
    assert abs(remove_lines(near.numpy(), rate / g, 3 * rate / n, rate)).max() < 1e-9


def test_match_mel_gives_the_conditioning_mel_and_keeps_a_matching_waveform() -> None:
    """The mel gain moves a waveform's 40-band mel to the conditioning's (the log-mel error
    falls by most of it in a few rounds) and leaves a waveform whose mel it already is nearly
    unchanged."""
    pytest.importorskip("librosa")
    from flowforge.data.audio import log_mel, mel_features, to_levels
    from flowforge.eval.audio import match_mel

    x = _harmonic(2, 2048).numpy()
    feats = mel_features(to_levels(x)[:, None], 16000)
    noise = 0.05 * torch.randn(2, 2048, generator=torch.Generator().manual_seed(0)).numpy()

    def err(y: np.ndarray) -> float:
        want = (feats.reshape(2, 40, -1) - 2) * 4  # the features' natural-log mel
        return float(np.abs(log_mel(y, 16000) - want).mean())

    before = err(noise)
    assert err(match_mel(noise, feats, 16000, rounds=4)) < 0.3 * before
    same = match_mel(x, feats, 16000, rounds=1)
    assert np.sqrt(((same - x) ** 2).mean()) < 0.1 * np.sqrt((x**2).mean())


def test_waveglow_without_offsets_keeps_them_at_zero() -> None:
    """``offsets=False``: the data initialisation and gradient steps leave each ActNorm's
    offset and each LU 1x1 convolution's bias at 0 (the default learns them from data with a
    mean)."""
    torch.manual_seed(0)
    x = torch.randn(8, 1, 64) + 0.3  # a mean the default's offsets take up
    for loc in (False, True):
        flow = ff.flows.WaveGlow((1, 64), depth=2, hidden=4, layers=2, group=4, offsets=loc)
        flow.train()
        for _ in range(2):  # gradient steps on every parameter that takes one
            flow.zero_grad()
            (-flow.log_prob(x).mean()).backward()
            with torch.no_grad():
                for p in flow.parameters():
                    if p.requires_grad and p.grad is not None:
                        p -= 1e-2 * p.grad
        offsets = [m.loc for m in flow.modules() if isinstance(m, T.ActNorm)]
        biases = [m.linear.bias for m in flow.modules() if isinstance(m, T.LUConv1x1)]
        assert len(offsets) == len(biases) == 2
        assert all(bool((o == 0).all()) for o in offsets) is not loc
        assert all(bool((b == 0).all()) for b in biases) is not loc


def test_centred_output_removes_the_shifts_mean_over_time_only() -> None:
    """:class:`~flowforge.nn.CentredOutput`: the last ``channels`` outputs minus their mean
    over the whole sequence (``window=0``) or a centred moving window shrinking at the ends
    (a loop here); the other outputs as the network's."""
    torch.manual_seed(0)
    wn = ff.nn.WaveNet(3, 6, hidden=8, layers=2, zero_last=False).double()
    randomize(wn)
    x = torch.randn(2, 3, 20, dtype=torch.float64)
    raw = wn(x)
    whole = ff.nn.CentredOutput(wn, channels=2)(x)
    assert torch.equal(whole[:, :4], raw[:, :4])
    assert torch.allclose(whole[:, 4:], raw[:, 4:] - raw[:, 4:].mean(-1, keepdim=True))
    moving = ff.nn.CentredOutput(wn, channels=3, window=5)(x)
    expect = raw.clone()
    for t in range(20):
        expect[:, 3:, t] -= raw[:, 3:, max(0, t - 2) : t + 3].mean(-1)
    assert torch.allclose(moving, expect)
    with pytest.raises(ValueError, match="odd window"):
        ff.nn.CentredOutput(wn, channels=2, window=4)


def test_waveglow_centre_shift_keeps_the_scale_and_log_det_and_moves_only_the_shift() -> None:
    """``centre_shift=0``: one coupling with the same random weights as without gives the same
    log-determinant and the same latent but for the shifts' mean over time, per channel; the
    round trip holds; a bad window is refused by name."""
    torch.manual_seed(0)
    kw = {"depth": 1, "hidden": 4, "layers": 2, "group": 4, "offsets": False}
    plain = ff.flows.WaveGlow((1, 32), **kw).double()
    randomize(plain)
    centred = ff.flows.WaveGlow((1, 32), centre_shift=0, **kw).double()
    state = {k.replace(".net.", ".net.net.", 1) if ".net." in k else k: v
             for k, v in plain.state_dict().items()}  # fmt: skip
    centred.load_state_dict(state)
    x = torch.randn(3, 1, 32, dtype=torch.float64)
    z0, l0 = plain.bijection(x)
    z1, l1 = centred.bijection(x)
    assert torch.allclose(l0, l1)
    (coupling,) = [m for m in plain.modules() if isinstance(m, T.ChannelCoupling)]
    seen: list[torch.Tensor] = []
    hook = coupling.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    plain.bijection(x)
    hook.remove()
    kept = coupling.sizes[0]
    with torch.no_grad():  # the plain coupling's shifts, from its input
        shift = coupling.net(seen[0][:, :kept])[:, 2:]
    d0, d1 = z0.reshape(3, 4, 8), z1.reshape(3, 4, 8)
    assert torch.allclose(d0[:, :kept], d1[:, :kept])
    assert torch.allclose(d0[:, kept:] - d1[:, kept:], shift.mean(-1, keepdim=True).expand(3, 2, 8))
    assert not torch.allclose(l0, plain.bijection(x + 0.1)[1])  # the scales are not trivial
    back = centred.bijection.inverse(z1)[0]
    assert torch.allclose(back, x)
    with pytest.raises(ValueError, match="centre_shift"):
        ff.flows.WaveGlow((1, 32), centre_shift=4, **kw)


def test_anchored_output_subtracts_the_network_at_a_zero_signal() -> None:
    """:class:`~flowforge.nn.AnchoredOutput`: the last ``channels`` outputs are ``f(h, c) -
    f(0, c)`` (two separate calls here), the others ``f(h, c)``; zero for a zero signal."""
    torch.manual_seed(0)
    wn = ff.nn.WaveNet(2, 6, hidden=8, layers=2, cond_channels=3, zero_last=False).double()
    randomize(wn)
    h, c = torch.randn(2, 2, 16, dtype=torch.float64), torch.randn(2, 3, 16, dtype=torch.float64)
    net = ff.nn.AnchoredOutput(wn, signal=2, channels=4)
    out, raw = net(torch.cat([h, c], 1)), wn(torch.cat([h, c], 1))
    at_zero = wn(torch.cat([torch.zeros_like(h), c], 1))
    assert torch.allclose(out[:, :2], raw[:, :2])
    assert torch.allclose(out[:, 2:], raw[:, 2:] - at_zero[:, 2:])
    assert net(torch.cat([torch.zeros_like(h), c], 1))[:, 2:].abs().max() == 0
    assert at_zero[:, 2:].abs().max() > 1e-3  # the conditioning alone moves the raw shifts


def test_anchored_waveglow_maps_zero_to_zero_and_keeps_the_log_det() -> None:
    """``anchored=True`` (with ``offsets=False``): a conditioned flow with random weights maps
    ``z = 0`` to exactly 0 for any mel, round-trips, and one coupling gives the log-det of the
    same weights unanchored with its latent moved by the shifts at a zero half; with offsets
    it is refused by name."""
    torch.manual_seed(0)
    kw = {"context": 4 * 8, "frame_features": 4, "hidden": 4, "layers": 2, "group": 4}
    kw["offsets"] = False
    deep = ff.flows.WaveGlow((1, 64), depth=4, early_every=2, anchored=True, **kw).double()
    randomize(deep)
    with torch.no_grad():  # the fixed offsets (ActNorm loc, LU bias) back at their 0
        for p in deep.parameters():
            p.mul_(p.requires_grad)
    c = torch.randn(3, 32, dtype=torch.float64)
    x = torch.randn(3, 1, 64, dtype=torch.float64)
    z, _ = deep.bijection(x, c)
    assert torch.allclose(deep.bijection.inverse(z, c)[0], x)
    assert deep.bijection.inverse(torch.zeros_like(z), c)[0].abs().max() == 0
    plain = ff.flows.WaveGlow((1, 64), depth=1, **kw).double()
    randomize(plain)
    one = ff.flows.WaveGlow((1, 64), depth=1, anchored=True, **kw).double()
    state = {k.replace(".net.", ".net.net.", 1) if ".net." in k else k: v
             for k, v in plain.state_dict().items()}  # fmt: skip
    one.load_state_dict(state)
    (coupling,) = [m for m in plain.modules() if isinstance(m, T.ChannelCoupling)]
    seen: list = []
    hook = coupling.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args, kwargs)), with_kwargs=True
    )
    z0, l0 = plain.bijection(x, c)
    hook.remove()
    z1, l1 = one.bijection(x, c)
    assert torch.allclose(l0, l1)
    (h, *rest), kwargs = seen[0]
    flat, ctx, _ = coupling._flat(h, rest[0] if rest else kwargs["context"])
    kept = coupling.sizes[0]
    with torch.no_grad():  # the plain coupling's shifts with its conditioning half zeroed
        shift0 = coupling._params(torch.zeros_like(flat[:, :kept]), ctx, 2)[..., 1]
    d0, d1 = z0.reshape(3, 4, 16), z1.reshape(3, 4, 16)
    assert torch.allclose(d1[:, :kept], d0[:, :kept])
    assert torch.allclose(d1[:, kept:], d0[:, kept:] - shift0)
    assert shift0.abs().max() > 1e-3
    with pytest.raises(ValueError, match="offsets=False"):
        ff.flows.WaveGlow((1, 64), anchored=True)
