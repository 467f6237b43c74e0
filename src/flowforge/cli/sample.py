"""``flowforge sample``: draw samples from a run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flowforge.cli._common import refuse_context, seed, vocoder_settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sa = sub.add_parser(
        "sample",
        help="draw samples from a run",
        description="Draw samples in the data's units (.npy, .csv; .png for images and 2-D data).",
    )
    sa.add_argument("run", metavar="RUN", help="run directory")
    sa.add_argument("-n", "--num", type=int, default=None, help="number of samples (default: 1000)")
    sa.add_argument(
        "-o",
        "--output",
        default="-",
        help="output file: .npy, .csv or .png; - (the default) writes CSV to stdout, like score; "
        "with --mel-from a .wav file",
    )
    sa.add_argument(
        "--mel-from",
        metavar="CLIP.wav",
        help="vocoder runs: resynthesise this WAV clip from its own mel frames (computed with the "
        "run's sample rate, bands and hop) and write it to -o FILE.wav",
    )
    sa.add_argument(
        "--mel-gain",
        type=int,
        default=None,
        metavar="ROUNDS",
        help="with --mel-from: rounds of the mel gain after the flow's draw (per frame and mel "
        "band, the gain that gives the output the clip's mel, phases kept); 0 turns it off "
        "(default: the run's, chosen on validation clips; 0 for runs made before it)",
    )
    sa.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="scale of the base samples (default: 1; with --mel-from the run's chosen temperature)",
    )
    sa.add_argument(
        "--denoise",
        action="store_true",
        help="move each sample one step along the flow's score, x + sigma^2 grad log p(x), "
        "sigma the run's training --noise (TarFlow's denoising)",
    )
    sa.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        metavar="K",
        help="class-conditional runs (train --condition class): samples of class K "
        "(default: the classes in turn)",
    )
    sa.add_argument(
        "--guidance",
        type=float,
        default=0.0,
        help="TarFlow runs: guidance weight w against the weak model: the flow given the null "
        "class (class-conditional runs) with attention logits divided by "
        "--attention-temperature (default: 0, none)",
    )
    sa.add_argument(
        "--attention-temperature",
        type=float,
        default=None,
        help="the weak model's attention temperature for --guidance (default: 1.5, or 1 for "
        "class-conditional runs)",
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
    from flowforge.eval.score import run_classes, sample_rows
    from flowforge.runs import RunError, check_output, open_run, write_table
    from flowforge.train.run import resolve_device

    out = None if args.output == "-" else Path(args.output)
    if args.mel_from is not None:
        return _resynthesize(args, out)
    if args.mel_gain is not None:
        raise RunError("--mel-gain is the vocoder's last step; it applies with --mel-from only")
    if out is not None:
        check_output(out, (".npy", ".csv", ".png"))
    run = open_run(args.run, resolve_device(args.device))
    classes = run_classes(run)
    if not classes:  # a class-conditional run takes --class; any other context is refused
        refuse_context(run, args.run, "sample", "--mel-from")
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
        1000 if args.num is None else args.num,
        temperature=1.0 if args.temperature is None else args.temperature,
        seed=args.seed,
        denoise=args.denoise,
        guidance=args.guidance,
        attention_temperature=(1.0 if classes else 1.5)
        if args.attention_temperature is None
        else args.attention_temperature,
        label=args.label,
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
    print(f"wrote {x.shape[0]} samples to {out}", file=sys.stderr)  # as score: beside messages
    return 0


def _resynthesize(args: argparse.Namespace, out: Path | None) -> int:
    from flowforge.eval.clip import resynthesize_clip, wav_bytes
    from flowforge.runs import RunError, atomic_write_bytes, check_output, open_run
    from flowforge.train.run import resolve_device

    unused = [
        f
        for f, on in (
            ("--num", args.num is not None),
            ("--denoise", args.denoise),
            ("--guidance", bool(args.guidance)),
        )
        if on
    ]
    if unused:
        raise RunError(f"--mel-from resynthesises one clip; {', '.join(unused)} does not apply")
    if out is None:
        raise RunError("--mel-from writes a WAV file; give -o FILE.wav")
    if args.mel_gain is not None and args.mel_gain < 0:
        raise RunError(
            f"--mel-gain takes a number of rounds, 0 or more (0 turns the gain off); "
            f"got {args.mel_gain}"
        )
    check_output(out, (".wav",))
    run = open_run(args.run, resolve_device(args.device))
    settings, audio = vocoder_settings(run, args.run, "--mel-from")
    chosen = audio.get("vocoder") or {}
    temperature = args.temperature
    if temperature is None:
        temperature = float(chosen.get("temperature") or 0.6)
    rounds = args.mel_gain
    if rounds is None:  # runs made before the gain have no setting: none, as they ran
        rounds = int(chosen.get("mel_gain_rounds") or 0)
    wave = resynthesize_clip(
        run.flow, args.mel_from, settings, temperature, seed=args.seed, mel_gain=rounds
    )
    atomic_write_bytes(out, wav_bytes(wave, settings.rate))
    print(
        f"wrote the resynthesis of {args.mel_from} ({wave.size} samples at {settings.rate} Hz, "
        f"temperature {temperature:g}, mel gain {rounds} rounds) to {out}",
        file=sys.stderr,
    )
    return 0
