"""Class-conditional samples of scikit-learn digits, scored by an independent classifier.

Trains a class-conditional TarFlow (one-hot context, label dropout 0.1, Gaussian noise
augmentation) and a class-conditional Glow for the same wall-clock budget each, in this one
process, then draws ``--per-class`` samples of each digit and reports how often an SVC trained
on the real training digits classifies them as the label they were drawn for. TarFlow's
samples are scored plain, denoised (one step along the flow's score), guided (class guidance
against the null context) and both; Glow's plain and at temperature 0.7. The SVC's accuracy
on the real test digits is the ceiling.

Usage:
    python benchmarks/tarflow_classes.py                   # the README's table (~6 minutes)
    python benchmarks/tarflow_classes.py --seconds 20 --per-class 10    # a quick look
    python benchmarks/tarflow_classes.py --grid docs/tarflow_digits.png  # and a samples figure
    python benchmarks/tarflow_classes.py --run RUN GLOW_RUN   # `flowforge train --condition class` runs

With ``--run``, nothing is trained: the samples are ``flowforge sample RUN --class K`` (the
same function), plain and, for a TarFlow run, at each ``--guidance`` (class guidance against
the null class) and denoised if the run was trained with ``--noise``; another flow (Glow) at
temperature 1 and 0.7.

Both flows see the data as the command line's runs do (``flowforge.runs.build_flow``): Glow
behind the logit, TarFlow, trained on noisy values, behind ``u -> 2u - 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import flowforge as ff
from flowforge.runs.recipe import ModelSpec, build_flow
from flowforge.transforms import guided

LEVELS = 17


def digits(seed: int) -> tuple[np.ndarray, ...]:
    """Train and test images (levels, ``(N, 1, 8, 8)``) and labels, an 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))
    cut = int(0.8 * len(order))
    x, y = d.images[order].astype(np.float32)[:, None], d.target[order]
    return x[:cut], y[:cut], x[cut:], y[cut:]


def make(name: str, width: int) -> ff.Flow:
    if name == "tarflow":
        kwargs = {"shape": [1, 8, 8], "context": 10, "blocks": 4, "layers": 2, "width": width}
        spec = ModelSpec("tarflow", kwargs, "image", (1, 8, 8), LEVELS, 1e-3, pretransform="centre")
    else:
        kwargs = {"shape": [1, 8, 8], "context": 10, "levels": 2, "depth": 4, "hidden": [64, 64]}
        spec = ModelSpec("glow", kwargs, "image", (1, 8, 8), LEVELS, 1e-3)
    return build_flow(spec)


def train(flow: ff.Flow, x: np.ndarray, y: np.ndarray, seconds: float, noise: float,
          dropout: float, seed: int) -> int:  # fmt: skip
    """AdamW with a short warmup for ``seconds`` of wall clock; returns the steps taken."""
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.nn.functional.one_hot(torch.from_numpy(y), 10).float()
    opt = torch.optim.AdamW(flow.parameters(), 2e-3, betas=(0.9, 0.95), weight_decay=1e-4)
    start, step = time.perf_counter(), 0
    flow.train()
    while time.perf_counter() - start < seconds:
        idx = torch.randint(0, len(xt), (64,), generator=g)
        u = (xt[idx] + torch.rand(xt[idx].shape, generator=g)) / LEVELS
        u = u + noise * torch.randn(u.shape, generator=g)
        c = yt[idx] * (torch.rand(64, 1, generator=g) >= dropout)  # label dropout: the null class
        for group in opt.param_groups:
            group["lr"] = 2e-3 * min(1.0, (step + 1) / 100)
        loss = -flow.log_prob(u, c).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 1.0)
        opt.step()
        step += 1
    flow.eval()
    return step


def sample(flow: ff.Flow, per_class: int, temperature: float = 1.0, guidance: float = 0.0,
           denoise: float = 0.0) -> np.ndarray:  # fmt: skip
    """``(per_class, 10, 1, 8, 8)`` samples as levels, row ``[:, k]`` drawn for class ``k``."""
    torch.manual_seed(0)
    with guided(flow, guidance) if guidance else contextlib.nullcontext():
        u = flow.sample(per_class, torch.eye(10), temperature=temperature)
    if denoise:
        u = flow.denoise(u, denoise, torch.eye(10))
    return (u * LEVELS).floor().clamp(0, LEVELS - 1).numpy()


def main(argv: list[str] | None = None) -> list[dict[str, float | str]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=150.0, help="training budget of each flow")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--noise", type=float, default=0.03, help="TarFlow's noise std on u in [0, 1)")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--guidance", type=float, nargs="*", default=[1.0, 3.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid", default=None, help="write a PNG of samples (one row per class)")
    ap.add_argument(
        "--run", nargs="+", default=None, help="score class-conditional runs' CLI samples"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sklearn.svm import SVC

    xtr, ytr, xte, yte = digits(args.seed)
    svc = SVC().fit(xtr.reshape(len(xtr), -1), ytr)
    ceiling = float(svc.score(xte.reshape(len(xte), -1), yte))

    def accuracy(levels: np.ndarray) -> float:
        labels = np.broadcast_to(np.arange(10), levels.shape[:2]).reshape(-1)
        return float(svc.score(levels.reshape(-1, 64), labels))

    if args.run:
        return _score_run(args, accuracy, ceiling)
    torch.manual_seed(args.seed)
    tar, glow = make("tarflow", args.width), make("glow", args.width)
    steps_t = train(tar, xtr, ytr, args.seconds, args.noise, 0.1, args.seed)
    steps_g = train(glow, xtr, ytr, args.seconds, 0.0, 0.0, args.seed)
    rows: list[dict[str, float | str]] = [{"model": "SVC on real test digits", "accuracy": ceiling}]
    grids = {}
    cases = [("TarFlow", {}), ("TarFlow, denoised", {"denoise": args.noise})]
    for w in args.guidance:
        cases += [(f"TarFlow, guidance {w:g}", {"guidance": w})]
        cases += [(f"TarFlow, guidance {w:g}, denoised", {"guidance": w, "denoise": args.noise})]
    for name, kw in cases:
        grids[name] = sample(tar, args.per_class, **kw)  # type: ignore[arg-type]
        rows.append({"model": name, "accuracy": accuracy(grids[name]), "steps": steps_t})
    for t in (1.0, 0.7):
        name = f"Glow, temperature {t:g}"
        grids[name] = sample(glow, args.per_class, temperature=t)
        rows.append({"model": name, "accuracy": accuracy(grids[name]), "steps": steps_g})
    _report(rows, args, "training steps", lambda r: str(r.get("steps", "")))
    if args.grid:
        picks = [
            "TarFlow",
            f"TarFlow, guidance {args.guidance[-1]:g}, denoised",
            "Glow, temperature 1",
        ]
        _figure({k: grids[k] for k in picks if k in grids}, Path(args.grid))
    return rows


def _score_run(
    args: argparse.Namespace, accuracy: Callable[[np.ndarray], float], ceiling: float
) -> list[dict[str, float | str]]:
    """The SVC's accuracy on class-conditional runs' ``flowforge sample --class K`` samples:
    each run plain; a TarFlow run at each ``--guidance`` and, if it was trained with
    ``--noise``, denoised too; another flow (Glow) at temperature 1 and 0.7."""
    from flowforge.eval.score import sample_rows
    from flowforge.runs import open_run

    rows: list[dict[str, float | str]] = [{"model": "SVC on real test digits", "accuracy": ceiling}]
    for path in args.run:
        run = open_run(path)
        cases: list[tuple[str, dict[str, Any]]] = [("", {})]
        if run.spec.preset == "tarflow":
            denoise = [False, True] if run.record["config"].get("noise", 0) > 0 else [False]
            cases = [
                (" ".join(f for f in (f"--guidance {w:g}" * bool(w), "--denoise" * d) if f),
                 {"guidance": w, "denoise": d})
                for w in (0.0, *args.guidance) for d in denoise
            ]  # fmt: skip
        else:
            cases.append(("--temperature 0.7", {"temperature": 0.7}))
        for flags, kw in cases:
            start = time.process_time()
            grid = np.stack(
                [sample_rows(run, args.per_class, seed=args.seed, label=k, **kw).numpy()
                 for k in range(10)],
                axis=1,
            )  # fmt: skip
            rows.append({"model": f"{path} {flags}".strip(), "accuracy": accuracy(grid),
                         "sample_cpu_s": time.process_time() - start})  # fmt: skip
    _report(rows, args, "sampling CPU s", lambda r: f"{r.get('sample_cpu_s', 0):.1f}")
    return rows


def _report(
    rows: list[dict[str, float | str]],
    args: argparse.Namespace,
    last: str,
    cell: Callable[[dict[str, float | str]], str],
) -> None:
    """The rows as a Markdown table (model, accuracy and the column ``last``), and as JSON to
    ``--json``."""
    print(f"| samples ({args.per_class} per class) | SVC accuracy | {last} |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['accuracy']:.3f} | {cell(r)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def _figure(grids: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(grids), figsize=(3.6 * len(grids), 4.6))
    for ax, (name, g) in zip(np.atleast_1d(axes), grids.items(), strict=True):
        k = min(8, g.shape[0])
        padded = np.pad(g[:k, :, 0], ((0, 0), (0, 0), (1, 1), (1, 1)))  # (k, 10, 10, 10)
        tiles = padded.transpose(1, 2, 0, 3).reshape(10 * 10, k * 10)  # rows: classes
        ax.imshow(tiles, cmap="gray_r", vmin=0, vmax=LEVELS - 1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
    sys.exit(0)
