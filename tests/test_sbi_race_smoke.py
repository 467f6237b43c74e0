"""benchmarks/sbi_race.py runs end to end at a tiny budget, so it cannot rot (flowforge
always; sbi's NPE when the ``sbi`` package is installed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repo_scripts import load_script

pytest.importorskip("sklearn", reason="C2ST needs scikit-learn (the cli extra)")


def _tiny(tmp_path: Path, methods: list[str]) -> list[str]:
    return [
        "--tasks", "two_moons",
        "--budgets", "200",
        "--methods", *methods,
        "--observations", "1",
        "--c2st-samples", "100",
        "--c2st-max-iter", "20",
        "--ff-max-steps", "10",
        "--sbi-max-epochs", "1",
        "--cache-dir", str(tmp_path / "cache"),
        "--jsonl", str(tmp_path / "rows.jsonl"),
        "--out", str(tmp_path / "sbi.md"),
    ]  # fmt: skip


def _check(tmp_path: Path, rows: list[dict], methods: list[str]) -> None:
    assert [r["method"] for r in rows] == methods
    for r in rows:
        assert r["status"] == "ok" and 0.0 <= r["c2st_mean"] <= 1.0
        assert r["fit_cpu_s"] > 0 and r["sample_cpu_s"] > 0 and r["c2st_cpu_s"] > 0
        assert r["outside_prior"] == 0  # both libraries keep two moons' box
    saved = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert saved == rows
    table = (tmp_path / "sbi.md").read_text()
    assert "| two_moons | 200 | ff_npe |" in table
    assert list((tmp_path / "cache").glob("two_moons-*-n100-seed0.npy"))


def test_flowforge_alone(tmp_path: Path) -> None:
    race = load_script("benchmarks/sbi_race.py", "flowforge_bench_sbi_race")
    rows = race.main([*_tiny(tmp_path, ["ff_npe"]), "--c2st-draws", "2"])
    _check(tmp_path, rows, ["ff_npe"])
    (draws,) = rows[0]["c2st_draws"]  # one observation, two draws of samples, averaged
    assert len(draws) == 2 and draws[0] != draws[1]
    assert rows[0]["c2st"] == [round(sum(draws) / 2, 4)]
    again = race.main(_tiny(tmp_path, ["ff_npe"]))  # resumed: nothing recomputed
    assert again == rows


def test_a_piece_over_its_cpu_bound_ends_the_row_instead_of_hanging(tmp_path: Path) -> None:
    race = load_script("benchmarks/sbi_race.py", "flowforge_bench_sbi_race")
    args = _tiny(tmp_path, ["ff_npe"])
    args[args.index("--ff-max-steps") + 1] = "100000"  # would train for minutes
    (row,) = race.main([*args, "--fit-cpu-limit", "0.5"])
    assert row["status"] == "fit over 0.5 CPU s" and row["c2st"] == []
    assert 0.4 <= row["fit_cpu_s"] < 5.0  # the timer and process_time tick differently


# sbi warns that one epoch did not converge, nflows that torch.triangular_solve is deprecated
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_against_sbi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sbi", reason="the peer: pip install sbi (the bench extra)")
    monkeypatch.chdir(tmp_path)  # sbi writes its tensorboard logs to ./sbi-logs
    race = load_script("benchmarks/sbi_race.py", "flowforge_bench_sbi_race")
    rows = race.main(_tiny(tmp_path, ["ff_npe", "sbi_npe"]))
    _check(tmp_path, rows, ["ff_npe", "sbi_npe"])
    assert "| two_moons | 200 | sbi_npe |" in (tmp_path / "sbi.md").read_text()
