"""``flowforge score``: the log-likelihood of every row of a file."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from flowforge.cli._common import EXIT_TRAINING_FAILED


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sc = sub.add_parser(
        "score",
        help="per-row log-likelihood of a file (anomaly scores)",
        description=(
            "Write log p(x) in nats for every row of a .csv/.npy file, in the data's original "
            "units: a run trained on standardised data applies its saved training statistics "
            "and adds their log-Jacobian, so the score is the log-density of the raw row. For "
            "image runs the rows are pixel levels 0..K-1 and the score is log p(u) of the "
            "uniformly dequantized row (seeded). Low scores flag anomalies."
        ),
    )
    sc.add_argument("run", metavar="RUN", help="run directory")
    sc.add_argument(
        "--input",
        "-i",
        required=True,
        help="rows to score: .csv or .npy (a run trained with --columns takes the same columns)",
    )
    sc.add_argument(
        "--header",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="CSV input: the first row is column names (--header) or data (--no-header); "
        "default: a header when a cell is not a number, the row is the column numbers, or it "
        "equals the run's column names. With a header, columns are matched to the run's by "
        "name (in any order; missing or extra names are an error); without, by position",
    )
    sc.add_argument("-o", "--output", help="output file (.csv or .npy); default: stdout")
    sc.add_argument("--seed", type=int, default=0, help="image runs: dequantization seed")
    sc.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))


def run(args: argparse.Namespace) -> int:
    from flowforge.eval.score import read_rows, score_rows
    from flowforge.runs import check_output, open_run, write_table
    from flowforge.train.run import resolve_device, run_config

    out = Path(args.output) if args.output else None
    if out is not None:
        check_output(out, (".npy", ".csv"))
    run = open_run(args.run, resolve_device(args.device))
    columns = run_config(run.record, str(run.files.config)).column_list()
    x = read_rows(run, args.input, columns, args.header)  # the columns of training, by name
    ll = score_rows(run, x, origin=str(args.input), seed=args.seed).numpy()
    if out is None:
        sys.stdout.write("log_likelihood\n" + "".join(f"{v:.9g}\n" for v in ll))
    else:
        write_table(out, ll, ["log_likelihood"])
        print(f"wrote {ll.shape[0]} log-likelihoods to {out}", file=sys.stderr)
    bad = [i + 1 for i in range(ll.shape[0]) if not math.isfinite(float(ll[i]))]
    if bad:  # written as nan / -inf, never dropped; a warning and exit status 1
        shown = ", ".join(map(str, bad[:20])) + (" ..." if len(bad) > 20 else "")
        print(
            f"flowforge score: warning: {len(bad)} of {ll.shape[0]} rows have a non-finite "
            f"log-likelihood (data rows {shown}; 1-based, header not counted); their scores "
            f"are nan or -inf",
            file=sys.stderr,
        )
        return EXIT_TRAINING_FAILED
    return 0
