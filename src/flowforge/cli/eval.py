"""``flowforge eval``: the test NLL (and bits/dim) of a run, or a VI run's diagnostics."""

from __future__ import annotations

import argparse
import json
import sys

from flowforge.cli._common import positive_int, warn_worse_than_gaussian


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    ev.add_argument("--split", default=None, choices=("test", "val", "train"), help="default: test")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ev.add_argument("--data-dir", help="folder of the on-disk datasets (default: the run's)")
    ev.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    ev.add_argument(
        "--samples",
        type=positive_int,
        default=None,
        help="image runs: noise samples per image of the importance-sampled estimate (default "
        "16); VI runs: draws from q for the diagnostics (default: as in the run's results)",
    )


def run(args: argparse.Namespace) -> int:
    from flowforge.data.registry import reads_data_dir
    from flowforge.runs import open_run, read_run_record
    from flowforge.runs.errors import ConfigError
    from flowforge.vi.run import is_vi_record

    if is_vi_record(read_run_record(args.run)):
        if args.split is not None:  # was taken without a word: a VI run has no data
            raise ConfigError(
                f"--split does nothing for {args.run}, a variational-inference run (no data "
                f"splits: its diagnostics draw from q)"
            )
        return _run_vi(args)
    args.split = args.split or "test"
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
        if not reads_data_dir(cfg.data):
            raise ConfigError(
                f"--data-dir is where the on-disk sets are read from; it does nothing for "
                f"{cfg.data!r}, which is not read from it"
            )
        cfg = cfg.replace(data_dir=args.data_dir)
    ds = load_data(cfg, run.spec, run.record)  # refuses a data file changed since training
    deq = load_dequantizer(run.record, run.files.root)  # variational dequantization runs
    s = test_summary(run.flow, ds, cfg, args.split, deq)
    extra: dict[str, object] = {}
    if args.samples is not None and ds.kind != "image":
        raise ConfigError(
            f"--samples is the noise samples per image of a dequantized estimate; it does "
            f"nothing for {ds.kind} data ({ds.name!r})"
        )
    if ds.kind == "image":  # the bound and the importance-sampled estimate of log P(levels)
        _check_samples(args.samples or 16, ds.dim, "noise samples per image")
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
    from flowforge.train.diagnose import diagnose

    base = dataset_baseline(ds, args.split)  # tables: a Gaussian of the training rows
    unfinished, overfit = diagnose(run.files.root, run.record, ds.dim)
    if args.json:
        gauss = {} if base is None else {"gaussian_baseline": base.to_dict()}
        notes = {"incomplete": unfinished, "overfitting": overfit}
        out = {"run": str(args.run), "split": args.split, **s.to_dict(), **extra, **gauss}
        print(json.dumps({**out, **notes}))
        return 0
    if unfinished:
        print(unfinished)
    if overfit:
        print(f"flowforge eval: warning: {overfit}", file=sys.stderr)
    line = f"{args.split} NLL: {s.nll:.4f} ± {s.nll_err:.4f} nats ({s.n} rows, 2 standard errors)"
    print(
        line
        if base is None
        else f"{line}; Gaussian baseline {base.nll:.4f} ± {base.nll_err:.4f}{base.suffix()}"
    )
    warn_worse_than_gaussian("flowforge eval", args.split, s.nll, base)
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


def _run_vi(args: argparse.Namespace) -> int:
    from flowforge.runs import open_run
    from flowforge.runs.defensive import model_flow
    from flowforge.runs.metrics import MetricsLog
    from flowforge.runs.status import incomplete
    from flowforge.train.run import resolve_device
    from flowforge.vi.run import diagnostics_dict, format_diagnostics, vi_config_of

    if args.data_dir:
        from flowforge.runs.errors import ConfigError

        raise ConfigError(f"--data-dir does nothing for {args.run}, a variational-inference run")
    run = open_run(args.run, resolve_device(args.device))
    cfg, target = vi_config_of(run)
    _check_samples(args.samples or cfg.eval_samples, target.features, "draws from q")
    unfinished = incomplete(run.files.root, run.record, MetricsLog(run.files.metrics).read())
    d = diagnostics_dict(
        model_flow(run.flow),
        target.to(resolve_device(args.device)),
        args.samples or cfg.eval_samples,
        cfg.seed,
    )
    if args.json:
        print(
            json.dumps({"run": str(args.run), "target": cfg.target, **d, "incomplete": unfinished})
        )
        return 0
    if unfinished:
        print(unfinished)
    print(f"{cfg.flow} fitted to {cfg.target} ({cfg.objective}, {cfg.steps} steps)")
    print("\n".join(format_diagnostics(d)))
    return 0


def _check_samples(samples: int, dim: int, what: str) -> None:
    """Refuse ``--samples`` whose draws cannot fit in memory (1e8 was an allocation error,
    1e30 an overflow, both tracebacks): a few float32 copies of ``samples x dim`` values."""
    from flowforge.core.memory import too_big
    from flowforge.runs.errors import ConfigError

    why = too_big(64.0 * samples * dim, f"{samples} {what} of {dim} values")
    if why is not None:
        raise ConfigError(f"--samples {samples}: {why}")
