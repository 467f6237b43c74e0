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
    flow = PRESETS[name]().float().train()
    reference = copy.deepcopy(flow)
    explained = copy.deepcopy(flow)
    x = torch.randn(16, 4)
    explanation = torch._dynamo.explain(explained.log_prob)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
    compiled = torch.compile(lambda b: -flow.log_prob(b).mean(), fullgraph=True)
    first = compiled(x)
    first.backward()
    torch.testing.assert_close(first, -reference.log_prob(x).mean(), rtol=1e-5, atol=1e-5)
    acts = [m for m in flow.modules() if isinstance(m, ff.transforms.ActNorm)]
    ref_acts = [m for m in reference.modules() if isinstance(m, ff.transforms.ActNorm)]
    for act, ref in zip(acts, ref_acts):
        # The data initialisation ran inside the compiled call, as in eager ...
        assert act.initialized.item() == 1.0
        torch.testing.assert_close(act.loc.detach(), ref.loc.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(act.log_scale.detach(), ref.log_scale.detach())
        # ... and only once: the next batch leaves the parameters alone.
        loc = act.loc.detach().clone()
        compiled(x + 5.0)
        torch.testing.assert_close(act.loc.detach(), loc)


@pytest.mark.parametrize("name", ["MAF", "NSF"])
def test_compiled_chunked_inference_is_one_graph_and_exact(name: str) -> None:
    # Large enough that compiled inference runs in row chunks (and that eager does too).
    flow = PRESETS[name]().float()
    _randomize(flow)
    x = torch.randn(4096, 4)
    with torch.no_grad():
        eager = flow.log_prob(x)
        explanation = torch._dynamo.explain(flow.log_prob)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
        compiled = torch.compile(flow.log_prob, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
