"""TarFlow against Glow and multiscale RealNVP on scikit-learn digits: test bits/dim at a
wall-clock budget, each trained by the command line (``flowforge train``) in turn, in one
process, so the machine's load is shared alike.

Usage:
    python benchmarks/tarflow_digits.py                          # the table of the README
    python benchmarks/tarflow_digits.py --only tarflow --json out.json
    python benchmarks/tarflow_digits.py --only --seeds 0 1 --common "--epochs 30" \\
        --extra "tarflow-p1=--flow tarflow --flow-options '{\\"patch\\": 1}'"

Each entry is a list of ``flowforge train`` flags on ``--data digits`` (``--common`` flags
are added to every entry); the table gives the wall-clock and CPU seconds of the run (data
loading and evaluation included), the steps, the test bits/dim (uniform dequantization of the
clean test images, 2 standard errors) and the training images' bits/dim under the same
dequantization, so the gap between the two shows overfitting.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: name -> flags after ``flowforge train --data digits`` (CLI defaults otherwise).
RUNS: dict[str, str] = {
    "glow": "--flow glow",
    "multiscale_realnvp": "--flow multiscale_realnvp",
    "tarflow": "--flow tarflow",
}


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def train_bpd(out: Path) -> float:
    """The run's bits/dim on its own training images (uniform dequantization, the run's seed)."""
    from flowforge.runs import open_run
    from flowforge.train.run import load_data, run_config, test_summary

    run = open_run(out)
    cfg = run_config(run.record, str(run.files.config))
    ds = load_data(cfg, run.spec, run.record)
    return float(test_summary(run.flow, ds, cfg, "train").to_dict()["bpd"])


def train(flags: str, out: Path, seed: int) -> dict[str, float]:
    """One ``flowforge train`` run: its wall and CPU seconds, steps, test and train bits/dim."""
    cmd = [sys.executable, "-m", "flowforge", "train", "--data", "digits", "--quiet"]
    cmd += ["--seed", str(seed), "--out", str(out), *shlex.split(flags)]
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    res = json.loads((out / "results.json").read_text())
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "steps": res["steps"],
        "bpd": res["test"]["bpd"],
        "bpd_err": res["test"]["bpd_err"],
        "train_bpd": train_bpd(out),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="names of RUNS to run")
    ap.add_argument("--extra", nargs="*", default=[], help="NAME=FLAGS entries to add")
    ap.add_argument("--common", default="", help="flags added to every entry")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--json", default=None, help="append the rows to this JSON-lines file")
    ap.add_argument("--out", default=None, help="keep the run directories here")
    args = ap.parse_args(argv)
    runs = {k: v for k, v in RUNS.items() if args.only is None or k in args.only}
    for entry in args.extra:
        name, _, flags = entry.partition("=")
        runs[name] = flags
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        print("| run | seed | flags | wall s | CPU s | steps | test bits/dim | train bits/dim |")
        print("|---|---|---|---|---|---|---|---|")
        for seed in args.seeds:
            for name, flags in runs.items():
                flags = f"{flags} {args.common}".strip()
                r = train(flags, root / f"{name}-{seed}", seed)
                row = {"name": name, "seed": seed, "flags": flags, **r}
                print(
                    f"| {name} | {seed} | `{flags}` | {r['seconds']:.0f} | "
                    f"{r['cpu_seconds']:.0f} | {r['steps']} | {r['bpd']:.3f} ± "
                    f"{r['bpd_err']:.3f} | {r['train_bpd']:.3f} |",
                    flush=True,
                )
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
