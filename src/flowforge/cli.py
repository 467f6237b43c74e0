"""The ``flowforge`` command line: ``train``, ``eval``, ``sample``, ``score``, ``datasets``, ``vi``.

A thin layer over :mod:`flowforge.train`, :mod:`flowforge.eval`, :mod:`flowforge.runs` and
:mod:`flowforge.data`. Bad input (missing file, unknown dataset or flow, bad values, wrong
dimension, bad option) is reported as one line on stderr with exit status 2 and no traceback;
a training run stopped by a non-finite loss, an evaluation that meets a non-finite
log-likelihood (the rows are named, never skipped), and a ``score`` whose output holds a
non-finite row (written as ``nan`` / ``-inf``, named in a warning on stderr) exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

__all__ = ["main"]

EXIT_BAD_INPUT = 2
EXIT_TRAINING_FAILED = 1


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``flowforge train: error: ...``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    from flowforge.flows import PRESETS
    from flowforge.train.config import add_arguments
    from flowforge.train.model import IMAGE_TRAINING_DEFAULTS

    image_defaults = ", ".join(
        f"--{k.replace('_', '-')} {v:g}" for k, v in IMAGE_TRAINING_DEFAULTS.items()
    )

    parser = _Parser(prog="flowforge", description="Normalizing flows: train, evaluate, sample.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
            "presets (glow, multiscale_realnvp) on image data (digits, mnist, cifar10) train "
            f"with their own defaults ({image_defaults}; flags override them). Every "
            "option can also be a key of --config FILE.toml; flags override the file."
        ),
    )
    train.add_argument("--config", metavar="FILE.toml", help="options from a TOML file")
    train.add_argument(
        "--resume", metavar="RUN", help="continue a run directory from its last checkpoint"
    )
    add_arguments(train, choices={"flow": sorted(PRESETS)})

    ev = sub.add_parser(
        "eval",
        help="test NLL of a run (nats, 2 standard errors; bits/dim for images)",
        description=(
            "Mean negative log-likelihood of a split in nats with a 2-standard-error bar, and "
            "bits/dim for image data. Tabular data standardised during training are scored in "
            "their original units (the standardisation's log-Jacobian is included)."
        ),
    )
    ev.add_argument("run", metavar="RUN", help="run directory")
    ev.add_argument("--split", default="test", choices=("test", "val", "train"))
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--data-dir", help="folder of the on-disk datasets (default: the run's)")
    ev.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ev.add_argument(
        "--samples",
        type=_positive_int,
        default=None,
        help="image runs: noise samples per image of the importance-sampled estimate (default "
        "16); VI runs: draws from q for the diagnostics (default: as in the run's results)",
    )

    sa = sub.add_parser(
        "sample",
        help="draw samples from a run",
        description="Draw samples in the data's units (.npy, .csv; .png for images and 2-D data).",
    )
    sa.add_argument("run", metavar="RUN", help="run directory")
    sa.add_argument("-n", "--num", type=int, default=1000, help="number of samples")
    sa.add_argument("-o", "--output", required=True, help="output file: .npy, .csv or .png")
    sa.add_argument(
        "--temperature", type=float, default=1.0, help="scale of the base samples (default 1)"
    )
    sa.add_argument("--seed", type=int, default=0)
    sa.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))

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

    ds = sub.add_parser(
        "datasets",
        help="list the datasets and where the on-disk ones must be",
        description="Every dataset, its dimension, whether it is available, and for the ones "
        "not shipped the exact files and folder it expects.",
    )
    ds.add_argument("--data-dir", help="folder of the on-disk datasets (default $FLOWFORGE_DATA)")
    ds.add_argument("--json", action="store_true", help="print a JSON list")
    _add_vi_parser(sub)
    return parser


def _add_vi_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from flowforge.flows import PRESETS
    from flowforge.vi.run import OBJECTIVES
    from flowforge.vi.targets import TARGETS

    vi = sub.add_parser(
        "vi",
        help="fit a flow to a target density (variational inference) and write a run",
        description=(
            "Fit a flow q to an unnormalised target density by maximising the ELBO (or the "
            "path-derivative ELBO, or the IWAE bound) and write a run directory: config.json, "
            "model.safetensors, metrics.jsonl (the ELBO per step), results.json (ELBO ± "
            "standard error, importance-sampled log Z, ESS, Pareto-k; the KL to the target by "
            "a grid for 2-D targets), density.png and elbo.png. `flowforge eval RUN` "
            "recomputes the diagnostics, `flowforge sample RUN` draws from q. Every option "
            "can also be a key of --config FILE.toml (underscores); flags override the file."
        ),
    )
    vi.add_argument("--config", metavar="FILE.toml", help="options from a TOML file")
    vi.add_argument("--target", choices=list(TARGETS), help="target density (default u1)")
    vi.add_argument(
        "--target-options", type=_json_object, metavar="JSON", help="the target's options"
    )
    vi.add_argument("--flow", choices=sorted(PRESETS), help="flow preset (default planar)")
    vi.add_argument("--transforms", type=int, help="number of transforms (default 32)")
    vi.add_argument("--hidden", type=_int_tuple, help="hidden sizes, e.g. 64,64")
    vi.add_argument("--flow-options", type=_json_object, metavar="JSON", help="preset options")
    vi.add_argument("--steps", type=int, help="optimisation steps (default 2000)")
    vi.add_argument("--samples", type=int, help="samples per step (default 256)")
    vi.add_argument("--lr", type=float, help="Adam learning rate, cosine decay (default 1e-2)")
    vi.add_argument("--objective", choices=OBJECTIVES, help="elbo (default), stl or iwae")
    vi.add_argument("--iwae-k", type=int, help="importance samples per IWAE estimate (8)")
    vi.add_argument("--anneal", type=int, help="steps of annealing the target (default: a quarter)")
    vi.add_argument("--eval-samples", type=int, help="draws for the diagnostics (4096)")
    vi.add_argument("--seed", type=int, help="random seed (default 0)")
    vi.add_argument("--out", help="run directory (default runs/vi-TARGET-FLOW-TIME)")
    vi.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace an existing, non-empty output folder",
    )
    vi.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None)
    vi.add_argument("--quiet", action="store_true", default=None, help="no progress bar")


def _json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _version() -> str:
    from flowforge import __version__

    return f"flowforge {__version__}"


# -- commands ---------------------------------------------------------------------------------


def _cmd_train(args: argparse.Namespace) -> int:
    from flowforge.train.config import ConfigError, TrainConfig, flags_to_dict, read_toml
    from flowforge.train.model import preset_defaults
    from flowforge.train.run import resume_run, start_run

    flags = flags_to_dict(args)
    if args.resume:
        if args.config:
            raise ConfigError("--config cannot be used with --resume (the run has its config)")
        result = resume_run(args.resume, flags)
    else:
        toml = read_toml(args.config) if args.config else {}
        source = f"{args.config}: " if args.config else ""
        flow = TrainConfig.from_layers(toml, source=source).updated(flags).flow
        # the preset's own defaults go under the file and the flags
        cfg = TrainConfig.from_layers(preset_defaults(flow), toml, source=source).updated(flags)
        result = start_run(cfg)
    out = result.outcome
    print(
        f"trained for {out.step} steps ({out.reason}); best validation NLL "
        f"{out.best_val_nll:.4f} at step {out.best_step}"
    )
    test = result.test
    line = f"test NLL: {test.nll:.4f} ± {test.nll_err:.4f} nats ({test.n} rows)"
    base = result.baseline
    print(
        line if base is None else f"{line}; Gaussian baseline {base.nll:.4f} ± {base.nll_err:.4f}"
    )
    _warn_worse_than_gaussian("flowforge train", "test", test.nll, base)
    if test.bpd is not None:
        print(f"test bits/dim: {test.bpd:.4f} ± {test.bpd_err:.4f}")
    print(f"run directory: {result.run_dir}")
    return 0


def _warn_worse_than_gaussian(prog: str, split: str, nll: float, base: object) -> None:
    """Warn on stderr when a flow's NLL is above the Gaussian baseline (an ``NLLSummary``)."""
    base_nll = getattr(base, "nll", None)
    if base_nll is not None and nll > base_nll:
        print(
            f"{prog}: warning: the flow's {split} NLL {nll:.4f} is worse than a "
            f"full-covariance Gaussian fitted to the training rows ({base_nll:.4f}): it has "
            f"likely overfitted (fewer steps, --patience, a smaller --hidden or --weight-decay "
            f"help on small tables)",
            file=sys.stderr,
        )


def _cmd_eval(args: argparse.Namespace) -> int:
    from flowforge.runs import open_run, read_run_record
    from flowforge.vi.run import is_vi_record

    if is_vi_record(read_run_record(args.run)):
        return _cmd_eval_vi(args)
    from flowforge.train.run import (
        dequantized_summary,
        load_data,
        load_dequantizer,
        resolve_device,
        run_config,
        test_summary,
    )

    run = open_run(args.run, resolve_device(args.device))
    cfg = run_config(run.record, str(run.files.config))
    if args.data_dir:
        cfg = cfg.replace(data_dir=args.data_dir)
    ds = load_data(cfg, run.spec, run.record)  # refuses a data file changed since training
    deq = load_dequantizer(run.record, run.files.root)  # variational dequantization runs
    s = test_summary(run.flow, ds, cfg, args.split, deq)
    extra: dict[str, object] = {}
    if ds.kind == "image":  # the bound and the importance-sampled estimate of log P(levels)
        d = dequantized_summary(run.flow, ds, cfg, args.split, deq, args.samples or 16)
        extra = {
            "dequantization": "uniform" if deq is None else "variational",
            "samples": d.samples,
            "bound_bpd": d.bound_bpd,
            "bound_bpd_err": d.bound_bpd_err,
            "importance_bpd": d.importance_bpd,
            "importance_bpd_err": d.importance_bpd_err,
        }
    from flowforge.eval.baseline import dataset_baseline

    base = dataset_baseline(ds, args.split)  # tables: a Gaussian of the training rows
    if args.json:
        gauss = {} if base is None else {"gaussian_baseline": base.to_dict()}
        print(
            json.dumps({"run": str(args.run), "split": args.split, **s.to_dict(), **extra, **gauss})
        )
        return 0
    line = f"{args.split} NLL: {s.nll:.4f} ± {s.nll_err:.4f} nats ({s.n} rows, 2 standard errors)"
    print(
        line if base is None else f"{line}; Gaussian baseline {base.nll:.4f} ± {base.nll_err:.4f}"
    )
    _warn_worse_than_gaussian("flowforge eval", args.split, s.nll, base)
    if s.bpd is not None:
        print(f"{args.split} bits/dim: {s.bpd:.4f} ± {s.bpd_err:.4f} (2 standard errors)")
    if extra:
        how = f"{extra['dequantization']} dequantization, {extra['samples']} samples per image"
        print(
            f"{args.split} bits/dim, bound ({how}): "
            f"{extra['bound_bpd']:.4f} ± {extra['bound_bpd_err']:.4f}"
        )
        print(
            f"{args.split} bits/dim, importance-sampled ({how}): "
            f"{extra['importance_bpd']:.4f} ± {extra['importance_bpd_err']:.4f}"
        )
    return 0


def _cmd_eval_vi(args: argparse.Namespace) -> int:
    from flowforge.runs import open_run
    from flowforge.train.run import resolve_device
    from flowforge.vi.run import diagnostics_dict, format_diagnostics, vi_config_of

    run = open_run(args.run, resolve_device(args.device))
    cfg, target = vi_config_of(run)
    d = diagnostics_dict(
        run.flow, target.to(resolve_device(args.device)), args.samples or cfg.eval_samples, cfg.seed
    )
    if args.json:
        print(json.dumps({"run": str(args.run), "target": cfg.target, **d}))
        return 0
    print(f"{cfg.flow} fitted to {cfg.target} ({cfg.objective}, {cfg.steps} steps)")
    print("\n".join(format_diagnostics(d)))
    return 0


def _cmd_vi(args: argparse.Namespace) -> int:
    from flowforge.vi.run import VIConfig, format_diagnostics, read_vi_toml, run_vi

    options = read_vi_toml(args.config) if args.config else {}
    source = f"{args.config}: " if args.config else ""
    flags = {
        k: v for k, v in vars(args).items() if k not in ("command", "config") and v is not None
    }
    if options:
        VIConfig.from_dict(options, source=source)  # the file's own mistakes, named as its
    cfg = VIConfig.from_dict({**options, **flags})
    try:
        result = run_vi(cfg)
    except FloatingPointError as e:
        print(f"flowforge vi: {e}; nothing was written", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    r = result.results
    print(
        f"fitted {r['flow']} to {r['target']} for {r['steps']} steps ({r['objective']}) in {r['seconds']:.1f} s"
    )
    print("\n".join(format_diagnostics(r["diagnostics"])))
    print(f"run directory: {result.run_dir}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from flowforge.eval.score import sample_rows
    from flowforge.runs import RunError, check_output, open_run, write_table
    from flowforge.train.run import resolve_device

    out = Path(args.output)
    check_output(out, (".npy", ".csv", ".png"))
    run = open_run(args.run, resolve_device(args.device))
    image = run.spec.kind == "image"
    if out.suffix.lower() == ".png" and not (image or run.spec.features == 2):
        raise RunError("PNG output needs image or 2-D data; use .npy or .csv")
    x = sample_rows(run, args.num, temperature=args.temperature, seed=args.seed)
    if out.suffix.lower() == ".png":
        from flowforge.train.plots import image_grid, scatter

        if image:
            image_grid(x / max(int(run.spec.levels or 1) - 1, 1), out)
        else:
            scatter(x, out)
    else:
        names = run.spec.columns or [f"x{i}" for i in range(run.spec.features)]
        write_table(out, x.numpy(), names)
    print(f"wrote {args.num} samples to {out}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
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


def _cmd_datasets(args: argparse.Namespace) -> int:
    import math

    from flowforge.data import default_data_dir, list_datasets

    infos = list_datasets(args.data_dir)
    rows = [
        {
            "name": i.name,
            "kind": i.kind,
            "dim": math.prod(i.event_shape),
            "shape": list(i.event_shape),
            "available": i.available,
            "description": i.description,
            "files": i.files,
        }
        for i in infos
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    root = default_data_dir(args.data_dir)
    print(f"data folder: {root} (set with --data-dir or FLOWFORGE_DATA)\n")
    print(f"{'name':<22} {'kind':<8} {'dim':>5}  {'available':<9}  description")
    for r in rows:
        print(
            f"{r['name']:<22} {r['kind']:<8} {r['dim']:>5}  "
            f"{'yes' if r['available'] else 'no':<9}  {r['description']}"
        )
        if not r["available"] and r["files"]:
            print(f"{'':<50}expects: {r['files']}")
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "sample": _cmd_sample,
    "score": _cmd_score,
    "datasets": _cmd_datasets,
    "vi": _cmd_vi,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    from flowforge.data import DataError
    from flowforge.eval.likelihood import NonFiniteLikelihood
    from flowforge.runs import ConfigError, RunError
    from flowforge.train.loop import NonFiniteLoss
    from flowforge.transforms.continuous import SolverError

    prog = f"flowforge {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except (DataError, ConfigError, RunError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (NonFiniteLoss, NonFiniteLikelihood, SolverError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    except KeyboardInterrupt as e:
        print(f"{prog}: interrupted{'; ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
