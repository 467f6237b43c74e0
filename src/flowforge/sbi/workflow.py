"""``flowforge sbi``'s program: simulations (a file or the demo simulator) -> a fitted posterior
-> a run directory with the corner plot at the observation.

Everything the user gave is checked before the run directory is created, and a failure while
writing removes what was written, so bad input never leaves a half-written run. This module is
not imported by ``import flowforge``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from flowforge.core.memory import too_big
from flowforge.data.base import DataError
from flowforge.runs import ConfigError, check_new_run
from flowforge.sbi.estimators import FMPE, NPE, check_pairs
from flowforge.sbi.posterior import save_posterior
from flowforge.sbi.prior import BoxUniform
from flowforge.sbi.simulators import SIMULATORS, simulate
from flowforge.sbi.tables import read_simulations

__all__ = ["SBIOptions", "SBIResult", "run_sbi"]


@dataclass
class SBIOptions:
    """The options of ``flowforge sbi`` (see its ``--help``)."""

    data: str | None = None
    simulator: str | None = None
    theta_cols: list[str] = field(default_factory=list)
    x_cols: list[str] = field(default_factory=list)
    prior: str = "box"
    low: list[float] | None = None
    high: list[float] | None = None
    observation: list[float] | None = None
    true_theta: list[float] | None = None
    method: str = "npe"
    flow: str | None = None
    flow_options: dict[str, Any] = field(default_factory=dict)
    z_score: str = "independent"
    simulations: int = 2000
    steps: int | None = None  # the estimator's own plan (NPE.plan, NPE.step_cap)
    batch_size: int | None = None  # the estimator's own rule (NPE.batch_for)
    lr: float | None = None
    samples: int = 10_000
    seed: int = 0
    out: str | None = None
    overwrite: bool = False
    plots: bool = True


@dataclass
class SBIResult:
    """What ``run_sbi`` did: the run directory, the results and lines to tell the user."""

    run_dir: Path
    results: dict[str, Any]
    notes: list[str]


def _floats(values: list[float] | None, d: int, what: str) -> list[float] | None:
    if values is None:
        return None
    if len(values) != d or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what}: expected {d} finite numbers, got {len(values)}: {values}")
    return [float(v) for v in values]


def _inputs(opt: SBIOptions) -> tuple[Any, Any, BoxUniform, list[str], list[str], list[float]]:
    """``(theta, x, prior, theta_names, x_names, observation)``, all checked."""
    if (opt.data is None) == (opt.simulator is None):
        raise ConfigError("give either --data FILE (pre-simulated pairs) or --simulator NAME")
    if opt.method not in ("npe", "fmpe"):
        raise ConfigError(f"unknown method {opt.method!r}; valid: npe, fmpe")
    if (
        opt.simulations < 2
        or (opt.steps is not None and opt.steps < 1)
        or opt.samples < 1
        or (opt.batch_size is not None and opt.batch_size < 1)
    ):
        raise ConfigError(
            "expected --simulations >= 2, --steps >= 1, --samples >= 1 and --batch-size >= 1"
        )
    if opt.lr is not None and not (math.isfinite(opt.lr) and opt.lr > 0):  # was a traceback
        raise ConfigError(f"--lr must be a positive finite number, got {opt.lr}")
    for flag, n in (("--simulations", opt.simulations), ("--samples", opt.samples)):
        # a floor: two float32 columns of theta and of x per row (10**30 simulations ran,
        # growing to 14 GB, and sample counts overflowed)
        why = too_big(16.0 * n, f"{n} rows") if n < 2**63 else f"{n} is beyond 64 bits"
        if why is not None:
            raise ConfigError(f"{flag} {n}: {why}")
    if opt.simulator is not None:
        if opt.simulator not in SIMULATORS:
            raise ConfigError(
                f"unknown simulator {opt.simulator!r}; valid: {', '.join(SIMULATORS)}"
            )
        if opt.low is not None or opt.high is not None or opt.theta_cols or opt.x_cols:
            raise ConfigError(
                "--low/--high/--theta-cols/--x-cols apply to --data; a built-in simulator "
                "brings its own prior"
            )
        task = SIMULATORS[opt.simulator]()
        prior = task["prior"]
        theta, x = simulate(task["simulator"], prior, opt.simulations, seed=opt.seed)
        t_names, x_names = task["names"]
        obs = opt.observation if opt.observation is not None else task["observation"]
    else:
        assert opt.data is not None
        sims = read_simulations(opt.data, opt.theta_cols or None, opt.x_cols or None)
        theta = torch.as_tensor(sims.theta, dtype=torch.float32)
        x = torch.as_tensor(sims.x, dtype=torch.float32)
        t_names, x_names = sims.theta_names, sims.x_names
        if opt.prior != "box":
            raise ConfigError(f"unknown prior {opt.prior!r}; the command line takes --prior box")
        if opt.low is None or opt.high is None:
            raise ConfigError("--prior box needs --low and --high (one bound per theta column)")
        d = theta.shape[1]
        low, high = _floats(opt.low, d, "--low"), _floats(opt.high, d, "--high")
        assert low is not None and high is not None
        if not all(h > lo for lo, h in zip(low, high)):
            raise ConfigError(f"--high must exceed --low in every coordinate, got {low} and {high}")
        prior = BoxUniform(low, high)
        if opt.observation is None:
            raise ConfigError(
                f"--observation is required with --data: {x[0].numel()} numbers, the x columns "
                f"{', '.join(x_names[:10])}"
            )
        obs = opt.observation
    obs = _floats(list(obs), int(x[0].numel()), "--observation")
    _floats(opt.true_theta, theta.shape[1], "--true-theta")
    return theta, x, prior, t_names, x_names, obs  # type: ignore[return-value]


def run_sbi(opt: SBIOptions) -> SBIResult:
    """Fit the posterior ``opt`` asks for and write its run directory.

    Raises:
        ConfigError, DataError, RunError: bad input (one line; nothing written).
    """
    out = Path(opt.out) if opt.out else Path("runs") / f"sbi-{time.strftime('%Y%m%d-%H%M%S')}"
    check_new_run(out, opt.overwrite)
    theta, x, prior, t_names, x_names, obs = _inputs(opt)
    notes: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            theta, x, dropped = check_pairs(theta, x, prior)
        notes += [str(w.message) for w in seen]
    except ValueError as e:
        raise DataError(" ".join(str(e).split())) from None
    try:
        cls = FMPE if opt.method == "fmpe" else NPE
        est = cls(prior, opt.flow, opt.z_score, flow_options=opt.flow_options or None)
        est.build(theta[:2], x[:2])  # the flow's options, before anything is written
    except (ValueError, TypeError) as e:
        raise ConfigError(" ".join(str(e).split())) from None
    x_o = torch.tensor(obs).reshape(x.shape[1:])
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        posterior = est.fit(theta, x, opt.steps, opt.batch_size, opt.lr, opt.seed)
    with torch.random.fork_rng():
        torch.manual_seed(opt.seed)
        samples = posterior.sample(opt.samples, x_o)
    q = torch.quantile(samples.double(), torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64), 0)
    summary = {
        "observation": obs,
        "names": t_names,
        "posterior_mean": samples.double().mean(0).tolist(),
        "posterior_std": samples.double().std(0).tolist(),
        "posterior_q05": q[0].tolist(),
        "posterior_median": q[1].tolist(),
        "posterior_q95": q[2].tolist(),
        "true_theta": opt.true_theta,
        "samples": opt.samples,
        "simulations": int(len(theta) + dropped),
        "dropped": int(dropped),
    }
    box = posterior.spec["box"]

    def draw(root: Path) -> list[Path]:
        from flowforge.sbi.plots import corner_plot

        path = corner_plot(
            samples,
            root / "corner.png",
            t_names,
            opt.true_theta,
            bounds=list(zip(box["low"], box["high"])) if box else None,
            title=f"{opt.method.upper()} posterior at x_o = {[round(v, 3) for v in obs][:6]}",
        )
        return [path]

    extra = {"config": asdict(opt), "data": {"theta_names": t_names, "x_names": x_names}}
    run_dir = save_posterior(
        posterior,
        out,
        overwrite=opt.overwrite,
        extra=extra,
        results=summary,
        plots=draw if opt.plots else None,
    )
    return SBIResult(run_dir, {**posterior.info, **summary}, notes)
