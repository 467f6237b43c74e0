"""TarFlow: the causal transformer, the transformer autoregressive bijection and the preset."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from flowforge.nn.causal_transformer import CausalConv, CausalTransformer, KVCache, RelativeBias
from flowforge.transforms.transformer_autoregressive import (
    TransformerAutoregressive,
    guided,
    token_layout,
)
from registry import randomize

DT = torch.float64


def _net(size: int, tokens: int, context: int = 0, layers: int = 2) -> CausalTransformer:
    net = CausalTransformer(
        size, 2 * size, tokens, width=16, heads=4, layers=layers, context=context
    )
    return randomize(net, 0.3).to(DT)  # type: ignore[return-value]


def _layer(shape: tuple[int, ...], patch: int, context: int = 0, reverse: bool = False):
    tokens, size = token_layout(shape, patch)
    return TransformerAutoregressive(shape, _net(size, tokens, context), patch, reverse).eval()


def test_output_t_depends_on_tokens_before_t_only() -> None:
    torch.manual_seed(0)
    net = _net(3, 6)
    x = torch.randn(2, 6, 3, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda v: net(v), x)  # (2, 6, 6, 2, 6, 3)
    dep = jac[0, :, :, 0].abs().sum((1, 3)) > 0  # dep[t, s]: output t depends on token s
    assert torch.equal(dep, torch.ones(6, 6, dtype=torch.bool).tril(-1))


@pytest.mark.parametrize("context", [0, 2])
def test_cached_steps_equal_the_full_pass(context: int) -> None:
    torch.manual_seed(1)
    net = _net(3, 5, context)
    x = torch.randn(4, 5, 3, dtype=DT)
    c = torch.randn(4, context, dtype=DT) if context else None
    for temp, grad in ((1.0, True), (2.5, True), (1.0, False), (2.5, False)):
        full = net(x, c, temp)
        with torch.set_grad_enabled(grad):  # concatenated / preallocated caches
            cache = KVCache(4, 5)
            steps = [net.step(None, cache, c, temp)]
            steps += [net.step(x[:, t - 1], cache, c, temp) for t in range(1, 5)]
        assert cache.keys[0].shape[2] == 5 and cache.length == 5
        torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-12)
    assert not torch.allclose(net(x, c, 2.5), net(x, c))  # the temperature acts


@pytest.mark.parametrize("grid", [(2, 3), (1, 6)])
def test_local_embedding_reads_earlier_grid_neighbours_and_caches(grid) -> None:
    torch.manual_seed(9)
    net = CausalTransformer(3, 6, 6, width=16, heads=4, layers=1, grid=grid)
    net = randomize(net, 0.3).to(DT)  # type: ignore[assignment]
    x = torch.randn(2, 6, 3, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda v: net(v), x)
    dep = jac[0, :, :, 0].abs().sum((1, 3)) > 0  # output t reads tokens < t only
    assert torch.equal(dep, torch.ones(6, 6, dtype=torch.bool).tril(-1))
    assert net.local is not None
    emb = torch.autograd.functional.jacobian(net.local, x)[0, :, :, 0].abs().sum((1, 3)) > 0
    cols = grid[1]  # token (r, c) embeds (r-1, c-1..c+1) and (r, c-1..c): its neighbours
    want = torch.zeros(6, 6, dtype=torch.bool)
    for t in range(6):
        r, c = divmod(t, cols)
        for s in range(6):
            rs, cs = divmod(s, cols)
            want[t, s] = abs(cs - c) <= 1 and (rs == r - 1 or (rs == r and cs <= c))
    assert torch.equal(emb, want)
    full = net(x)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            cache = KVCache(2, 6)
            steps = [net.step(None, cache)] + [net.step(x[:, t - 1], cache) for t in range(1, 6)]
        torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="grid of 6 tokens"):
        CausalTransformer(3, 6, 6, width=16, heads=4, layers=1, grid=(2, 2))
    for kwargs, want_grid in (({"shape": (1, 4, 6)}, (2, 3)), ({"features": 6}, (1, 3))):
        flow = ff.flows.TarFlow(**kwargs, blocks=2, width=8, heads=2, local=True)  # type: ignore[arg-type]
        grids = {(m.rows, m.cols) for m in flow.modules() if isinstance(m, CausalConv)}
        assert grids == {want_grid}  # the patches' rows and columns


@pytest.mark.parametrize("grid", [(2, 3), (1, 6)])
def test_relative_bias_is_per_offset_causal_and_caches(grid) -> None:
    torch.manual_seed(10)
    net = CausalTransformer(3, 6, 6, width=16, heads=4, layers=2, relative=grid)
    net = randomize(net, 0.3).to(DT)  # type: ignore[assignment]
    assert net.relative is not None
    rel = net.relative[0]
    assert isinstance(rel, RelativeBias)
    bias, table = rel(), rel.table  # (H, T, T): query i reads key j, which holds token j - 1
    cols = grid[1]
    for i in range(6):
        for j in range(6):
            if j > i:
                assert bool((bias[:, i, j] == float("-inf")).all())
            elif j == 0:  # the start token's own entry
                torch.testing.assert_close(bias[:, i, 0], table[:, -1], rtol=0, atol=0)
            else:  # the offset of token i from token j - 1 on the grid
                (r, c), (rs, cs) = divmod(i, cols), divmod(j - 1, cols)
                k = (r - rs + grid[0] - 1) * (2 * cols - 1) + c - cs + cols - 1
                torch.testing.assert_close(bias[:, i, j], table[:, k], rtol=0, atol=0)
    x = torch.randn(2, 6, 3, dtype=DT)
    jac = torch.autograd.functional.jacobian(lambda v: net(v), x)
    dep = jac[0, :, :, 0].abs().sum((1, 3)) > 0  # output t reads tokens < t only
    assert torch.equal(dep, torch.ones(6, 6, dtype=torch.bool).tril(-1))
    for temp in (1.0, 2.5):
        full = net(x, None, temp)
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                cache = KVCache(2, 6)
                steps = [net.step(None, cache, None, temp)]
                steps += [net.step(x[:, t - 1], cache, None, temp) for t in range(1, 6)]
            torch.testing.assert_close(torch.stack(steps, 1), full, rtol=0, atol=1e-12)
    before = net(x)
    with torch.no_grad():
        rel.table.zero_()  # the bias acts
    assert not torch.allclose(net(x), before)
    with pytest.raises(ValueError, match="relative grid of 6 tokens"):
        CausalTransformer(3, 6, 6, width=16, heads=4, layers=1, relative=(2, 2))
    for kwargs, want_grid in (({"shape": (1, 4, 6)}, (2, 3)), ({"features": 6}, (1, 3))):
        flow = ff.flows.TarFlow(**kwargs, blocks=2, width=8, heads=2, relative=True)  # type: ignore[arg-type]
        sizes = {m.index.shape for m in flow.modules() if isinstance(m, RelativeBias)}
        assert sizes == {torch.Size([want_grid[0] * want_grid[1]] * 2)}
        tables = {m.table.shape[1] for m in flow.modules() if isinstance(m, RelativeBias)}
        assert tables == {(2 * want_grid[0] - 1) * (2 * want_grid[1] - 1) + 1}


@pytest.mark.parametrize(
    ("shape", "patch", "context"), [((2, 4, 6), 2, 3), ((1, 4, 4), 1, 0), ((6,), 3, 2)]
)
@pytest.mark.parametrize("reverse", [False, True])
def test_cached_and_uncached_inverses_agree(shape, patch, context, reverse) -> None:
    torch.manual_seed(2)
    b = _layer(shape, patch, context, reverse)
    z = torch.randn(2, 3, *shape, dtype=DT)
    c = torch.randn(2, 3, context, dtype=DT) if context else None
    x, ladj = b.inverse(z, c)
    x_ref, ladj_ref = b.inverse_uncached(z, c)
    torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(ladj, ladj_ref, rtol=0, atol=1e-12)
    z2, fladj = b(x, c)
    torch.testing.assert_close(z2, z, rtol=0, atol=1e-10)
    torch.testing.assert_close(fladj, -ladj, rtol=0, atol=1e-10)
    if context:
        with guided(b, 1.5, attention_temperature=2.0):
            g, _ = b.inverse(z, c)
            g_ref, _ = b.inverse_uncached(z, c)
        torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)
        assert not torch.allclose(g, x)


def test_patches_are_the_image_blocks_in_row_major_order() -> None:
    b = _layer((2, 4, 4), 2)
    x = torch.arange(32, dtype=DT).reshape(1, 2, 4, 4)
    tokens = b._tokens(x)  # (1, 4, 8)
    assert tokens.shape == (1, 4, 8)
    # token 1 is the top-right 2x2 patch of both channels
    assert tokens[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]
    torch.testing.assert_close(b._untokens(tokens), x)
    rev = _layer((2, 4, 4), 2, reverse=True)
    assert rev._tokens(x)[0, 0].tolist() == tokens[0, 3].tolist()
    torch.testing.assert_close(rev._untokens(rev._tokens(x)), x)


def test_shifted_patches_couple_the_values_of_one_unshifted_patch() -> None:
    """A layer never conditions a value on another of its own token; with ``shift`` 1 the
    patches straddle the unshifted ones, so pixel (0, 0) is moved given pixel (0, 1), its
    neighbour in the unshifted first patch. The preset shifts its reversed layers only."""
    tokens, size = token_layout((1, 4, 4), 2)
    net = _net(size, tokens)
    x = torch.randn(16, dtype=DT)

    def jacobian(shift: int) -> torch.Tensor:
        b = TransformerAutoregressive((1, 4, 4), net, 2, True, shift=shift).eval()
        return torch.autograd.functional.jacobian(lambda v: b(v.reshape(1, 1, 4, 4))[0], x)

    plain, shifted = jacobian(0).reshape(16, 16), jacobian(1).reshape(16, 16)
    assert plain[0, 1] == 0 and shifted[0, 1] != 0  # d z(0, 0) / d x(0, 1)
    flow = ff.flows.TarFlow(shape=(1, 4, 4), blocks=3, width=8, heads=2, shifted=True)
    assert [b.shift for b in flow.bijection.bijections] == [0, 1, 0]  # type: ignore[union-attr]


def test_the_first_token_depends_on_the_context_only() -> None:
    torch.manual_seed(3)
    b = _layer((4,), 1, context=2)
    x = torch.randn(3, 4, dtype=DT)
    c = torch.randn(3, 2, dtype=DT)
    z = b(x, c)[0]
    x2 = x.clone()
    x2[:, 1:] += 1.0
    torch.testing.assert_close(b(x2, c)[0][:, 0], z[:, 0])
    assert not torch.allclose(b(x, c + 1)[0][:, 0], z[:, 0])


def test_bad_networks_and_patches_are_named() -> None:
    with pytest.raises(ValueError, match=r"divisible by patch 3"):
        token_layout((1, 8, 8), 3)
    with pytest.raises(ValueError, match=r"expected a CausalTransformer of 16 tokens"):
        TransformerAutoregressive((1, 8, 8), CausalTransformer(4, 8, 4), patch=2)
    with pytest.raises(ValueError, match=r"^TarFlow: expected one of shape"):
        ff.flows.TarFlow()
    with pytest.raises(ValueError, match=r"^TarFlow: expected the height and width divisible"):
        ff.flows.TarFlow(shape=(1, 8, 8), patch=3)
    with pytest.raises(ValueError, match=r"width divisible by heads"):
        ff.flows.TarFlow(features=4, width=10, heads=4)
    flow = ff.flows.TarFlow(features=4, blocks=1, width=8, heads=2)
    with pytest.raises(ValueError, match=r"attention temperature != 1"):
        flow.sample(2, guidance=1.0)


def _tarflow(context: int = 0, **kw) -> ff.flows.TarFlow:
    flow = ff.flows.TarFlow(shape=(1, 4, 4), context=context, blocks=2, width=8, heads=2, **kw)
    return randomize(flow, 0.2).to(DT).eval()  # type: ignore[return-value]


def test_preset_density_and_samples_agree_in_float64() -> None:
    torch.manual_seed(4)
    flow = _tarflow(context=3)
    c = torch.randn(2, 3, dtype=DT)
    x, lp = flow.sample_and_log_prob(5, c)
    assert x.shape == (5, 2, 1, 4, 4)
    torch.testing.assert_close(flow.log_prob(x, c), lp, rtol=0, atol=1e-9)
    torch.manual_seed(5)
    a = flow.sample(3, c, temperature=0.7)
    torch.manual_seed(5)
    torch.testing.assert_close(a, ff.Flow.sample(flow, 3, c, temperature=0.7))


def test_guidance_extrapolates_from_the_null_context() -> None:
    torch.manual_seed(6)
    flow = _tarflow(context=3)
    c = torch.eye(3, dtype=DT)
    torch.manual_seed(7)
    plain = flow.sample(2, c)
    torch.manual_seed(7)
    guided_x = flow.sample(2, c, guidance=2.0)
    assert not torch.allclose(plain, guided_x)
    null = torch.zeros(3, 3, dtype=DT)  # the null context guided by itself: no change
    torch.manual_seed(7)
    a = flow.sample(2, null)
    torch.manual_seed(7)
    torch.testing.assert_close(flow.sample(2, null, guidance=2.0), a, rtol=0, atol=1e-12)


def test_label_dropout_zeroes_contexts_in_training_only(monkeypatch) -> None:
    flow = _tarflow(context=3, label_dropout=0.5)
    seen = []
    original = ff.Flow.log_prob
    monkeypatch.setattr(
        ff.Flow, "log_prob", lambda self, x, c=None: seen.append(c) or original(self, x, c)
    )
    x, c = torch.randn(400, 1, 4, 4, dtype=DT), torch.ones(400, 3, dtype=DT)
    flow.train().log_prob(x, c)
    dropped = (seen[-1] == 0).all(-1).double().mean().item()
    assert 0.4 < dropped < 0.6 and ((seen[-1] == 0) | (seen[-1] == 1)).all()
    flow.eval().log_prob(x, c)
    assert torch.equal(seen[-1], c)


def test_dropout_acts_in_training_only() -> None:
    """With ``dropout``, a training-mode density is random and an eval-mode one is that of the
    same weights without dropout; a probability outside [0, 1) is refused."""
    torch.manual_seed(8)
    flow = _tarflow(dropout=0.3)
    plain = _tarflow(dropout=0.0)
    plain.load_state_dict(flow.state_dict())
    x = torch.randn(6, 1, 4, 4, dtype=DT)
    flow.train()
    assert not torch.allclose(flow.log_prob(x), flow.log_prob(x))
    flow.eval()
    torch.testing.assert_close(flow.log_prob(x), plain.eval().log_prob(x), rtol=0, atol=0)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"dropout in \[0, 1\)"):
            ff.flows.TarFlow(shape=(1, 4, 4), dropout=bad)


def test_token_noise_perturbs_what_the_conditioner_reads_in_training_only() -> None:
    """With ``token_noise``, a training-mode density is random, the tokens a network reads carry
    noise of that scale, and an eval-mode density is that of the same weights without noise; a
    negative or non-finite scale is refused."""
    torch.manual_seed(9)
    flow = _tarflow(token_noise=0.5)
    plain = _tarflow()
    plain.load_state_dict(flow.state_dict())
    x = torch.randn(6, 1, 4, 4, dtype=DT)
    flow.train()
    assert not torch.allclose(flow.log_prob(x), flow.log_prob(x))
    layer = flow.bijection.bijections[0]  # type: ignore[union-attr,index]
    net, seen = layer.net, []
    net.embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    torch.manual_seed(0)
    layer(x)
    noise = seen[0] - layer._tokens(x)[:, :-1]
    assert 0.3 < noise.std().item() < 0.7  # the scale asked for, on the inputs it reads
    flow.eval()
    torch.testing.assert_close(flow.log_prob(x), plain.eval().log_prob(x), rtol=0, atol=0)
    for bad in (-0.1, float("nan")):
        with pytest.raises(ValueError, match="token_noise >= 0"):
            ff.flows.TarFlow(shape=(1, 4, 4), token_noise=bad)


def test_denoise_is_a_step_along_the_score() -> None:
    torch.manual_seed(8)
    flow = _tarflow()
    x = torch.randn(3, 1, 4, 4, dtype=DT)
    leaf = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(flow.log_prob(leaf).sum(), leaf)
    torch.testing.assert_close(flow.denoise(x, 0.1), x + 0.01 * score)
    torch.testing.assert_close(flow.denoise(x, 0.0), x)
    with pytest.raises(ValueError, match="sigma >= 0"):
        flow.denoise(x, -1.0)
    torch.manual_seed(9)
    a = flow.sample(2, denoise=0.1)
    torch.manual_seed(9)
    torch.testing.assert_close(a, flow.denoise(flow.sample(2), 0.1))


def test_attention_temperature_guidance_of_an_unconditional_flow() -> None:
    torch.manual_seed(10)
    flow = _tarflow()
    torch.manual_seed(11)
    plain = flow.sample(2)
    torch.manual_seed(11)
    g = flow.sample(2, guidance=1.0, attention_temperature=3.0)
    assert g.shape == plain.shape and torch.isfinite(g).all() and not torch.allclose(g, plain)
    assert all(
        m.guidance is None for m in flow.modules() if isinstance(m, TransformerAutoregressive)
    )


def test_extreme_inputs_stay_finite() -> None:
    flow = _tarflow(context=3)
    x = torch.tensor([1e6, -1e6, 0.0, 3e3] * 4, dtype=DT).reshape(1, 1, 4, 4)
    c = torch.tensor([[1e4, 0.0, -1e4]], dtype=DT)
    assert torch.isfinite(flow.log_prob(x, c)).all()
    assert torch.isfinite(flow.sample(2, c, temperature=5.0)).all()
