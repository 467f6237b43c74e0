"""benchmarks/vocoder_decoding.py: its cached source changes no number, only the time."""

from __future__ import annotations

import pytest
import torch

import flowforge as ff
from repo_scripts import load_script


def test_cached_source_gives_the_same_score_and_refreshes_on_a_new_mel() -> None:
    """The benchmark computes a vocoder's source once per mel: the score step and log-density
    with the cache equal those without, and another mel gets its own estimate."""
    pytest.importorskip("librosa")
    bench = load_script("benchmarks/vocoder_decoding.py", "flowforge_bench_vocoder_decoding")
    torch.manual_seed(0)
    flow = ff.flows.WaveGlow(
        (1, 256), context=4 * 4, frame_features=4, group=4, depth=2, hidden=4, layers=2,
        source="griffin-lim", sample_rate=8000, source_iters=4,
    )  # fmt: skip
    for p in flow.parameters():  # couplings away from the identity, so the score is not trivial
        p.data.add_(0.05 * torch.randn_like(p))
    mel, other = 0.3 * torch.randn(3, 16) + 1.0, 0.3 * torch.randn(3, 16) + 1.0
    u = 0.5 + 0.01 * torch.randn(3, 1, 256)
    want = flow.denoise(u, 1e-2, mel), flow.log_prob(u, other)
    bench.memo(flow, mel)
    torch.testing.assert_close(flow.denoise(u, 1e-2, mel), want[0])
    torch.testing.assert_close(flow.log_prob(u, other), want[1])  # a new mel: not the cached one
    bench.memo(flow, other)  # a second memo replaces the first, never wraps it
    shift = next(m for m in flow.modules() if isinstance(m, ff.transforms.SourceShift))
    assert not isinstance(shift.net.net, bench._Memo)
    torch.testing.assert_close(flow.log_prob(u, other), want[1])
