"""``flowforge train --flow auto``: a small search over presets and sizes by validation NLL.

Each candidate of :func:`candidates` (the vector presets at the size chosen from the data, then
a few other sizes) trains as its own run under ``RUN/trials/`` with the same data, splits and
seed, until the time budget (``--time-budget`` seconds) would be exceeded: a candidate is
started only while the time spent plus the longest trial so far fits. The trial with the
lowest validation NLL is kept: its files are copied into ``RUN`` itself (a run like any other:
``eval``, ``sample``, ``score``, ``--resume`` and ``ff.load`` read it, with the plots a run of
its preset draws, drawn once for it and not for every trial), and the table of what was
tried is printed and saved as ``RUN/auto.json`` and under ``"auto"`` in ``RUN/config.json``.
The choice uses the validation split only (each trial's own ``results.json`` also holds its
test NLL, which plays no part in it), so the kept run's test NLL stays an honest estimate.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from flowforge.runs.writer import RunWriter
from flowforge.train.config import AUTO, ConfigError, TrainConfig

__all__ = ["AUTO", "auto_run", "candidates", "format_table"]


_PRESETS = ("nsf", "realnvp", "maf", "nice")


def candidates(cfg: TrainConfig) -> list[tuple[str, dict[str, Any]]]:
    """The (preset, options) pairs to try, in order: each preset at the size chosen from the
    data (options the user gave win), then wider and deeper variants of the first two.

    Example:
        >>> [p for p, _ in candidates(TrainConfig())][:4]
        ['nsf', 'realnvp', 'maf', 'nice']
    """
    out: list[tuple[str, dict[str, Any]]] = [(p, {}) for p in _PRESETS]
    sized = {"transforms", "hidden"} & set(cfg.given)
    if not sized:
        out += [("nsf", {"hidden": (64, 64)}), ("realnvp", {"transforms": 5})]
        out += [("maf", {"transforms": 3}), ("nsf", {"transforms": 5})]
    return out


def _label(preset: str, options: dict[str, Any]) -> str:
    parts = [preset] + [
        f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in options.items()
    ]
    return " ".join(parts)


def format_table(rows: list[dict[str, Any]]) -> str:
    """The trials as a plain-text table (one line per trial, the kept one marked ``*``)."""
    lines = [f"  {'#':>2}  {'trial':<28} {'val NLL':>10} {'steps':>6} {'seconds':>8}  status"]
    for r in rows:
        val = "" if r["val_nll"] is None else f"{r['val_nll']:.4f}"
        steps = "" if r["steps"] is None else str(r["steps"])
        secs = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        mark = "*" if r.get("kept") else " "
        lines.append(
            f"{mark} {r['trial']:>2}  {r['label']:<28} {val:>10} {steps:>6} {secs:>8}  {r['status']}"
        )
    return "\n".join(lines)


def auto_run(cfg: TrainConfig, *, overwrite: bool = False) -> Any:
    """Search as the module docstring says and return the kept run's ``TrainResult``.

    ``overwrite`` replaces a run found in the output folder (its trials' runs included), as
    :func:`~flowforge.train.run.start_run` does.

    Raises:
        ConfigError: an output folder that exists and is not empty, a budget that is not
            positive, or no trial finishing.
    """
    from flowforge.train.prepare import default_out_dir
    from flowforge.train.run import RESUME, start_run

    if cfg.time_budget <= 0:
        raise ConfigError(f"time_budget must be positive, got {cfg.time_budget}")
    out = Path(cfg.out) if cfg.out else default_out_dir(cfg)
    # locked while the trials run under out/trials
    with RunWriter.reserve(out, overwrite, RESUME) as writer:
        return _search(cfg, out, writer, start_run)


def _search(cfg: TrainConfig, out: Path, writer: RunWriter, start_run: Any) -> Any:
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    results: dict[int, Any] = {}
    longest = 0.0
    for i, (preset, options) in enumerate(candidates(cfg)):
        row: dict[str, Any] = {"trial": i, "flow": preset, "options": dict(options)}
        row |= {"label": _label(preset, options), "val_nll": None, "steps": None}
        row |= {"seconds": None, "status": "skipped (time budget)"}
        rows.append(row)
        spent = time.perf_counter() - start
        if results and spent + longest > cfg.time_budget:
            continue
        trial_dir = out / "trials" / f"{i}-{preset}"
        layer = {"flow": preset, **options, "out": str(trial_dir), "plots": False}
        t0 = time.perf_counter()
        try:
            res = start_run(cfg.updated({**layer, "quiet": True}))
        except (ConfigError, ValueError, RuntimeError) as e:
            row["status"] = f"failed: {str(e).splitlines()[0][:60]}"
            continue
        if res is None:  # a rank other than 0 of torchrun
            raise ConfigError("--flow auto trains in one process; run it without torchrun")
        seconds = time.perf_counter() - t0
        longest = max(longest, seconds)
        row |= {"val_nll": res.outcome.best_val_nll, "steps": res.outcome.step}
        row |= {"seconds": round(seconds, 2), "status": res.outcome.reason}
        results[i] = res
        leader = min(results, key=lambda k: results[k].outcome.best_val_nll)
        for k in results:  # only the leader's plots may be drawn: free the others' data
            if k != leader:
                results[k].draw_plots = None
        print(f"auto: trial {i} {row['label']}: validation NLL {row['val_nll']:.4f}", flush=True)
    if not results:
        raise ConfigError("--flow auto: no trial finished; see the messages above")
    best = min(results, key=lambda k: results[k].outcome.best_val_nll)
    rows[best]["kept"] = True
    _keep(writer, out / "trials" / f"{best}-{rows[best]['flow']}", rows, cfg)
    res = results[best]
    res.run_dir = out
    if cfg.plots and res.draw_plots is not None:  # the kept trial's plots, drawn once
        res.plots = writer.write_plots(res.draw_plots)
    print(format_table(rows), flush=True)
    return res


def _keep(writer: RunWriter, trial: Path, rows: list[dict[str, Any]], cfg: TrainConfig) -> None:
    """Copy the kept trial's files into the run and record the search there."""
    writer.copy_run(trial)
    table = {"time_budget": cfg.time_budget, "trials": rows}
    record = json.loads(writer.files.config.read_text(encoding="utf-8"))
    record["config"]["out"] = str(writer.files.root)
    record["config"]["plots"] = cfg.plots  # the trials drew none; the run draws the kept one's
    record["auto"] = table
    writer.write_record(record)
    writer.write_json("auto.json", table)
    writer.write_results(json.loads((trial / "results.json").read_text(encoding="utf-8")))
