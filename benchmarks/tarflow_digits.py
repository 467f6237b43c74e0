"""TarFlow against Glow and multiscale RealNVP on scikit-learn digits: test bits/dim at a
wall-clock budget, each trained by the command line (``flowforge train``) in turn, in one
process, so the machine's load is shared alike.

Usage:
    python benchmarks/tarflow_digits.py                          # the table of the README
    python benchmarks/tarflow_digits.py --only tarflow --json out.json
    python benchmarks/tarflow_digits.py --extra "tarflow-p1=--flow tarflow --flow-options '{\\"patch\\": 1}'"

Each entry is a list of ``flowforge train`` flags on ``--data digits``; the table gives the
wall-clock seconds of the run (data loading and evaluation included), the steps and the test
bits/dim (uniform dequantization of the clean test images, 2 standard errors).
"""

from __future__ import annotations

import argparse
import json
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


def train(flags: str, out: Path, seed: int) -> dict[str, float]:
    """One ``flowforge train`` run: its wall seconds, steps and test bits/dim."""
    cmd = [sys.executable, "-m", "flowforge", "train", "--data", "digits", "--quiet"]
    cmd += ["--seed", str(seed), "--out", str(out), *shlex.split(flags)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    res = json.loads((out / "results.json").read_text())
    return {
        "seconds": seconds,
        "steps": res["steps"],
        "bpd": res["test"]["bpd"],
        "bpd_err": res["test"]["bpd_err"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="*", default=None, help="names of RUNS to run")
    ap.add_argument("--extra", nargs="*", default=[], help="NAME=FLAGS entries to add")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the rows to this file")
    ap.add_argument("--out", default=None, help="keep the run directories here")
    args = ap.parse_args(argv)
    runs = {k: v for k, v in RUNS.items() if args.only is None or k in args.only}
    for entry in args.extra:
        name, _, flags = entry.partition("=")
        runs[name] = flags
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        print("| run | flags | seconds | steps | test bits/dim |\n|---|---|---|---|---|")
        for name, flags in runs.items():
            r = train(flags, root / name, args.seed)
            rows.append({"name": name, "flags": flags, **r})
            print(
                f"| {name} | `{flags}` | {r['seconds']:.0f} | {r['steps']} | "
                f"{r['bpd']:.3f} ± {r['bpd_err']:.3f} |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
