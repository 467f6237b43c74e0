"""``flowforge vi``: fit a flow to a target density and write a run."""

from __future__ import annotations

import argparse
import sys

from flowforge.cli._common import EXIT_TRAINING_FAILED, int_tuple, json_object


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flowforge.flows import PRESETS
    from flowforge.vi.config import DEVICES, OBJECTIVES, RESUME_KEYS
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
            "recomputes the diagnostics, `flowforge sample RUN` draws from q. A checkpoint is "
            "written every --checkpoint-every steps; `flowforge vi --resume RUN` continues a "
            "killed or interrupted run exactly. Every option can also be a key of --config "
            "FILE.toml (underscores); flags override the file."
        ),
    )
    vi.add_argument("--config", metavar="FILE.toml", help="options from a TOML file")
    vi.add_argument("--target", choices=list(TARGETS), help="target density (default u1)")
    vi.add_argument(
        "--target-options", type=json_object, metavar="JSON", help="the target's options"
    )
    vi.add_argument("--flow", choices=sorted(PRESETS), help="flow preset (default planar)")
    vi.add_argument(
        "--transforms",
        type=int,
        help="number of transforms (default 32; ffjord 1: each is an ODE solve)",
    )
    vi.add_argument("--hidden", type=int_tuple, help="hidden sizes, e.g. 64,64")
    vi.add_argument("--flow-options", type=json_object, metavar="JSON", help="preset options")
    vi.add_argument("--steps", type=int, help="optimisation steps (default 2000)")
    vi.add_argument("--samples", type=int, help="samples per step (default 256)")
    vi.add_argument(
        "--lr",
        type=float,
        help="Adam learning rate, cosine decay (default 1e-2 for planar, radial, sylvester; "
        "1e-3 for network flows such as iaf, maf, nsf)",
    )
    vi.add_argument("--objective", choices=OBJECTIVES, help="elbo (default), stl or iwae")
    vi.add_argument("--iwae-k", type=int, help="importance samples per IWAE estimate (8)")
    vi.add_argument("--anneal", type=int, help="steps of annealing the target (default: a quarter)")
    vi.add_argument("--eval-samples", type=int, help="draws for the diagnostics (4096)")
    vi.add_argument("--seed", type=int, help="random seed (default 0)")
    vi.add_argument("--device", choices=DEVICES, help="where to fit (default cpu)")
    vi.add_argument(
        "--checkpoint-every", type=int, metavar="STEPS", help="steps between checkpoints (100)"
    )
    vi.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in RUN from its checkpoint (may change: "
        + ", ".join("--" + k.replace("_", "-") for k in RESUME_KEYS)
        + ")",
    )
    vi.add_argument("--out", help="run directory (default runs/vi-TARGET-FLOW-TIME)")
    vi.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace an existing, non-empty output folder",
    )
    vi.add_argument("--plots", action=argparse.BooleanOptionalAction, default=None)
    vi.add_argument("--quiet", action="store_true", default=None, help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from flowforge.runs.errors import ConfigError
    from flowforge.runs.recipe import idle_option
    from flowforge.vi.run import VIConfig, format_diagnostics, read_vi_toml, resume_vi, run_vi

    options = read_vi_toml(args.config) if args.config else {}
    source = f"{args.config}: " if args.config else ""
    flags = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "config", "resume") and v is not None
    }
    if options:
        VIConfig.from_dict(options, source=source)  # the file's own mistakes, named as its
    given = {**options, **flags}
    if args.resume is None:
        VIConfig.from_dict(given)  # the values first: a bad value is named as such
    flow_options = dict(given.get("flow_options") or {})
    if "hidden" in given:
        flow_options["hidden"] = given["hidden"]
    idle = idle_option(str(given.get("flow", "planar")), flow_options)
    if idle is not None and args.resume is None:
        raise ConfigError(idle)
    if "iwae_k" in given and given.get("objective", "elbo") != "iwae" and args.resume is None:
        raise ConfigError(
            f"--iwae-k is the number of draws of an IWAE estimate; it does nothing with "
            f"--objective {given.get('objective', 'elbo')}"
        )
    try:
        if args.resume is not None:
            result = resume_vi(args.resume, {**options, **flags})
        else:
            result = run_vi(VIConfig.from_dict({**options, **flags}))
    except FloatingPointError as e:
        kept = "the last checkpoint is kept" if args.resume else "nothing was written"
        print(f"flowforge vi: {e}; {kept}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    r = result.results
    print(
        f"fitted {r['flow']} to {r['target']} for {r['steps']} steps ({r['objective']}) in {r['seconds']:.1f} s"
    )
    print("\n".join(format_diagnostics(r["diagnostics"])))
    print(f"run directory: {result.run_dir}")
    return 0
