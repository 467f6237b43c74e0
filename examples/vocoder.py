"""A CPU-sized WaveGlow vocoder on the built-in speech set, against Griffin-Lim from the same mel.

Trains through ``flowforge train`` (the same engine, options and run directory as the command
line): ``--flow waveglow --data speech`` conditioned on each segment's 40-band log-mel frames,
one run per seed. Each run resynthesises 16 held-out test segments from their mel (the
temperature and the rounds of the mel gain after the draw, ``flowforge.eval.audio.match_mel``,
chosen on validation segments) and reports the log-spectral distance (dB, 80-band mel of the
resynthesis against the original) of the vocoder's output, of the flow's draw before the gain
and of Griffin-Lim's waveform from the same mel (librosa);
with ``--source griffin-lim`` the flow is centred on a torch Griffin-Lim estimate from the mel
and models the residual (its STFT magnitudes refined by a small network, ``--source-refine``
channels, fitted by a log-mel loss on the training segments before the flow trains; 0 for
none), and the estimate's own distance is reported too. Prints a table and
writes it as ``vocoder.json`` into ``--out``; ``--figure`` copies the first run's spectrograms.

    PYTHONPATH=src python examples/vocoder.py --steps 200 --seeds 0 1 --out runs/vocoder

References:
    Prenger, Valle, Catanzaro (2019). WaveGlow. arXiv:1811.00002.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path
from typing import Any

from flowforge.cli import main as flowforge


def train(args: argparse.Namespace, seed: int, out: Path) -> dict[str, Any]:
    """One ``flowforge train`` run of the vocoder; its results."""
    refine = {"source_refine": args.source_refine} if args.source != "none" else {}
    argv = [
        "train", "--flow", "waveglow", "--data", "speech", "--condition", "mel",
        "--steps", str(args.steps), "--ema-decay", str(args.ema_decay),
        "--eval-every", str(max(1, args.steps // 2)), "--seed", str(seed),
        "--threads", str(args.threads), "--out", str(out), "--overwrite", "--quiet",
        *shlex.split(args.train_options),
        "--flow-options", json.dumps(
            {"source": args.source, **refine, **json.loads(args.flow_options)}
        ),
    ]  # fmt: skip
    if flowforge(argv) != 0:
        raise SystemExit(f"flowforge {' '.join(argv)} failed")
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="optimisation steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--source", choices=("none", "griffin-lim"), default="griffin-lim")
    parser.add_argument(
        "--source-refine", type=int, default=128, help="channels of the source's refinement"
    )
    parser.add_argument("--ema-decay", type=float, default=0.0)
    parser.add_argument("--flow-options", default="{}", help="more WaveGlow options (JSON)")
    parser.add_argument(
        "--train-options", default="", help="more flowforge train options, e.g. '--lr 5e-4'"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/vocoder")
    parser.add_argument("--figure", help="copy the first run's spectrograms.png here")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        results = train(args, seed, out / f"seed{seed}")
        audio = results["audio"]
        voc = audio["vocoder"]
        rows.append(
            {
                "seed": seed,
                "steps": results["steps"],
                "seconds": results["seconds"],
                "test_nats_per_sample": audio["test_ll_nats_per_sample"],
                "temperature": voc["temperature"],
                "mel_gain_rounds": voc["mel_gain_rounds"],
                "lsd_db": voc["lsd_db"],
                "flow_lsd_db": voc["flow_lsd_db"],
                "lsd_db_err": voc["lsd_db_err"],
                "source_lsd_db": voc.get("source_lsd_db"),
                "source_gain_lsd_db": voc.get("source_gain_lsd_db"),
                "gain_minus_source_gain_db": voc.get("gain_minus_source_gain_db"),
                "gain_minus_source_gain_db_err": voc.get("gain_minus_source_gain_db_err"),
                "val_lsd_db": voc["val_lsd_by_mel_gain"][str(voc["mel_gain_rounds"])],
                "val_source_gain_lsd_db": voc.get("val_source_lsd_by_mel_gain", {}).get(
                    str(voc["mel_gain_rounds"])
                ),
                "griffin_lim_lsd_db": voc["griffin_lim_lsd_db"],
                "synthesis_samples_per_s": audio["synthesis_samples_per_s"],
            }
        )
    (out / "vocoder.json").write_text(json.dumps({"source": args.source, "runs": rows}, indent=2))
    print(
        "seed | steps | s | test nats/sample | T | gain rounds | LSD dB, the vocoder | "
        "the draw alone | source alone | source + the same gain | vocoder - (source + gain), "
        "paired | Griffin-Lim | samples/s"
    )
    for r in rows:
        source = "-" if r["source_lsd_db"] is None else f"{r['source_lsd_db']:.2f}"
        gain = "-" if r["source_gain_lsd_db"] is None else f"{r['source_gain_lsd_db']:.2f}"
        diff = (
            "-"
            if r["gain_minus_source_gain_db"] is None
            else f"{r['gain_minus_source_gain_db']:+.3f} +- {r['gain_minus_source_gain_db_err']:.3f}"
        )
        print(
            f"{r['seed']} | {r['steps']} | {r['seconds']:.0f} | {r['test_nats_per_sample']:.3f} | "
            f"{r['temperature']} | {r['mel_gain_rounds']} | {r['lsd_db']:.2f} +- "
            f"{r['lsd_db_err']:.2f} | {r['flow_lsd_db']:.2f} | {source} | {gain} | {diff} | "
            f"{r['griffin_lim_lsd_db']:.2f} | {r['synthesis_samples_per_s']:,.0f}"
        )
    if args.figure:
        shutil.copyfile(out / f"seed{args.seeds[0]}" / "spectrograms.png", args.figure)


if __name__ == "__main__":
    main()
