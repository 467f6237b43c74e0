"""What the defensive mixture costs on a large table (issue 23), side by side in one process.

A 100,000 x 8 table (a fixed random correlated, skewed table written as ``.npy``) is trained
with ``flowforge train`` defaults and ``--steps STEPS``, alternately with ``--defensive`` (the
default) and ``--no-defensive``, ``--repeats`` times each (the order alternating, after one untimed warm-up run), one thread. Reported per
configuration: the median training seconds per step (the trainer's own clock: the fit loop,
its validations included), the whole run's seconds (data, start, fit, the weight's validation
pass, the test evaluation), and the seconds of one ``log_prob`` pass over the 100,000 rows of
the loaded model (the mixture, or the flow alone).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/defensive_cost.py --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _table(path: Path, rows: int, cols: int) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(rows, cols)) @ rng.normal(size=(cols, cols))
    np.save(path, np.c_[np.exp(z[:, :2] / 3), z[:, 2:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--flow", default="maf")
    args = ap.parse_args()
    torch.set_num_threads(1)

    import flowforge as ff
    from flowforge.train.config import TrainConfig
    from flowforge.train.run import start_run

    times: dict[bool, dict[str, list[float]]] = {
        on: {"step": [], "run": [], "log_prob": []} for on in (True, False)
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "large.npy"
        _table(data, args.rows, 8)
        x = torch.from_numpy(np.load(data)).float()
        warm = {"data": str(data), "flow": args.flow, "steps": 2, "quiet": True, "plots": False}
        start_run(TrainConfig.from_layers({**warm, "out": str(Path(tmp) / "warm")}))  # not timed
        for r in range(args.repeats):
            for on in (True, False) if r % 2 == 0 else (False, True):
                out = Path(tmp) / f"run{r}{on}"
                cfg = TrainConfig.from_layers(
                    {
                        "data": str(data),
                        "flow": args.flow,
                        "steps": args.steps,
                        "seed": 0,
                        "quiet": True,
                        "plots": False,
                        "out": str(out),
                        "defensive": on,
                    }
                )
                start = time.perf_counter()
                res = start_run(cfg)
                assert res is not None
                times[on]["run"].append(time.perf_counter() - start)
                fit = json.loads((out / "results.json").read_text())["seconds"]  # the trainer's
                times[on]["step"].append(fit / max(res.outcome.step, 1))
                model = ff.load(out)
                with torch.no_grad():
                    start = time.perf_counter()
                    model.log_prob(x)
                    times[on]["log_prob"].append(time.perf_counter() - start)
                print(f"repeat {r} defensive={on}: {type(model).__name__}", flush=True)
    print(f"\n{args.rows} x 8 rows, {args.flow}, {args.steps} steps, median of {args.repeats}:")
    print("| configuration | s / training step | whole run, s | log_prob of all rows, s |")
    print("|---|---|---|---|")
    for on in (False, True):
        t = {k: statistics.median(v) for k, v in times[on].items()}
        name = "--defensive (mixture)" if on else "--no-defensive (flow alone, as before)"
        print(f"| {name} | {t['step']:.5f} | {t['run']:.2f} | {t['log_prob']:.3f} |")


if __name__ == "__main__":
    main()
