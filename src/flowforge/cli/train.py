"""``flowforge train``: train a flow and write a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from flowforge.cli._common import positive_int, warn_worse_than_gaussian

if TYPE_CHECKING:
    from flowforge.train.run import TrainResult


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flowforge.flows import PRESETS
    from flowforge.train.config import add_arguments
    from flowforge.train.model import FLOW_MATCHING_DEFAULTS, IMAGE_TRAINING_DEFAULTS

    def listed(defaults: dict[str, float]) -> str:
        return ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in defaults.items())

    image_defaults = listed(IMAGE_TRAINING_DEFAULTS)

    train = sub.add_parser(
        "train",
        help="train a flow and write a run directory",
        description=(
            "Train a flow and write a run directory (config.json, model.safetensors, "
            "checkpoint.safetensors, metrics.jsonl, results.json, plots). Maximum likelihood by "
            "default (ffjord: with the RNODE weights --kinetic / --jacobian and the solves' NFE "
            "in the metrics), or --objective flow-matching for ffjord; image runs can learn "
            "their dequantization (--dequantization variational). "
            "With no options: NSF on 8gaussians, well under a minute on 2 CPU cores. Image "
            "presets (glow, multiscale_realnvp, tarflow) on image data (digits, mnist, cifar10) train "
            f"with their own defaults ({image_defaults}; flags override them), and so does "
            f"flow matching ({listed(FLOW_MATCHING_DEFAULTS)}). Every "
            "option can also be a key of --config FILE.toml; flags override the file."
        ),
    )
    train.add_argument("--config", metavar="FILE.toml", help="options from a TOML file")
    train.add_argument(
        "--resume", metavar="RUN", help="continue a run directory from its last checkpoint"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        default=False,
        help="replace the run in --out: only a flowforge run, and only the files it wrote (a "
        "folder that is not a run is refused and left as it is)",
    )
    train.add_argument(
        "--nproc-per-node",
        type=positive_int,
        metavar="N",
        help="train data-parallel in N processes on this node (torchrun --standalone "
        "--nproc-per-node N -m flowforge train ..., with the options checked once before any "
        "process starts, and a failure reported in one line)",
    )
    add_arguments(train, choices={"flow": sorted(PRESETS)})


def run(args: argparse.Namespace) -> int:
    from flowforge.fit.distributed import launch_from_env, launch_local, shutdown

    nproc = getattr(args, "nproc_per_node", None)
    if nproc is not None and nproc > 1 and launch_from_env() is None:
        _train(args, check_only=True)  # bad options: one line here, before any rank starts
        return launch_local(nproc, list(args.argv))
    try:
        result = _train(args)
    except BaseException:
        shutdown(finished=False)  # leave a torchrun launch's process group (no-op otherwise)
        raise
    shutdown()
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    _report(result)
    return 0


def _train(args: argparse.Namespace, check_only: bool = False) -> TrainResult | None:
    """Train as the options say (``check_only``: check them, and return ``None``)."""
    from flowforge.train.config import ConfigError, TrainConfig, flags_to_dict, read_toml
    from flowforge.train.model import preset_defaults
    from flowforge.train.run import resume_run, start_run

    flags = flags_to_dict(args)
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be used with --resume (the run has its config)")
        if args.overwrite:
            raise ConfigError(
                "--overwrite starts a new run in --out; it cannot be used with --resume "
                "(which continues one)"
            )
        _refuse_vi_run(args.resume)
        if check_only:
            return None
        result = resume_run(args.resume, flags)
    else:
        toml = read_toml(args.config) if args.config else {}
        source = f"{args.config}: " if args.config else ""
        asked = TrainConfig.from_layers(toml, source=source).updated(flags)
        flow = asked.flow
        # the preset's (and objective's) own defaults go under the file and the flags (auto:
        # each trial's own)
        defaults = {} if flow == "auto" else preset_defaults(flow, asked.objective, asked.data)
        cfg = TrainConfig.from_layers(defaults, toml, source=source).updated(flags)
        if flow != "auto" and "time_budget" in asked.given:
            raise ConfigError(
                f"--time-budget is the time of the --flow auto search; it does nothing with "
                f"--flow {flow}"
            )
        if cfg.out is not None and Path(cfg.out).exists() and not Path(cfg.out).is_dir():
            raise ConfigError(f"--out {cfg.out} is a file; the run directory must be a folder")
        if flow == "auto":  # a search over presets and sizes by validation NLL
            from flowforge.fit.distributed import launch_from_env
            from flowforge.train.auto import auto_run

            launch = launch_from_env()
            if check_only or (launch is not None and launch[1] > 1):  # each rank would search
                raise ConfigError(
                    "--flow auto runs in one process, not under torchrun: search with "
                    "`flowforge train --flow auto`, then train the chosen preset under torchrun"
                )

            return auto_run(cfg, overwrite=args.overwrite)
        if check_only:
            return None
        result = start_run(cfg, overwrite=args.overwrite)
    return result


def _refuse_vi_run(path: str) -> None:
    """``--resume`` of a ``flowforge vi`` run: say so and how to continue it."""
    from flowforge.runs import ConfigError, RunError, read_run_record
    from flowforge.vi.run import is_vi_record

    try:
        record = read_run_record(path)
    except RunError:
        return  # resume_run names what is missing
    if is_vi_record(record):
        raise ConfigError(
            f"{path} is a variational-inference run (flowforge vi), not a training run: "
            f"continue it with flowforge vi --resume {path}"
        )


def _report(result: TrainResult) -> None:
    out = result.outcome
    print(
        f"trained for {out.step} steps ({out.reason}); best validation NLL "
        f"{out.best_val_nll:.4f} at step {out.best_step}"
    )
    test = result.test
    line = f"test NLL: {test.nll:.4f} ± {test.nll_err:.4f} nats ({test.n} rows)"
    base = result.baseline
    print(
        line
        if base is None
        else f"{line}; Gaussian baseline {base.nll:.4f} ± {base.nll_err:.4f}{base.suffix()}"
    )
    warn_worse_than_gaussian("flowforge train", "test", test.nll, base)
    if test.bpd is not None:
        print(f"test bits/dim: {test.bpd:.4f} ± {test.bpd_err:.4f}")
    if result.audio:
        a = result.audio
        print(
            f"test log-likelihood: {a['test_ll_nats_per_sample']:.4f} nats per sample of the "
            f"waveform in [-1, 1) ({a['bits_per_sample']:.4f} bits per 16-bit sample); "
            f"synthesis {a['synthesis_samples_per_s']:,.0f} samples/s on {a['threads']} CPU "
            f"thread(s), {a['real_time_factor']:.1f}x real time at {a['sample_rate']} Hz"
        )
        v = a.get("vocoder")
        if v:
            estimate = v.get("source_lsd_db")
            gained = v.get("source_gain_lsd_db")
            with_gain = (
                ""
                if gained is None
                else f", with the same gain {gained:.2f} dB (the vocoder "
                f"{v['gain_minus_source_gain_db']:+.3f} ± {v['gain_minus_source_gain_db_err']:.3f}"
                " dB from it, paired)"
            )
            print(
                f"resynthesis of {v['test_segments']} test segments from their mel, log-spectral "
                f"distance: the vocoder {v['lsd_db']:.2f} dB (temperature {v['temperature']:g}, "
                f"mel gain {v.get('mel_gain_rounds', 0)} rounds; the draw before the gain "
                f"{v.get('flow_lsd_db', v['lsd_db']):.2f} dB)"
                + ("" if estimate is None else f"; its source estimate alone {estimate:.2f} dB")
                + with_gain
                + f"; Griffin-Lim from the same mel {v['griffin_lim_lsd_db']:.2f} dB"
            )
    print(f"run directory: {result.run_dir}")
