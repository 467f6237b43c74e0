"""``flowforge sample``: draw samples from a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowforge.cli._common import seed


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sa = sub.add_parser(
        "sample",
        help="draw samples from a run",
        description="Draw samples in the data's units (.npy, .csv; .png for images and 2-D data).",
    )
    sa.add_argument("run", metavar="RUN", help="run directory")
    sa.add_argument("-n", "--num", type=int, default=1000, help="number of samples (default: 1000)")
    sa.add_argument(
        "-o",
        "--output",
        default="-",
        help="output file: .npy, .csv or .png; - (the default) writes CSV to stdout, like score",
    )
    sa.add_argument(
        "--temperature", type=float, default=1.0, help="scale of the base samples (default: 1)"
    )
    sa.add_argument(
        "--denoise",
        action="store_true",
        help="move each sample one step along the flow's score, x + sigma^2 grad log p(x), "
        "sigma the run's training --noise (TarFlow's denoising)",
    )
    sa.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="TarFlow runs: guidance weight w against the flow with attention logits divided "
        "by --attention-temperature (default: 0, none)",
    )
    sa.add_argument(
        "--attention-temperature",
        type=float,
        default=None,
        help="the weak model's attention temperature for --guidance (default: 1.5)",
    )
    sa.add_argument(
        "--seed",
        type=seed,
        default=0,
        help="seed of the base samples: the same seed gives the same samples (default: 0)",
    )
    sa.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "auto"), help="device (default: cpu)"
    )


def run(args: argparse.Namespace) -> int:
    from flowforge.eval.score import sample_rows
    from flowforge.runs import RunError, check_output, open_run, write_table
    from flowforge.train.run import resolve_device

    out = None if args.output == "-" else Path(args.output)
    if out is not None:
        check_output(out, (".npy", ".csv", ".png"))
    run = open_run(args.run, resolve_device(args.device))
    if run.spec.kwargs.get("context"):  # a vocoder: p(segment | its mel frames)
        raise RunError(
            f"{args.run} holds a flow conditioned on each example's mel frames (a vocoder); "
            "flowforge sample draws from unconditional flows only (the run's resynthesis of its test "
            "clips is in test*_resynthesis.wav)"
        )
    image = run.spec.kind == "image"
    if args.attention_temperature is not None and not args.guidance:
        raise RunError(
            "--attention-temperature is the weak model's temperature of --guidance; it does "
            "nothing without --guidance"
        )
    if out is not None and out.suffix.lower() == ".png" and not (image or run.spec.features == 2):
        raise RunError("PNG output needs image or 2-D data; use .npy or .csv")
    x = sample_rows(
        run,
        args.num,
        temperature=args.temperature,
        seed=args.seed,
        denoise=args.denoise,
        guidance=args.guidance,
        attention_temperature=1.5
        if args.attention_temperature is None
        else args.attention_temperature,
    )
    names = run.spec.columns or [f"x{i}" for i in range(run.spec.features)]
    if out is None:  # CSV on stdout (images flattened, as in a .csv file)
        flat = x.reshape(x.shape[0], -1)
        sys.stdout.write(",".join(names) + "\n")
        for start in range(0, flat.shape[0], 4096):  # a few rows at a time, not one huge string
            rows = flat[start : start + 4096].tolist()
            sys.stdout.write("".join(",".join(f"{v:.9g}" for v in r) + "\n" for r in rows))
        return 0
    if out.suffix.lower() == ".png":
        from flowforge.train.plots import image_grid, scatter

        if image:
            image_grid(x / max(int(run.spec.levels or 1) - 1, 1), out)
        else:
            scatter(x, out)
    else:
        write_table(out, x.numpy(), names)
    print(f"wrote {args.num} samples to {out}", file=sys.stderr)  # as score: beside messages
    return 0
