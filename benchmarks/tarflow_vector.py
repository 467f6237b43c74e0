"""TarFlow's vector mode against MAF and NSF on small real tables, from the command line.

Trains ``flowforge train --data TABLE --flow FLOW`` with every default (the table's sized
defaults, the Gaussian start and its defensive mixture) for each table, seed (each seed is
another split) and flow, in this process on one thread, and prints per table and flow the mean
test NLL (nats, lower is better) with its standard deviation over the splits, and the mean wall
and CPU seconds of a run; in brackets the NLL of the run's flow alone (without the mixture,
which falls back on the Gaussian start where the flow does not beat it on the validation
rows). TarFlow on a table is its vector mode: each column a token, 4 blocks
of 2 transformer layers of width 32. A flow given as ``PRESET:JSON`` gets those flow options
(``--flow-options``) and is its own row.

Tables: ``breast_cancer`` and ``wine`` (scikit-learn, built in) and ``digits64``: the 64 pixels
of scikit-learn's digits as a table, each pixel's level ``v`` dequantized once, ``(v + U) / 17``
(``U`` uniform, seeded), written to a CSV here (a continuous table: the integer levels themselves
would let a density grow without bound on them).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/tarflow_vector.py --seeds 0 1 2 --out vector.jsonl
    python benchmarks/tarflow_vector.py --flows tarflow 'tarflow:{"dropout": 0.1}' --steps 100
    python benchmarks/tarflow_vector.py --table vector.jsonl     # the Markdown table again
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FLOWS = ("maf", "nsf", "tarflow")
TABLES = ("breast_cancer", "wine", "digits64")


def digits_table(folder: Path, seed: int = 0) -> Path:
    """``digits64.csv`` in ``folder``: scikit-learn's digits, dequantized once, 64 columns."""
    from sklearn.datasets import load_digits

    v = load_digits().data.astype(np.float64)  # (1797, 64) levels 0..16
    u = (v + np.random.default_rng(seed).random(v.shape)) / 17
    path = folder / "digits64.csv"
    head = ",".join(f"p{i}" for i in range(64))
    np.savetxt(path, u, delimiter=",", header=head, comments="", fmt="%.8f")
    return path


def run(
    tables: list[str], seeds: list[int], flows: list[str], out: Path, steps: int | None
) -> None:
    import torch

    from flowforge.train.config import TrainConfig
    from flowforge.train.run import start_run

    torch.set_num_threads(1)
    with out.open("a") as log, tempfile.TemporaryDirectory() as tmp:
        for table in tables:
            data = str(digits_table(Path(tmp))) if table == "digits64" else table
            for seed in seeds:
                for i, entry in enumerate(flows):
                    flow, _, options = entry.partition(":")
                    layers: dict[str, Any] = {
                        "data": data, "seed": seed, "flow": flow, "quiet": True,
                        "plots": False, "out": f"{tmp}/{table}-{seed}-{i}",
                    }  # fmt: skip
                    if options:
                        layers["flow_options"] = json.loads(options)
                    if steps is not None:
                        layers["steps"] = steps
                    wall, cpu = time.perf_counter(), time.process_time()
                    cfg = TrainConfig.from_layers(layers)
                    res = start_run(cfg)
                    assert res is not None
                    seconds = (time.perf_counter() - wall, time.process_time() - cpu)
                    row = {
                        "table": table,
                        "seed": seed,
                        "flow": entry,
                        "test_nll": res.test.nll,
                        "steps": res.outcome.step,
                        "best_step": res.outcome.best_step,
                        "wall_s": round(seconds[0], 1),
                        "cpu_s": round(seconds[1], 1),
                    }
                    row["flow_nll"], row["parameters"] = _flow_alone(res.run_dir, cfg)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(json.dumps(row), flush=True)


def _flow_alone(run_dir: Path, cfg: Any) -> tuple[float, int]:
    """The test NLL of the run's flow without its defensive mixture (the Gaussian start the
    run falls back on when the flow does not beat it on the validation rows), and its number
    of parameters."""
    import torch

    import flowforge as ff
    from flowforge.core.defensive import DefensiveMixture
    from flowforge.eval.likelihood import standardized_log_likelihoods
    from flowforge.train.prepare import load_data

    ds = load_data(cfg)
    model = ff.load(run_dir)
    flow = model.flow if isinstance(model, DefensiveMixture) else model
    with torch.no_grad():
        lp = standardized_log_likelihoods(flow, ds.test.double(), ds.standardizer.log_abs_det())
    return float(-lp.mean()), sum(p.numel() for p in flow.parameters())


def table(path: Path) -> str:
    """The Markdown table of a results file: mean ± sd of the test NLL over splits, seconds."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["table"], r["flow"]), []).append(r)
    flows = list(dict.fromkeys(r["flow"] for r in rows))
    lines = [
        "| table | " + " | ".join(f"{f} NLL (mean ± sd) | {f} wall / CPU s" for f in flows) + " |",
        "|---|" + "---|---|" * len(flows),
    ]
    for name in dict.fromkeys(r["table"] for r in rows):
        cells = []
        for f in flows:
            g = groups.get((name, f), [])
            if not g:
                cells += ["", ""]
                continue
            cell = []
            for key in ("test_nll", "flow_nll"):
                nll = [r[key] for r in g if key in r]
                if nll:
                    sd = statistics.stdev(nll) if len(nll) > 1 else float("nan")
                    cell.append(f"{statistics.fmean(nll):.2f} ± {sd:.2f}")
            cells.append(f"{' [flow alone '.join(cell)}{']' if len(cell) > 1 else ''} ({len(g)})")
            wall = statistics.fmean(r["wall_s"] for r in g)
            cpu = statistics.fmean(r["cpu_s"] for r in g)
            cells.append(f"{wall:.0f} / {cpu:.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tables", nargs="+", default=list(TABLES))
    ap.add_argument(
        "--flows", nargs="+", default=list(FLOWS), help="presets, or PRESET:JSON of flow options"
    )
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="cap each run (default: the CLI's)")
    ap.add_argument("--out", type=Path, default=Path("tarflow_vector.jsonl"))
    ap.add_argument("--table", type=Path, default=None, help="only print this file's table")
    args = ap.parse_args(argv)
    if args.table is None:
        run(args.tables, args.seeds, args.flows, args.out, args.steps)
    print(table(args.table or args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
