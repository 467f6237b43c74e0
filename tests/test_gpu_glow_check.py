"""The GPU check script runs end to end at a CPU size (``--tiny``)."""

from __future__ import annotations

import math

from repo_scripts import load_script


def test_gpu_glow_check_runs_both_precisions_tiny(capsys) -> None:  # type: ignore[no-untyped-def]
    module = load_script("benchmarks/gpu_glow_check.py", "gpu_glow_check")
    rows = module.main(["--tiny", "--device", "cpu"])
    assert [r["precision"] for r in rows] == ["float32", "bf16"]
    for r in rows:
        assert r["step_ms"] > 0 and r["peak_mib"] > 0
        assert r["levels"] == 3 and r["shape"] == [3, 8, 8]
        # random 8-bit images under an untrained flow: near or above 8 bits/dim, finite
        assert math.isfinite(r["first_bpd"]) and 5 < r["first_bpd"] < 12
    # bf16 autocast really ran (its loss differs from float32's at the same weights) and is close
    assert 0 < rows[0]["bf16_loss_rel_diff"] < 0.1
    out = capsys.readouterr().out
    assert "| bf16 |" in out and "bf16 / float32 step time" in out
