"""``flowforge score``: the log-likelihood of every row of a file."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flowforge.cli._common import (
    EXIT_TRAINING_FAILED,
    refuse_context,
    seed,
    vocoder_settings,
)

if TYPE_CHECKING:
    from flowforge.runs import Run


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sc = sub.add_parser(
        "score",
        help="per-row log-likelihood of a file (anomaly scores)",
        description=(
            "Write log p(x) in nats for every row of a .csv/.npy file, in the data's original "
            "units: a run trained on standardised data applies its saved training statistics "
            "and adds their log-Jacobian, so the score is the log-density of the raw row. For "
            "image runs the rows are integer pixel levels 0..K-1 (any numeric dtype; fractions and [0, 1) floats are refused) and the score is log p(u) of the "
            "uniformly dequantized row (seeded); a class-conditional run (--condition class) scores "
            "log p(u | class) given --class K or each row's --class-column. Low scores flag "
            "anomalies."
        ),
    )
    sc.add_argument("run", metavar="RUN", help="run directory")
    sc.add_argument(
        "--input",
        "-i",
        required=True,
        help="rows to score: .csv or .npy (a run trained with --columns takes the same columns); "
        "for a vocoder run a .wav clip, scored per segment given its own mel frames",
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
    sc.add_argument("-o", "--output", help="output file (.csv or .npy); - or none: CSV on stdout")
    sc.add_argument(
        "--labels",
        metavar="COLUMN",
        help="a column of the input that marks anomalies (0 normal / 1 anomaly, or 1 normal / "
        "-1 anomaly): it is not a model input; prints AUROC and average precision of the "
        "score. Its name with a header, else its 0-based index",
    )
    given = sc.add_mutually_exclusive_group()
    given.add_argument(
        "--class",
        dest="label",
        type=int,
        metavar="K",
        help="a class-conditional run (--condition class): score every row given class K",
    )
    given.add_argument(
        "--class-column",
        metavar="COLUMN",
        help="a class-conditional run: a column of the input that holds each row's class "
        "0..K-1 (not a model input); each row is scored given its own class. Its name with a "
        "header, else its 0-based index",
    )
    flag = sc.add_mutually_exclusive_group()
    flag.add_argument(
        "--threshold",
        type=_finite,
        metavar="T",
        help="add a column 'flag': -1 (anomaly) where log p(x) < T, else +1",
    )
    flag.add_argument(
        "--contamination",
        type=_share,
        metavar="F",
        help="add a column 'flag': -1 for the share F (0 < F < 1) of rows with the lowest "
        "log p(x), else +1",
    )
    sc.add_argument(
        "--plot",
        metavar="FILE.png",
        help="a histogram of the scores (normal against anomalous rows with --labels)",
    )
    sc.add_argument(
        "--seed", type=seed, default=None, help="image runs: dequantization seed (default: 0)"
    )
    sc.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from flowforge.eval.score import (
        class_contexts,
        read_labels,
        read_rows,
        row_class_contexts,
        run_classes,
        score_rows,
    )
    from flowforge.runs import RunError, check_output, open_run, read_run_record, write_table
    from flowforge.train.run import resolve_device, run_config
    from flowforge.vi.run import is_vi_record

    out = Path(args.output) if args.output not in (None, "-") else None
    if out is not None:
        check_output(out, (".npy", ".csv"))
    if args.plot is not None:
        check_output(Path(args.plot), (".png",))
    if is_vi_record(read_run_record(args.run)):
        raise RunError(
            f"{args.run} is a variational-inference run (flowforge vi): it has no data to score "
            f"against; score needs a density run trained on data (flowforge train), and a VI "
            f"run is read with flowforge eval / sample"
        )
    if args.header is not None and Path(args.input).suffix.lower() == ".npy":
        raise RunError(
            f"{args.input}: a .npy file has no header row; --header applies to CSV files"
        )
    run = open_run(args.run, resolve_device(args.device))
    clip = Path(args.input).suffix.lower() in (".wav", ".flac")
    if clip or (run.spec.kind == "audio" and run.spec.kwargs.get("context")):
        return _score_clip(args, run, out)
    classes = run_classes(run)
    if classes and args.label is None and args.class_column is None:
        raise RunError(
            f"{args.run} holds a class-conditional flow (--condition class): give the class "
            f"of the rows, --class K for all of them or --class-column COLUMN for each its own"
        )
    if not classes:
        if args.label is not None or args.class_column is not None:
            flag = "--class" if args.label is not None else "--class-column"
            raise RunError(
                f"{flag} needs a class-conditional run (flowforge train --condition class); "
                f"{args.run} was trained without classes"
            )
        refuse_context(run, args.run, "score", "--input")
    if args.seed is not None and run.spec.kind != "image":
        raise RunError(
            f"--seed is the dequantization seed of an image run; it does nothing for "
            f"{run.spec.kind} data"
        )
    columns = run_config(run.record, str(run.files.config)).column_list()
    # the columns of training, by name; the label column is never a model input
    skipped = {"--labels": args.labels, "--class-column": args.class_column}
    skipped = {flag: col for flag, col in skipped.items() if col is not None}
    x = read_rows(run, args.input, columns, args.header, exclude=skipped)
    context = None
    if args.class_column is not None:
        values = read_labels(args.input, args.class_column, args.header, "--class-column")
        context = row_class_contexts(run, values, f"--class-column {args.class_column!r}")
    elif args.label is not None:  # refuses a class out of range in one line
        context = class_contexts(run, x.shape[0], args.label)
    scores = score_rows(run, x, origin=str(args.input), seed=args.seed or 0, context=context)
    ll = scores.numpy()
    table, names, threshold = _with_flags(ll, args.threshold, args.contamination)
    is_anomaly = None if args.labels is None else _labels(args, ll.shape[0])
    if out is None:
        sys.stdout.write(
            ",".join(names) + "\n" + "".join(",".join(f"{v:.9g}" for v in r) + "\n" for r in table)
        )
    else:
        write_table(out, table if len(names) > 1 else ll, names)
        print(f"wrote {ll.shape[0]} log-likelihoods to {out}", file=sys.stderr)
    if threshold is not None:
        n_flagged = int((table[:, 1] < 0).sum())
        print(
            f"flagged {n_flagged} of {ll.shape[0]} rows (log p(x) < {threshold:.9g})",
            file=sys.stderr,
        )
    if is_anomaly is not None:
        from flowforge.eval.anomaly import detection_metrics

        roc, ap = detection_metrics(ll, is_anomaly)
        print(  # the scores may be on stdout: the metrics go beside the other messages
            f"{int(is_anomaly.sum())} anomalies in {ll.shape[0]} rows: AUROC {roc:.4f}, "
            f"average precision {ap:.4f} (chance {is_anomaly.mean():.4f})",
            file=sys.stderr if out is None else sys.stdout,
        )
    if args.plot is not None:
        from flowforge.train.plots import score_histogram

        try:
            score_histogram(ll, is_anomaly, args.plot, threshold)
        except ValueError as e:
            raise RunError(f"--plot {args.plot}: {e}") from None
        print(f"wrote the score histogram to {args.plot}", file=sys.stderr)
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


def _score_clip(args: argparse.Namespace, run: Run, out: Path | None) -> int:
    """A vocoder run's log-likelihood per sample of each whole segment of a clip, given the
    segment's own mel frames."""
    from flowforge.eval.clip import clip_nats_per_sample
    from flowforge.runs import RunError, write_table

    settings, _ = vocoder_settings(run, args.run, "--input")
    table_only = (
        ("--header", args.header is not None),
        ("--labels", args.labels is not None),
        ("--class", args.label is not None),
        ("--class-column", args.class_column is not None),
        ("--threshold", args.threshold is not None),
        ("--contamination", args.contamination is not None),
        ("--plot", args.plot is not None),
    )
    unused = [flag for flag, given in table_only if given]
    if unused:
        raise RunError(f"a clip is scored per segment; {', '.join(unused)} applies to table rows")
    nats = clip_nats_per_sample(run.flow, args.input, settings, seed=args.seed or 0)
    if out is None:
        sys.stdout.write("nats_per_sample\n" + "".join(f"{v:.9g}\n" for v in nats))
    else:
        write_table(out, nats, ["nats_per_sample"])
    print(
        f"{args.input}: {nats.mean():.4f} nats per sample given its own mel ({nats.size} "
        f"segments of {settings.length} samples at {settings.rate} Hz)",
        file=sys.stderr,
    )
    return 0 if np.isfinite(nats).all() else EXIT_TRAINING_FAILED


def _with_flags(
    ll: np.ndarray, threshold: float | None, contamination: float | None
) -> tuple[np.ndarray, list[str], float | None]:
    """The output table (scores, and a flag column when a threshold is asked for), its column
    names and the threshold. Non-finite scores rank lowest (flagged first)."""
    if threshold is None and contamination is None:
        return ll[:, None], ["log_likelihood"], None
    ranked = np.where(np.isfinite(ll), ll, -np.inf)
    if contamination is not None:
        from flowforge.eval.anomaly import fpr_threshold

        lowest = -np.finfo(np.float64).max  # fpr_threshold takes finite scores only
        threshold = fpr_threshold(np.where(np.isfinite(ranked), ranked, lowest), contamination)
    assert threshold is not None
    flags = np.where(ranked < threshold, -1.0, 1.0)
    return np.stack([ll, flags], axis=1), ["log_likelihood", "flag"], threshold


def _labels(args: argparse.Namespace, n: int) -> np.ndarray:
    from flowforge.data import DataError
    from flowforge.eval.anomaly import anomaly_labels
    from flowforge.eval.score import read_labels

    values = read_labels(args.input, args.labels, args.header)
    try:
        flags = anomaly_labels(values)
    except ValueError as e:
        raise DataError(f"--labels {args.labels!r} in {args.input}: {e}") from None
    assert flags.shape[0] == n
    return flags
