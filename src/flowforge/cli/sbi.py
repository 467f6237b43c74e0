"""``flowforge sbi``: fit a posterior q(theta | x) to simulations and write a run with its corner
plot at the observation."""

from __future__ import annotations

import argparse
import sys

from flowforge.cli._common import float_list, json_object, seed


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from flowforge.flows import PRESETS

    p = sub.add_parser(
        "sbi",
        help="simulation-based inference: fit a posterior q(theta | x) to simulations",
        description=(
            "Fit an amortised posterior q(theta | x) (neural posterior estimation with a "
            "conditional flow, NSF by default, or flow matching with --method fmpe) to "
            "simulated pairs: pre-simulated ones from your simulator (--data sims.npz with "
            "arrays theta and x, or a CSV / NPY table with --theta-cols and --x-cols), or the "
            "built-in demo (--simulator two_moons). A box prior (--low, --high) is learned in "
            "its logit space: no posterior sample leaves it. Rows with NaN or inf (failed "
            "simulations) are dropped and counted. Writes a run directory: config.json, "
            "model.safetensors, metrics.jsonl, results.json (the posterior's mean, std and "
            "quantiles at --observation) and corner.png; load it in Python with "
            "flowforge.load(RUN)."
        ),
    )
    p.add_argument("--data", metavar="FILE", help="pre-simulated pairs: .npz, .csv or .npy")
    p.add_argument("--simulator", help="a built-in simulator instead of --data (two_moons)")
    p.add_argument("--theta-cols", type=_names, default=[], help="parameter columns: a,b,...")
    p.add_argument("--x-cols", type=_names, default=[], help="observation columns: x1,x2,...")
    p.add_argument("--prior", default="box", help="the prior (box: uniform on --low, --high)")
    p.add_argument("--low", type=float_list, help="the box's lower bounds, one per parameter")
    p.add_argument("--high", type=float_list, help="the box's upper bounds")
    p.add_argument("--observation", type=float_list, help="x_o, comma-separated (as the x columns)")
    p.add_argument("--true-theta", type=float_list, help="the true parameters (marked in the plot)")
    p.add_argument("--method", choices=("npe", "fmpe"), default="npe", help="npe (default) or fmpe")
    p.add_argument(
        "--flow",
        choices=sorted(PRESETS),
        help="NPE's conditional flow (default nsf, screened against maf over 3,000 pairs)",
    )
    p.add_argument("--flow-options", type=json_object, default={}, metavar="JSON")
    p.add_argument(
        "--z-score", choices=("none", "independent", "structured"), default="independent"
    )
    p.add_argument("--simulations", type=int, default=2000, help="with --simulator (2000)")
    p.add_argument(
        "--steps",
        type=int,
        help=(
            "most optimizer steps, which the cosine spans (default: the estimator's plan, "
            "stopping early on validation: NPE at most 150 epochs, FMPE 20,000 steps)"
        ),
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="pairs per step (default: NPE's rule, 200 growing to 400 from 5,000 simulations)",
    )
    p.add_argument("--lr", type=float, help="peak learning rate (NPE 2e-3, FMPE 1e-3)")
    p.add_argument("--samples", type=int, default=10_000, help="posterior draws for the plot")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", help="run directory (default runs/sbi-TIME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run")
    p.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True)


def run(args: argparse.Namespace) -> int:
    from flowforge.sbi.workflow import SBIOptions, run_sbi

    keys = SBIOptions.__dataclass_fields__
    opts = SBIOptions(**{k: v for k, v in vars(args).items() if k in keys})
    result = run_sbi(opts)
    for note in result.notes:
        print(f"flowforge sbi: {note}", file=sys.stderr)
    r = result.results
    print(
        f"fitted {r['method']} on {r['train'] + r['validation']} simulations in {r['steps']} "
        f"steps ({r['seconds']:.1f} s; best validation loss {r['best_val_loss']:.4f})"
    )
    for name, m, s, lo, hi in zip(
        r["names"], r["posterior_mean"], r["posterior_std"], r["posterior_q05"], r["posterior_q95"]
    ):
        print(f"  {name}: mean {m:.4g}, std {s:.3g}, 90% interval [{lo:.4g}, {hi:.4g}]")
    print(f"run directory: {result.run_dir}")
    return 0
