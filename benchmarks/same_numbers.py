"""Same numbers at the same seed: an A/B check of the fit engine between two source trees.

Writes, as JSON, every number of a few small fits at fixed seeds: ``flowforge train`` (a vector
flow with warmup and EMA, Glow and the multiscale RealNVP on digits), ``flowforge vi``,
``FlowDensity`` (plain, and with noise and trim) and an sbi ``NPE`` over several epochs with a
mid-epoch stop; metrics, results, the config's keys and values, and log-densities. Compare two
trees' outputs number by number::

    PYTHONPATH=/old/src python benchmarks/same_numbers.py old.json
    PYTHONPATH=src python benchmarks/same_numbers.py new.json
    python benchmarks/same_numbers.py --compare old.json new.json

About 30 s on one CPU thread.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

SECONDS = ("seconds", "time", "elapsed", "wall", "created", "versions")


def _cli(*args: object) -> None:
    from flowforge.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in args])
    if code != 0:
        raise SystemExit(f"flowforge {' '.join(map(str, args))} exited with {code}")


def _run_numbers(run: Path) -> dict[str, Any]:
    import torch

    import flowforge as ff

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text()).get("config", {})
    flow = ff.load(run)
    shape = tuple(flow.bijection.event_shape)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, *shape, generator=g) * 0.98 + 0.01 if len(shape) == 3 else None
    x = torch.randn(5, *shape, generator=g) if x is None else x
    return {
        "metrics": [{k: v for k, v in m.items() if k not in SECONDS} for m in metrics],
        "results": {k: v for k, v in results.items() if k not in SECONDS},
        "config_keys": sorted(config),
        "config": {k: v for k, v in config.items() if k != "out"},
        "log_prob": flow.log_prob(x.to(next(flow.parameters()).dtype)).tolist(),
    }


def numbers(tmp: Path) -> dict[str, Any]:
    """Every number of the fits (see the module docstring)."""
    import numpy as np
    import torch

    import flowforge as ff

    out: dict[str, Any] = {}
    tiny = ["--quiet", "--no-plots", "--n-val", "300", "--n-test", "300", "--transforms", "2"]
    _cli("train", "--steps", 60, "--eval-every", 20, *tiny, "--hidden", "16,16",
         "--warmup-steps", 10, "--ema-decay", 0.9, "--seed", 3, "--out", tmp / "train")  # fmt: skip
    out["train"] = _run_numbers(tmp / "train")
    digits = ["--data", "digits", "--batch-size", 32, "--quiet", "--no-plots", "--seed", 2]
    small = '{"levels": 1, "depth": 2}'
    _cli("train", *digits, "--flow", "glow", "--steps", 6, "--eval-every", 3,
         "--flow-options", small, "--out", tmp / "glow")  # fmt: skip
    out["glow"] = _run_numbers(tmp / "glow")
    _cli("train", *digits, "--flow", "multiscale_realnvp", "--steps", 4, "--eval-every", 2,
         "--hidden", 8, "--flow-options", small, "--out", tmp / "msr")  # fmt: skip
    out["msr"] = _run_numbers(tmp / "msr")
    _cli("vi", "--transforms", 4, "--samples", 16, "--steps", 40, "--eval-samples", 200,
         "--quiet", "--no-plots", "--seed", 5, "--out", tmp / "vi")  # fmt: skip
    out["vi"] = _run_numbers(tmp / "vi")
    x = np.random.default_rng(0).normal(size=(257, 3))
    for name, kw in {"plain": {}, "noise_trim": {"noise": 0.2, "trim": 0.1}}.items():
        est = ff.FlowDensity(
            transforms=2, hidden=(8, 8), max_epochs=5, batch_size=40, random_state=1, **kw
        ).fit(x)
        state = {k: v.double().sum().item() for k, v in est.flow_.state_dict().items()}
        out[f"flowdensity_{name}"] = {"score": est.score_samples(x[:8]).tolist(), "state": state}
    prior = ff.sbi.BoxUniform([-2.0, -2.0], [2.0, 2.0])
    torch.manual_seed(0)
    theta, xs = ff.sbi.simulate(lambda t: t + 0.3 * torch.randn_like(t), prior, 333)
    npe = ff.sbi.NPE(prior, flow_options={"transforms": 2, "hidden": (16, 16)})
    post = npe.fit(theta, xs, max_steps=37, batch_size=32, lr=5e-3, seed=3)
    out["npe"] = {
        "history": post.history,
        "info": {k: v for k, v in post.info.items() if k not in SECONDS},
        "log_prob": post.log_prob(theta[:5], xs[0]).tolist(),
    }
    return out


def compare(a: Any, b: Any, path: str = "") -> tuple[int, list[str]]:
    """The count of numbers compared and the differences (paths), exact equality."""
    if isinstance(a, dict) and isinstance(b, dict):
        n, diffs = 0, [f"{path}: keys {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
        for k in a.keys() & b.keys():
            m, d = compare(a[k], b[k], f"{path}.{k}")
            n, diffs = n + m, diffs + d
        return n, diffs
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        n, diffs = 0, []
        for i, (u, v) in enumerate(zip(a, b)):
            m, d = compare(u, v, f"{path}[{i}]")
            n, diffs = n + m, diffs + d
        return n, diffs
    counted = isinstance(a, (int, float)) and not isinstance(a, bool)
    same = a == b or (a != a and b != b)  # NaN equals NaN here
    return int(counted), [] if same else [f"{path}: {a!r} != {b!r}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="write the numbers here (JSON)")
    parser.add_argument("--compare", nargs=2, metavar="JSON", help="compare two outputs")
    args = parser.parse_args()
    if args.compare:
        a, b = (json.loads(Path(p).read_text()) for p in args.compare)
        n, diffs = compare(a, b)
        print(f"{n} numbers compared; {len(diffs)} differences")
        print("\n".join(diffs[:40]))
        sys.exit(1 if diffs else 0)
    if not args.out:
        parser.error("give OUT.json, or --compare A.json B.json")
    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        Path(args.out).write_text(json.dumps(numbers(Path(tmp)), indent=1, default=str))


if __name__ == "__main__":
    main()
