"""torch.compile sees each preset's log_prob as one graph, and a compiled step trains.

Guards against graph breaks creeping into the density path of NICE, RealNVP, MAF and NSF.
"""

from __future__ import annotations

import copy

import pytest
import torch

import flowforge as ff

pytestmark = [
    pytest.mark.slow,
    # Dynamo itself reads .grad of non-leaf tensors while it inspects the frame.
    pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf"),
    # Inductor's own imports touch deprecated torch.jit APIs.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

PRESETS = {
    "NICE": lambda: ff.flows.NICE(features=4, transforms=2, hidden=(8,)),
    "RealNVP": lambda: ff.flows.RealNVP(features=4, transforms=2, hidden=(8,)),
    "MAF": lambda: ff.flows.MAF(features=4, transforms=2, hidden=(8,)),
    "NSF": lambda: ff.flows.NSF(features=4, transforms=2, bins=4, hidden=(8,)),
}


def _randomize(flow: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in flow.parameters():
            p.normal_(0.0, 0.3)


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_log_prob_is_one_graph(name: str, training: bool) -> None:
    flow = PRESETS[name]().float().train(training)
    _randomize(flow)
    x = torch.randn(16, 4)
    # One eager batch first: ActNorm (NICE) initialises from the first training batch, a
    # one-off data-dependent step; afterwards its check is a Python flag, not a tensor read.
    flow.log_prob(x)
    explanation = torch._dynamo.explain(flow.log_prob)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", list(PRESETS))
def test_compiled_training_step_matches_eager(name: str) -> None:
    flow = PRESETS[name]().float()
    _randomize(flow)
    x = torch.randn(32, 4)

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return -flow.log_prob(batch).mean()

    eager = loss_fn(x)
    eager.backward()
    grads = [p.grad.clone() for p in flow.parameters() if p.grad is not None]
    flow.zero_grad(set_to_none=True)

    compiled = torch.compile(loss_fn, fullgraph=True)
    loss = compiled(x)
    loss.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-5)
    for p, g in zip(flow.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)

    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    opt.step()
    assert torch.isfinite(compiled(x))


@pytest.mark.parametrize("name", list(PRESETS))
def test_compiling_before_the_first_batch_gives_one_graph(name: str) -> None:
    # ActNorm (NICE) initialises on the first training batch; when that batch already runs
    # compiled, the step must still be one graph (a break there would split it for good).
    # Random parameters (ActNorm still uninitialised): at init MAF, RealNVP and NSF are the
    # identity, and compiled would equal eager whatever the compiled graph computes.
    flow = PRESETS[name]().float().train()
    _randomize(flow)
    reference = copy.deepcopy(flow)
    explained = copy.deepcopy(flow)
    x = torch.randn(16, 4)
    explanation = torch._dynamo.explain(explained.log_prob)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(lambda b: -flow.log_prob(b).mean(), fullgraph=True)
    first = compiled(x)
    first.backward()
    expected = -reference.log_prob(x).mean()
    expected.backward()
    # Not the standard normal's density: the flow does something to compare.
    standard = -ff.distributions.StandardNormal(4).log_prob(x).mean()
    assert (expected - standard).abs() > 1e-2
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    for (pname, p), ref_p in zip(flow.named_parameters(), reference.parameters()):
        assert p.grad is not None and ref_p.grad is not None, pname
        torch.testing.assert_close(p.grad, ref_p.grad, rtol=1e-4, atol=1e-5, msg=pname)
    acts = [m for m in flow.modules() if isinstance(m, ff.transforms.ActNorm)]
    ref_acts = [m for m in reference.modules() if isinstance(m, ff.transforms.ActNorm)]
    assert len(acts) == len(ref_acts) == (1 if name == "NICE" else 0)
    for act, ref in zip(acts, ref_acts):
        # The data initialisation ran inside the compiled call, as in eager ...
        assert act.initialized.item() == 1.0
        torch.testing.assert_close(act.loc.detach(), ref.loc.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(act.log_scale.detach(), ref.log_scale.detach())
        # ... and only once: the next batch leaves the parameters alone.
        loc = act.loc.detach().clone()
        compiled(x + 5.0)
        torch.testing.assert_close(act.loc.detach(), loc)


# Row chunks: a conditioner of widest layer W runs in chunks of ROW_BUDGET // W rows (4,096
# at W = 64) when a batch has more than two chunks' rows; compiled, in at most
# COMPILED_CHUNKS chunks. One layer each keeps the unrolled graph (a copy per chunk) small.
CHUNKED = {
    "MAF": lambda: ff.flows.MAF(features=4, context=3, transforms=1, hidden=(64,)),
    "NSF": lambda: ff.flows.NSF(features=4, context=3, transforms=1, bins=4, hidden=(64,)),
}


@pytest.mark.parametrize("name", list(CHUNKED))
def test_compiled_chunked_inference_is_one_graph_and_exact(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Compiled inference splits a large batch into row chunks (the loop unrolled into the
    # graph). A counter on the chunking function records the rows of each chunk that runs,
    # so the test sees that the chunked path is taken; the reference is the same flow
    # evaluated eagerly on slices small enough to run whole, so a chunk lost, reordered or
    # given another chunk's context shows.
    from flowforge.transforms import rows as rows_module

    chunk_rows: list[int] = []
    by_row_chunks = rows_module.by_row_chunks

    def counting(fn, x, context, width):  # type: ignore[no-untyped-def]
        def counted(xc, cc):  # type: ignore[no-untyped-def]
            chunk_rows.append(xc.shape[0])
            return fn(xc, cc)

        return by_row_chunks(counted, x, context, width)

    monkeypatch.setattr(rows_module, "by_row_chunks", counting)
    flow = CHUNKED[name]().double()
    _randomize(flow)
    chunk = rows_module.ROW_BUDGET // 64
    assert chunk == 4096
    n = 3 * chunk - 100  # three chunks, the last one shorter
    x = torch.randn(n, 4, dtype=torch.float64)
    c = torch.randn(n, 3, dtype=torch.float64)
    with torch.no_grad():
        sliced = [flow.log_prob(xs, cs) for xs, cs in zip(x.split(1000), c.split(1000))]
        reference = torch.cat(sliced)
        assert all(r <= 1000 for r in chunk_rows)  # the reference ran unchunked
        chunk_rows.clear()
        compiled = torch.compile(flow.log_prob, fullgraph=True)  # fullgraph: one graph
        out = compiled(x, c)
    assert chunk_rows == [chunk, chunk, n - 2 * chunk], chunk_rows
    assert out.shape == (n,)
    torch.testing.assert_close(out, reference, rtol=1e-10, atol=1e-10)
