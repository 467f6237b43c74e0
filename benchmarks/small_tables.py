"""Every default preset on small real tables against the Gaussian baseline (issue 11).

Trains ``flowforge train --data TABLE --flow FLOW`` with every default, in this process (one
thread), for each table, seed and preset, and writes one JSON line per run: the test NLL, the
best step, and two Gaussians fitted to the same training rows and scored on the same test rows,
computed here with numpy (maximum-likelihood and Ledoit-Wolf covariances, each + 1e-6 on the
diagonal, in standardised units), independent of the code under test.

Tables: built-in names (``wine``, ``breast_cancer``) or CSV files. ``prepare`` writes the CSVs
of tables the tests do not use, from the unpacked wheels of ``palmerpenguins`` and
``statsmodels`` (``pip download palmerpenguins==0.1.6 statsmodels --no-deps`` and unzip them in
``SRC``, outside the project)::

    python benchmarks/small_tables.py prepare --src SRC --dest DIR
    OMP_NUM_THREADS=1 python benchmarks/small_tables.py run --tables wine DIR/engel.csv \\
        --seeds 0 1 2 --out results.jsonl [--set whiten=false]
    python benchmarks/small_tables.py table results.jsonl [before.jsonl]

``table`` prints a Markdown table (mean test NLL over seeds, and in parentheses how many seeds
are at or below the maximum-likelihood Gaussian); with a second file, the mean of that file
(the code before a change) in brackets, with its count.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FLOWS = ("nice", "realnvp", "maf", "iaf", "nsf")


def prepare(src: Path, dest: Path) -> None:
    """Write penguins, star98, macrodata and engel as numeric CSVs in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    sm = src / "statsmodels" / "datasets"

    def copy(path: Path, out: str, keep: Any) -> None:
        with path.open() as f:
            rows = list(csv.reader(f))
        head, body = rows[0], rows[1:]
        idx = [i for i, name in enumerate(head) if keep(i, name)]
        good = [[r[i] for i in idx] for r in body if all(r[i] not in ("", "NA") for i in idx)]
        with (dest / out).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow([head[i] for i in idx])
            w.writerows(good)
        print(f"{dest / out}: {len(good)} rows x {len(idx)} columns")

    numeric = {"bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"}
    copy(src / "palmerpenguins/data/penguins.csv", "penguins.csv", lambda i, n: n in numeric)
    copy(sm / "star98/star98.csv", "star98.csv", lambda i, n: i < 14)
    copy(sm / "macrodata/macrodata.csv", "macrodata.csv", lambda i, n: n not in ("year", "quarter"))
    copy(sm / "engel/engel.csv", "engel.csv", lambda i, n: True)


def _gaussians(train: np.ndarray, test: np.ndarray, log_det: float) -> dict[str, float]:
    """Test NLL of the MLE and the Ledoit-Wolf Gaussian of ``train`` (numpy, float64)."""
    a, b = train.astype(np.float64), test.astype(np.float64)
    n, d = a.shape
    c = a - a.mean(0)
    emp = c.T @ c / n
    mu = np.trace(emp) / d
    x2 = c**2
    beta = ((x2.T @ x2).sum() / n - (emp**2).sum()) / (n * d)
    delta = ((emp - mu * np.eye(d)) ** 2).sum() / d
    s = 0.0 if delta == 0 else min(1.0, max(0.0, min(beta, delta) / delta))
    out: dict[str, float] = {"shrinkage": s}
    for name, cov in (("mle", emp), ("lw", (1 - s) * emp + s * mu * np.eye(d))):
        cov = cov + 1e-6 * np.eye(d)
        _, logdet = np.linalg.slogdet(cov)
        r = b - a.mean(0)
        maha = np.einsum("ij,ij->i", r @ np.linalg.inv(cov), r)
        ll = -0.5 * (maha + logdet + d * math.log(2 * math.pi)) + log_det
        out[name] = float(-ll.mean())
    return out


def run(tables: list[str], seeds: list[int], flows: list[str], out: Path, sets: list[str]) -> None:
    import torch

    from flowforge.train.config import TrainConfig, parse_flag_value
    from flowforge.train.prepare import load_data
    from flowforge.train.run import start_run

    torch.set_num_threads(1)
    extra: dict[str, Any] = {}
    for item in sets:
        key, _, value = item.partition("=")
        extra[key] = parse_flag_value(key, value)
    with out.open("a") as log, tempfile.TemporaryDirectory() as tmp:
        for table in tables:
            for seed in seeds:
                layers = {"data": table, "seed": seed, "quiet": True, "plots": False}
                ds = load_data(TrainConfig.from_layers({**layers, "flow": "maf"}))
                assert ds.train is not None and ds.test is not None
                log_det = 0.0 if ds.standardizer is None else float(ds.standardizer.log_abs_det())
                base = _gaussians(ds.train.numpy(), ds.test.numpy(), log_det)
                for flow in flows:
                    cfg = TrainConfig.from_layers(
                        {**layers, "flow": flow, **extra, "out": f"{tmp}/{table[-12:]}{seed}{flow}"}
                    )
                    start = time.perf_counter()
                    res = start_run(cfg)
                    assert res is not None
                    row = {
                        "table": Path(table).stem,
                        "rows": int(ds.train.shape[0]),
                        "cols": ds.dim,
                        "seed": seed,
                        "flow": flow,
                        "set": sets,
                        "test_nll": res.test.nll,
                        "best_step": res.outcome.best_step,
                        "steps": res.outcome.step,
                        "seconds": round(time.perf_counter() - start, 1),
                        **base,
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(json.dumps(row), flush=True)


def _read(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        groups.setdefault((r["table"], r["flow"]), []).append(r)
    return groups


def table(after: Path, before: Path | None) -> None:
    """Print the Markdown table of a results file (and a 'before' file in parentheses)."""
    a = _read(after)
    b = _read(before) if before else {}
    names = list(dict.fromkeys(t for t, _ in a))
    print("| table (train rows x columns) | " + " | ".join(FLOWS) + " | Gaussian LW | MLE |")
    print("|---|" + "---|" * (len(FLOWS) + 2))
    for name in names:
        first = next(v for (t, _), v in a.items() if t == name)
        cells = []
        for flow in FLOWS:
            rows = a.get((name, flow), [])
            if not rows:
                cells.append("")
                continue
            mean = statistics.fmean(r["test_nll"] for r in rows)
            wins = sum(r["test_nll"] <= r["mle"] + 1e-4 for r in rows)
            cell = f"{mean:.2f} ({wins}/{len(rows)})"
            old = b.get((name, flow))
            if old:
                old_wins = sum(r["test_nll"] <= r["mle"] + 1e-4 for r in old)
                old_mean = statistics.fmean(r["test_nll"] for r in old)
                cell += f" [{old_mean:.2f} ({old_wins}/{len(old)})]"
            cells.append(cell)
        lw = statistics.fmean(r["lw"] for r in first)
        mle = statistics.fmean(r["mle"] for r in first)
        head = f"{name} ({first[0]['rows']} x {first[0]['cols']})"
        print(f"| {head} | " + " | ".join(cells) + f" | {lw:.2f} | {mle:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--src", type=Path, required=True)
    pp.add_argument("--dest", type=Path, required=True)
    pr = sub.add_parser("run")
    pr.add_argument("--tables", nargs="+", required=True)
    pr.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pr.add_argument("--flows", nargs="+", default=list(FLOWS))
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--set", nargs="*", default=[], help="extra options, key=value")
    pt = sub.add_parser("table")
    pt.add_argument("after", type=Path)
    pt.add_argument("before", type=Path, nargs="?")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.src, args.dest)
    elif args.cmd == "run":
        run(args.tables, args.seeds, args.flows, args.out, args.set)
    else:
        table(args.after, args.before)


if __name__ == "__main__":
    main()
