"""Fit planar flows to Rezende and Mohamed's four energies and plot them next to the truth.

Writes ``docs/vi_energies.png``: for each of U1-U4, the true density ``exp(-U) / Z`` (``Z`` on
a grid) and the fitted flow's density ``q``, with the KL(q || p) = log Z - ELBO in the title.
About 4-5 minutes on one CPU core (measured on a shared 2-core machine: KL 0.006, 0.011,
0.043, 0.105 nats for U1-U4).

    python examples/vi_energies.py [--steps 2000] [--transforms 32] [--out docs/vi_energies.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import flowforge as ff
from flowforge import vi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--transforms", type=int, default=32)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--out", default="docs/vi_energies.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = ["u1", "u2", "u3", "u4"]
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.6))
    box = 4.0
    axis = torch.linspace(-box, box, 300, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1)  # (300, 300, 2)
    for col, name in enumerate(names):
        torch.manual_seed(0)
        target = vi.targets.Energy(name)
        log_z = vi.grid_log_normalizer(target, target.bounds)
        flow = ff.flows.Planar(2, transforms=args.transforms)
        start = time.time()
        vi.fit_vi(
            flow, target, steps=args.steps, samples=args.samples, lr=1e-2, anneal=args.steps // 4
        )
        d = vi.diagnose(flow, target, samples=20000)
        kl = log_z - d.elbo.value
        print(
            f"{name}: {time.time() - start:.0f}s  KL = {kl:.3f} +- {d.elbo.stderr:.3f} nats  "
            f"Pareto-k = {d.pareto_k:.2f}  ESS = {100 * d.ess_fraction:.0f}%",
            flush=True,
        )
        with torch.no_grad():
            p = torch.exp(target(grid) - log_z)
            q = torch.exp(flow.double().log_prob(grid))  # the density direction: root finds
        extent = (-box, box, -box, box)
        axes[0, col].imshow(p, origin="lower", extent=extent, cmap="magma")
        axes[0, col].set_title(f"true density, {name.upper()}")
        axes[1, col].imshow(q, origin="lower", extent=extent, cmap="magma")
        axes[1, col].set_title(f"planar-{args.transforms}: KL {kl:.3f} nats")
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Planar flows fitted by the ELBO ({args.steps} steps, {args.samples} samples per step)"
    )
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
