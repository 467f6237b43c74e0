"""Every default preset on small real tables against the Gaussian baseline (issues 11, 23).

Trains ``flowforge train --data TABLE --flow FLOW`` with every default, in this process (one
thread), for each table, seed (each seed is another split) and preset, and writes one JSON line
per run: the test NLL of the run's model (the defensive mixture of the flow and its Gaussian
start, issue 23) and of the flow alone (what the same run scored before the mixture: training
is unchanged), the mixture's weight, the worst test row of each against the Gaussian start (per
row, ``log p(x) - log p_start(x)``), and two Gaussians fitted to the same training rows and
scored on the same test rows, computed here with numpy (maximum-likelihood and Ledoit-Wolf
covariances, each + 1e-6 on the diagonal, in standardised units), independent of the code under
test.

Tables: built-in names (``wine``, ``breast_cancer``) or CSV files. ``prepare`` writes the CSVs:
scikit-learn's packaged tables (iris, diabetes, linnerud, and two degenerate ones made from
them: ``bc_fewrows``, 24 breast-cancer rows x 30 columns, fewer rows than columns, and
``wine_nearconst``, wine with a column that is 1 on every row but two), and with ``--src``
those of the unpacked wheels of ``palmerpenguins`` and ``statsmodels`` (``pip download
palmerpenguins==0.1.6 statsmodels --no-deps`` and unzip them in ``SRC``, outside the project)::

    python benchmarks/small_tables.py prepare [--src SRC] --dest DIR
    OMP_NUM_THREADS=1 python benchmarks/small_tables.py run --tables wine DIR/engel.csv \\
        --seeds 100 101 102 103 104 105 106 107 108 109 --out results.jsonl
    python benchmarks/small_tables.py table results.jsonl [before.jsonl]
    python benchmarks/small_tables.py splits results.jsonl
    python benchmarks/small_tables.py rerun OLD.jsonl ... --data DIR --out new.jsonl
    python benchmarks/small_tables.py rules OLD.jsonl ... new.jsonl
    python benchmarks/small_tables.py criterion OLD.jsonl ... new.jsonl

``table`` prints a Markdown table (mean test NLL over seeds, and in parentheses on how many
seeds the run is at or below its Gaussian start, the baseline flowforge prints, and the
maximum-likelihood Gaussian); with a second file, the same for that file (the code before a
change) in brackets. ``splits`` prints, per table and preset, the flow alone and the mixture:
the mean over splits of the test NLL minus the Gaussian start's, the worst split, the worst
single row against the start, and the worst split against the better of the two numpy
Gaussians (a reference: it picks by the test rows). ``rerun`` reruns, resumably, the runs of
earlier files that lack validation densities; ``rules`` recomputes candidate weight rules
from recorded densities (the trade-off table); ``criterion`` prints issue 23's criterion per
preset and per table.
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
BUILT_IN = {"wine", "breast_cancer"}
FEW_VALIDATION_ROWS = {"linnerud", "bc_fewrows"}  # 2 validation rows (checked: load_data)


def _write(path: Path, head: list[str], rows: np.ndarray) -> None:
    np.savetxt(path, rows, delimiter=",", header=",".join(head), comments="", fmt="%.10g")
    print(f"{path}: {rows.shape[0]} rows x {rows.shape[1]} columns")


def prepare_sklearn(dest: Path) -> None:
    """scikit-learn's packaged tables: iris, diabetes, linnerud, bc_fewrows, wine_nearconst."""
    from sklearn import datasets

    dest.mkdir(parents=True, exist_ok=True)
    iris = datasets.load_iris()
    _write(dest / "iris.csv", list(iris.feature_names), iris.data)
    dia = datasets.load_diabetes(scaled=False)
    _write(dest / "diabetes.csv", list(dia.feature_names), dia.data)
    lin = datasets.load_linnerud()
    both = np.concatenate([lin.data, lin.target], 1)
    _write(dest / "linnerud.csv", [*lin.feature_names, *lin.target_names], both)
    bc = datasets.load_breast_cancer()
    pick = np.random.default_rng(0).permutation(bc.data.shape[0])[:24]
    names = [n.replace(" ", "_") for n in bc.feature_names]
    _write(dest / "bc_fewrows.csv", names, bc.data[pick])
    wine = datasets.load_wine()
    near = np.ones((wine.data.shape[0], 1))
    near[[5, 77]] = 1.001  # near-constant: two rows differ by 0.1%
    _write(
        dest / "wine_nearconst.csv",
        [*wine.feature_names, "near_constant"],
        np.hstack([wine.data, near]),
    )


def prepare(src: Path | None, dest: Path) -> None:
    """Write the packaged tables (:func:`prepare_sklearn`) and, with ``src``, penguins, star98
    (its first 14 columns, and ``star98_20``: the 20 explanatory columns of statsmodels'
    ``load``), macrodata and engel as numeric CSVs in ``dest``."""
    prepare_sklearn(dest)
    if src is None:
        return
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
    copy(sm / "star98/star98.csv", "star98_20.csv", lambda i, n: i >= 2)
    copy(sm / "macrodata/macrodata.csv", "macrodata.csv", lambda i, n: n not in ("year", "quarter"))
    copy(sm / "engel/engel.csv", "engel.csv", lambda i, n: True)


def _gaussians(train: np.ndarray, test: np.ndarray, log_det: float) -> dict[str, Any]:
    """Test NLL of the MLE and the Ledoit-Wolf Gaussian of ``train`` (numpy, float64), and the
    MLE Gaussian's log-density of each test row (``mle_rows``)."""
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
        out[f"{name}_rows"] = ll
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
                    seconds = round(time.perf_counter() - start, 1)
                    rows = _per_row(res.run_dir, ds)
                    mle_rows = base["mle_rows"]
                    lp, flow_lp = rows.pop("lp"), rows.pop("flow_lp")
                    row = {
                        "table": Path(table).stem,
                        "rows": int(ds.train.shape[0]),
                        "cols": ds.dim,
                        "seed": seed,
                        "flow": flow,
                        "set": sets,
                        "rule": "lower-bound",  # the weight rule of the code that ran
                        "test_nll": res.test.nll,
                        "best_step": res.outcome.best_step,
                        "steps": res.outcome.step,
                        "seconds": seconds,
                        **{k: v for k, v in base.items() if not k.endswith("_rows")},
                        **rows,
                        "rows_mle": mle_rows.tolist(),
                        "worst_row_vs_mle": float((lp - mle_rows).min()),
                        "flow_worst_row_vs_mle": float((flow_lp - mle_rows).min()),
                    }
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    print(json.dumps(row), flush=True)


def _merge(paths: list[Path]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Every run of the result files by (table, seed, preset); a later file's run replaces an
    earlier one's."""
    runs: dict[tuple[str, int, str], dict[str, Any]] = {}
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            r = json.loads(line)
            runs[(r["table"], r["seed"], r["flow"])] = r
    return runs


def rerun(paths: list[Path], data: Path, out: Path, order: list[str]) -> None:
    """Rerun, under the code now, every run of ``paths`` that has no validation densities (so
    its result under the weight rule is only bounded) and whose table leaves at least 10
    validation rows (with fewer the model is the start by construction), appending to ``out``.
    Resumable: a run already in ``out`` is skipped, so an interrupted job restarts where it
    stopped. Tables named in ``order`` go first, in that order; a table is ``DATA/NAME.csv``
    unless it is built in (``wine``, ``breast_cancer``)."""
    old = _merge(paths)
    done = set(_merge([out]))
    todo: dict[tuple[str, int], list[str]] = {}
    for (t, seed, flow), r in sorted(old.items()):
        if "val_flow" in r or t in FEW_VALIDATION_ROWS or (t, seed, flow) in done:
            continue
        todo.setdefault((t, seed), []).append(flow)
    rank = {t: i for i, t in enumerate(order)}
    tasks = sorted(todo.items(), key=lambda kv: (rank.get(kv[0][0], len(rank)), kv[0]))
    print(f"{sum(len(f) for _, f in tasks)} runs to go ({len(done)} already in {out})", flush=True)
    for (t, seed), flows in tasks:
        table = t if t in BUILT_IN else str(data / f"{t}.csv")
        run([table], [seed], [f for f in FLOWS if f in flows], out, [])


def _per_row(run_dir: Path, ds: Any) -> dict[str, Any]:
    """Per test row: the log-density of the run's model, of its flow alone and of its Gaussian
    start (the mixture's fallback); their means and worst rows against the start."""
    import torch

    import flowforge as ff
    from flowforge.core.defensive import DefensiveMixture
    from flowforge.eval.likelihood import standardized_log_likelihoods

    model = ff.load(run_dir)
    log_det = ds.standardizer.log_abs_det()

    def lp(m: Any) -> np.ndarray:
        with torch.no_grad():
            return standardized_log_likelihoods(m, ds.test.double(), log_det).numpy()

    if not isinstance(model, DefensiveMixture):  # --no-defensive: the flow alone
        out = lp(model)
        return {"weight": 0.0, "lp": out, "flow_lp": out, "test_nll_check": float(-out.mean())}
    mix, flow, start = lp(model), lp(model.flow), lp(model.fallback)
    val: dict[str, Any] = {}
    if ds.val is not None and len(ds.val):  # the rows that chose the weight
        with torch.no_grad():
            for key, m in (("val_flow", model.flow), ("val_start", model.fallback)):
                val[key] = standardized_log_likelihoods(m, ds.val.double(), log_det).tolist()
    return {
        "rows_flow": flow.tolist(),  # per test row, to study other weights offline
        "rows_start": start.tolist(),
        **val,
        "weight_from": json.loads((run_dir / "config.json").read_text())["model"]["defensive"][
            "weight_from"
        ],
        "weight": model.weight,
        "lp": mix,
        "flow_lp": flow,
        "flow_nll": float(-flow.mean()),
        "start_nll": float(-start.mean()),
        "worst_row_vs_start": float((mix - start).min()),
        "flow_worst_row_vs_start": float((flow - start).min()),
    }


def _read(path: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        groups.setdefault((r["table"], r["flow"]), []).append(r)
    return groups


def _start_ref(r: dict[str, Any]) -> tuple[float, str]:
    """The Gaussian a run is held to: its Gaussian start (the baseline flowforge prints), or,
    for a run of an older stop that did not record it, the maximum-likelihood Gaussian."""
    return (r["start_nll"], "start") if "start_nll" in r else (r["mle"], "MLE")


def table(after: Path, before: Path | None) -> None:
    """Print the Markdown table of a results file (and a 'before' file in brackets)."""
    a = _read(after)
    b = _read(before) if before else {}
    names = list(dict.fromkeys(t for t, _ in a))
    print(
        "| table (train rows x columns) | " + " | ".join(FLOWS) + " | Gaussian start | LW | MLE |"
    )
    print("|---|" + "---|" * (len(FLOWS) + 3))

    def cell(rows: list[dict[str, Any]]) -> str:
        mean = statistics.fmean(r["test_nll"] for r in rows)
        refs = [_start_ref(r) for r in rows]
        wins = sum(r["test_nll"] <= g + 1e-4 for r, (g, _) in zip(rows, refs))
        wins_mle = sum(r["test_nll"] <= r["mle"] + 1e-4 for r in rows)
        if all(k == "start" for _, k in refs):
            return f"{mean:.2f} ({wins}/{len(rows)}; MLE {wins_mle})"
        return f"{mean:.2f} (MLE {wins_mle}/{len(rows)})"

    for name in names:
        first = next(v for (t, _), v in a.items() if t == name)
        cells = []
        for flow in FLOWS:
            rows = a.get((name, flow), [])
            text = cell(rows) if rows else ""
            old = b.get((name, flow))
            if old:
                text += f" [{cell(old)}]"
            cells.append(text)
        lw = statistics.fmean(r["lw"] for r in first)
        mle = statistics.fmean(r["mle"] for r in first)
        start = (
            f"{statistics.fmean(r['start_nll'] for r in first):.2f}"
            if all("start_nll" in r for r in first)
            else "-"
        )
        head = f"{name} ({first[0]['rows']} x {first[0]['cols']})"
        print(f"| {head} | " + " | ".join(cells) + f" | {start} | {lw:.2f} | {mle:.2f} |")
    print(
        "\nEach cell: mean test NLL over the splits, nats; in parentheses on how many splits the "
        "run is at or below its Gaussian start (the baseline flowforge prints) and the "
        "maximum-likelihood Gaussian (MLE; only that where the runs did not record the start)."
    )


def splits(path: Path) -> None:
    """Per table and preset, flow alone -> mixture: mean over splits of (test NLL - the Gaussian
    start's), the worst split, the worst test row against the start, and as a reference the
    worst split against the better of the two numpy Gaussians (picked by the test rows)."""
    a = _read(path)
    names = list(dict.fromkeys(t for t, _ in a))
    print("Each cell: flow alone -> model (the defensive mixture). mean / worst split: test NLL")
    print("minus the Gaussian start's (the baseline flowforge prints), nats (negative: the model")
    print("is better); worst row: the lowest log p(x) - log p_start(x) over every test row of")
    print("every split; last column: the worst split against the better of the MLE and")
    print("Ledoit-Wolf Gaussians, whichever scores the test rows better (a reference).\n")
    print(
        "| table (train rows x cols, splits) | preset | mean | worst split | worst row "
        "| worst split vs better Gaussian |"
    )
    print("|---|---|---|---|---|---|")
    every: list[dict[str, Any]] = []
    for name in names:
        for flow in FLOWS:
            rows = a.get((name, flow), [])
            if not rows or "flow_nll" not in rows[0]:
                continue
            every += rows
            before = [r["flow_nll"] - r["start_nll"] for r in rows]
            after = [r["test_nll"] - r["start_nll"] for r in rows]
            best = [min(r["mle"], r["lw"]) for r in rows]
            wb = min(r["flow_worst_row_vs_start"] for r in rows)
            wa = min(r["worst_row_vs_start"] for r in rows)
            gb = max(r["flow_nll"] - g for r, g in zip(rows, best))
            ga = max(r["test_nll"] - g for r, g in zip(rows, best))
            head = f"{name} ({rows[0]['rows']} x {rows[0]['cols']}, {len(rows)})"
            print(
                f"| {head} | {flow} | {statistics.fmean(before):+.2f} -> "
                f"{statistics.fmean(after):+.2f} | {max(before):+.2f} -> {max(after):+.2f} | "
                f"{wb:+.1f} -> {wa:+.2f} | {gb:+.2f} -> {ga:+.2f} |"
            )
    if not every:
        return
    best = [min(r["mle"], r["lw"]) + 1e-4 for r in every]
    wins_b = sum(r["flow_nll"] <= g for r, g in zip(every, best))
    wins_a = sum(r["test_nll"] <= g for r, g in zip(every, best))
    start_b = sum(r["flow_nll"] <= r["start_nll"] + 1e-4 for r in every)
    start_a = sum(r["test_nll"] <= r["start_nll"] + 1e-4 for r in every)
    print(
        f"\n{len(every)} runs: at or below the Gaussian start {start_b} -> {start_a}; at or "
        f"below the better Gaussian (a reference) {wins_b} -> {wins_a}; worst row against the "
        f"start {min(r['flow_worst_row_vs_start'] for r in every):+.1f} -> "
        f"{min(r['worst_row_vs_start'] for r in every):+.2f} nats"
    )


def _rules(r: dict[str, Any], few: bool) -> tuple[float, float, float, str]:
    """One run's test NLL under the weight rule of issue 23's last stop (the validation rows'
    maximum-likelihood weight, "before") and under the rule now (that weight only where the
    validation rows show the mixture better than the start beyond two standard errors, else the
    start alone, "after"); the worst test row against the start after; and how ``after`` is
    known: ``"val"`` (recomputed from the validation rows' densities, the same as the library's
    weight for runs of the rule now), ``"few"`` (fewer than 10 validation rows: the start by
    construction), ``"bound"`` (a run of the last stop without validation densities: after is
    the start or the mixture before, so at or below the start wherever before is)."""
    import torch

    from flowforge.core.defensive import choose_weight, defensive_weight

    a = np.asarray(r["rows_flow"], dtype=np.float64)
    b = np.asarray(r["rows_start"], dtype=np.float64)

    def nll(w: float) -> tuple[float, float]:
        mix = b if w >= 1 else np.logaddexp(a + math.log1p(-w), b + math.log(w))
        return float(-mix.mean()), float((mix - b).min())

    if "val_flow" in r:
        vf, vs = torch.tensor(r["val_flow"]), torch.tensor(r["val_start"])
        before = nll(choose_weight(vf, vs, _old_floor(vf.numel())))[0]
        choice = defensive_weight(vf, vs)
        after, worst = nll(choice.weight)
        # the recorded model is its recorded weight's mixture (the recomputation's check); a
        # run of stop 30's rule ("gated") took the maximum-likelihood weight gated at 2 SE
        assert abs(nll(float(r["weight"]))[0] - r["test_nll"]) < 1e-3, (r["table"], r["seed"])
        gated = choose_weight(vf, vs, _old_floor(vf.numel()))
        d = _mix_rows(np.asarray(r["val_flow"]), np.asarray(r["val_start"]), gated)
        gated = gated if vf.numel() >= 10 and gated < 1 and _gated(d, 2.0) else 1.0
        if r.get("rule") == "gated":
            assert abs(gated - float(r["weight"])) < 1e-4, (r["table"], r["seed"], r["flow"])
        r["_gate"] = nll(gated)[0]  # stop 30's rule, for the per-table summary
        return before, after, worst, "val"
    before = float(r["test_nll"])
    if few:
        r["_gate"] = nll(1.0)[0]
        return before, *nll(1.0), "few"
    r["_gate"] = max(before, float(r["start_nll"]))
    return before, max(before, float(r["start_nll"])), float(r["worst_row_vs_start"]), "bound"


def criterion(paths: list[Path]) -> None:
    """Issue 23's criterion per table and preset, merging result files (a later file's run
    replaces an earlier one's): against the Gaussian start (the baseline flowforge prints), the
    mean and the worst split of test NLL minus the start's, before and after the rule now, the
    worst test row against the start, and the worst split against the maximum-likelihood
    Gaussian and against the better of the two numpy Gaussians (an oracle: it picks by the test
    rows)."""
    runs = _merge(paths)
    few_tables = FEW_VALIDATION_ROWS
    groups: dict[tuple[str, str], list[Any]] = {}
    for (t, _, f), r in sorted(runs.items()):
        groups.setdefault((t, f), []).append((r, *_rules(r, t in few_tables)))
    print(
        "| table (train rows x cols, splits) | preset | before: mean / worst split | after: "
        "mean / worst split | after: worst row | after vs MLE / better Gaussian, worst split "
        "| flow kept |"
    )
    print("|---|---|---|---|---|---|---|")
    total = {"runs": 0, "before_ok": 0, "after_ok": 0, "bound": 0}
    worst_row, worst_split = 0.0, -math.inf
    for (t, f), rows in groups.items():
        r0 = rows[0][0]
        db = [b - r["start_nll"] for r, b, _, _, _ in rows]
        da = [a - r["start_nll"] for r, _, a, _, _ in rows]
        mle = max(a - r["mle"] for r, _, a, _, _ in rows)
        best = max(a - min(r["mle"], r["lw"]) for r, _, a, _, _ in rows)
        row = min(w for _, _, _, w, _ in rows)
        how = {h for *_, h in rows}
        kept = sum(a < r["start_nll"] - 1e-9 for r, _, a, _, _ in rows)
        unknown = sum(h == "bound" for *_, h in rows)
        mark = "" if how <= {"val", "few"} else " (b)"
        known = f"{kept}/{len(rows)}" + (f" ({unknown} unknown)" if unknown else "")
        total["runs"] += len(rows)
        total["before_ok"] += sum(d <= 1e-6 for d in db)
        total["after_ok"] += sum(d <= 1e-6 for d in da)
        total["bound"] += sum(h == "bound" for *_, h in rows)
        worst_row, worst_split = min(worst_row, row), max(worst_split, max(da))
        print(
            f"| {t} ({r0['rows']} x {r0['cols']}, {len(rows)}) | {f} | "
            f"{statistics.fmean(db):+.3f} / {max(db):+.3f} | {statistics.fmean(da):+.3f}{mark} / "
            f"{max(da):+.3f}{mark} | {row:+.2f} | {mle:+.3f}{mark} / {best:+.3f}{mark} | {known} |"
        )
    print(
        f"\n{total['runs']} runs ({total['bound']} bounded: 'b'): at or below the Gaussian start "
        f"before {total['before_ok']}, after {total['after_ok']}; worst split after "
        f"{worst_split:+.4f} nats; worst row after {worst_row:+.2f} nats"
    )
    _criterion_tables(groups)


def _criterion_tables(groups: dict[tuple[str, str], list[Any]]) -> None:
    """Per table, every preset together, test NLL minus the start's: the worst split of the
    flow alone (the model before issue 23), of the mixture at the maximum-likelihood weight
    (stop 29) and of the rule now; the worst test row against the start, flow alone and now;
    and the means of the flow alone, stop 29's rule, stop 30's (that weight gated at 2 standard
    errors) and the rule now, over the runs whose result is known exactly (recomputed from
    validation densities, or the start by construction on fewer than 10 validation rows;
    bounded runs are left out of the means)."""
    print(
        "\n| table (train rows x cols) | splits | worst split: flow alone / ML weight / now "
        "| worst row: flow alone / now | mean: flow alone / ML weight / 2-SE gate / now "
        "(runs known exactly, of all) |"
    )
    print("|---|---|---|---|---|")
    tables: dict[str, list[Any]] = {}
    for (t, _), rows in groups.items():
        tables.setdefault(t, []).extend(rows)
    for t, rows in tables.items():
        r0 = rows[0][0]
        seeds = len({r["seed"] for r, *_ in rows})
        df = [r["flow_nll"] - r["start_nll"] for r, *_ in rows]
        db = [b - r["start_nll"] for r, b, _, _, _ in rows]
        da = [a - r["start_nll"] for r, _, a, _, _ in rows]
        dg = [r["_gate"] - r["start_nll"] for r, *_ in rows]
        exact = [i for i, (*_, h) in enumerate(rows) if h != "bound"]
        mark = " (b)" if len(exact) < len(rows) else ""
        mean = " / ".join(f"{statistics.fmean(v[i] for i in exact):+.2f}" for v in (df, db, dg, da))
        print(
            f"| {t} ({r0['rows']} x {r0['cols']}) | {seeds} | {max(df):+.2f} / {max(db):+.3f} / "
            f"{max(da):+.3f}{mark} | {min(r['flow_worst_row_vs_start'] for r, *_ in rows):+.1f} / "
            f"{min(w for _, _, _, w, _ in rows):+.2f} | {mean if exact else '-'} "
            f"({len(exact)} of {len(rows)}) |"
        )


def _mix_rows(a: np.ndarray, b: np.ndarray, w: float) -> np.ndarray:
    """Per row, ``log((1 - w) p_flow + w p_start) - log p_start``."""
    return np.zeros_like(b) if w >= 1 else np.logaddexp(a + math.log1p(-w), b + math.log(w)) - b


def _gated(d: np.ndarray, margin: float) -> bool:
    """The rule's test: the mean per-row gain above ``margin`` standard errors and 0.001."""
    from flowforge.core.defensive import MIN_GAIN

    return bool(d.mean() > max(margin * d.std(ddof=1) / math.sqrt(d.size), MIN_GAIN))


def _old_floor(rows: int) -> float:
    """The weight floor of issue 23's stops 29-31, ``max(0.01, 1 / (rows + 2))`` (now
    :func:`flowforge.core.defensive.minimum_weight` is ``max(0.01, 3 / rows)``)."""
    return max(0.01, 1.0 / (rows + 2))


def _weight_rules() -> dict[str, Any]:
    """Candidate weight rules, each ``(val_flow, val_start) -> w`` (float64 arrays, at least
    10 rows; fewer give the start under every rule): the library's rule now
    (:func:`flowforge.core.defensive.defensive_weight`, the weight maximising the gain's lower
    bound), the earlier stops' rules (the validation rows' maximum-likelihood weight ``ML``,
    kept always or where its gain exceeds 2 standard errors) and the variants measured by the
    ``rules`` subcommand."""
    import torch

    from flowforge.core.defensive import choose_weight, defensive_weight

    def ml(a: np.ndarray, b: np.ndarray) -> float:
        return choose_weight(torch.from_numpy(a), torch.from_numpy(b), _old_floor(a.size))

    def margin(k: float) -> Any:
        def rule(a: np.ndarray, b: np.ndarray) -> float:
            w = ml(a, b)
            return w if w < 1 and _gated(_mix_rows(a, b, w), k) else 1.0

        return rule

    def now(a: np.ndarray, b: np.ndarray) -> float:
        # the library's rule: the weight from the maximum-likelihood one (at least 3 / M) up to
        # 1 that maximises the gain's lower 2-standard-error bound
        return defensive_weight(torch.from_numpy(a), torch.from_numpy(b)).weight

    def bound_old_floor(a: np.ndarray, b: np.ndarray) -> float:
        # the same, with the earlier floor 1 / (M + 2)
        return defensive_weight(torch.from_numpy(a), torch.from_numpy(b), _old_floor(a.size)).weight

    gate = margin(2.0)  # stop 30's rule: the maximum-likelihood weight, gated at 2 SE

    def halves(a: np.ndarray, b: np.ndarray) -> float:
        # stop 30's rule, and the mixture's gain positive on each half of the rows too
        w, h = gate(a, b), a.size // 2
        d = _mix_rows(a, b, w)
        return w if w < 1 and d[:h].mean() > 0 and d[h:].mean() > 0 else 1.0

    def cross(a: np.ndarray, b: np.ndarray) -> float:
        # cross-fitted gain: each half's rows scored at the weight the other half chose, so no
        # row judges the weight it chose; the flow kept if that gain passes 2 standard errors
        h = a.size // 2
        wa, wb = ml(a[:h], b[:h]), ml(a[h:], b[h:])
        d = np.concatenate([_mix_rows(a[:h], b[:h], wb), _mix_rows(a[h:], b[h:], wa)])
        w = ml(a, b)
        return w if w < 1 and _gated(d, 2.0) else 1.0

    def cross_both(a: np.ndarray, b: np.ndarray) -> float:
        # stop 30's rule, and each half's cross-fitted gain positive
        h = a.size // 2
        wa, wb = ml(a[:h], b[:h]), ml(a[h:], b[h:])
        w = gate(a, b)
        ok = _mix_rows(a[:h], b[:h], wb).mean() > 0 and _mix_rows(a[h:], b[h:], wa).mean() > 0
        return w if w < 1 and ok else 1.0

    def median(a: np.ndarray, b: np.ndarray) -> float:
        # stop 30's rule, and the median row gains too (one or two rows cannot carry the mean)
        w = gate(a, b)
        return w if w < 1 and float(np.median(_mix_rows(a, b, w))) > 0 else 1.0

    return {
        "ML weight, no margin (stop 29)": margin(0.0),
        "ML weight if gain > 2 SE (stop 30)": gate,
        "ML weight if gain > 3 SE": margin(3.0),
        "stop 30 + gain > 0 on both halves": halves,
        "ML weight if cross-fitted gain > 2 SE": cross,
        "stop 30 + both cross-fitted halves > 0": cross_both,
        "stop 30 + median gain > 0": median,
        "w from the ML weight up maximising gain - 2 SE, floor 1/(M+2)": bound_old_floor,
        "**the same, floor 3/M (now)**": now,
    }


def rules(paths: list[Path]) -> None:
    """Every candidate weight rule (:func:`_weight_rules`) over every run of the merged result
    files whose result is known from recorded densities (validation densities, or fewer than 10
    validation rows: the start under every rule): runs above their start, the worst split and
    worst row against the start, the mean test NLL minus the start's, and flows kept."""
    runs = _merge(paths)
    known = [
        r for (t, _, _), r in sorted(runs.items()) if "val_flow" in r or t in FEW_VALIDATION_ROWS
    ]
    tables = sorted({r["table"] for r in known})
    print(f"{len(known)} of {len(runs)} runs known from recorded densities\n")
    print(
        "| rule | runs above the start | worst split | worst row | mean vs the start "
        "| flows kept | " + " | ".join(tables) + " |"
    )
    print("|---|---|---|---|---|---|" + "---|" * len(tables))
    for name, rule in _weight_rules().items():
        res = []
        for r in known:
            a = np.asarray(r["rows_flow"], dtype=np.float64)
            b = np.asarray(r["rows_start"], dtype=np.float64)
            w = 1.0
            if "val_flow" in r and len(r["val_flow"]) >= 10:
                w = rule(
                    np.asarray(r["val_flow"], np.float64), np.asarray(r["val_start"], np.float64)
                )
            d = _mix_rows(a, b, w)
            res.append((r["table"], -float(d.mean()), float(d.min()), w < 1))
        per = [statistics.fmean(x for t, x, _, _ in res if t == name_t) for name_t in tables]
        above = sum(x > 1e-6 for _, x, _, _ in res)
        print(
            f"| {name} | {above} | {max(x for _, x, _, _ in res):+.3f} | "
            f"{min(x for _, _, x, _ in res):+.2f} | {statistics.fmean(x for _, x, _, _ in res):+.3f} "
            f"| {sum(k for *_, k in res)} | " + " | ".join(f"{x:+.2f}" for x in per) + " |"
        )
    print(
        "\nNLL minus the Gaussian start's, nats (negative: better than the start); the last "
        "columns are each table's mean over its known runs."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--src", type=Path, default=None)
    pp.add_argument("--dest", type=Path, required=True)
    pr = sub.add_parser("run")
    pr.add_argument("--tables", nargs="+", required=True)
    pr.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    pr.add_argument("--flows", nargs="+", default=list(FLOWS))
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--set", nargs="*", default=[], help="extra options, key=value")
    prr = sub.add_parser("rerun")
    prr.add_argument("results", type=Path, nargs="+")
    prr.add_argument("--data", type=Path, required=True)
    prr.add_argument("--out", type=Path, required=True)
    prr.add_argument("--order", nargs="*", default=[], help="tables to run first, in order")
    pt = sub.add_parser("table")
    pt.add_argument("after", type=Path)
    pt.add_argument("before", type=Path, nargs="?")
    ps = sub.add_parser("splits")
    ps.add_argument("results", type=Path)
    pw = sub.add_parser("rules")
    pw.add_argument("results", type=Path, nargs="+")
    pc = sub.add_parser("criterion")
    pc.add_argument("results", type=Path, nargs="+")
    args = p.parse_args()
    if args.cmd == "prepare":
        prepare(args.src, args.dest)
    elif args.cmd == "run":
        run(args.tables, args.seeds, args.flows, args.out, args.set)
    elif args.cmd == "splits":
        splits(args.results)
    elif args.cmd == "rerun":
        rerun(args.results, args.data, args.out, args.order)
    elif args.cmd == "rules":
        rules(args.results)
    elif args.cmd == "criterion":
        criterion(args.results)
    else:
        table(args.after, args.before)


if __name__ == "__main__":
    main()
