"""Fit every vector preset to a few 2-D densities and plot the learned densities.

Produces ``docs/density_2d.png`` (the README's picture): one row per dataset, the data in
the first column, then each flow's learned density with its test NLL in nats.

Usage:
    python examples/density_2d.py [--steps 1500] [--out docs/density_2d.png]
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
from flowforge.data import sample_toy

DATASETS = ["moons", "8gaussians", "pinwheel", "checkerboard"]
FLOWS = {
    "NICE": lambda: ff.flows.NICE(features=2, transforms=6, hidden=(64, 64)),
    "RealNVP": lambda: ff.flows.RealNVP(features=2, transforms=6, hidden=(64, 64)),
    "MAF": lambda: ff.flows.MAF(features=2, transforms=6, hidden=(64, 64)),
    "NSF": lambda: ff.flows.NSF(features=2, transforms=4, bins=8, hidden=(64, 64)),
}


def fit(flow: ff.Flow, name: str, steps: int, seed: int) -> float:
    """Train on fresh samples; return the test NLL (nats) on 20,000 held-out samples."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = -flow.log_prob(sample_toy(name, 256, g)).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), 10.0)
        opt.step()
        sched.step()
    flow.eval()
    test = sample_toy(name, 20_000, torch.Generator().manual_seed(seed + 1))
    with torch.no_grad():
        return -flow.log_prob(test).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=Path("docs/density_2d.png"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: more threads only add overhead (the CLI's choice)
    torch.manual_seed(0)
    lim = 4.5
    grid = torch.linspace(-lim, lim, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1)
    fig, axes = plt.subplots(
        len(DATASETS), len(FLOWS) + 1, figsize=(2.6 * (len(FLOWS) + 1), 2.6 * len(DATASETS))
    )
    for r, name in enumerate(DATASETS):
        data = sample_toy(name, 5000, torch.Generator().manual_seed(7))
        ax = axes[r, 0]
        ax.hist2d(
            data[:, 0].numpy(),
            data[:, 1].numpy(),
            bins=120,
            range=[[-lim, lim], [-lim, lim]],
            cmap="viridis",
        )
        ax.set_title(f"{name}: data", fontsize=9)
        for c, (fname, make) in enumerate(FLOWS.items(), start=1):
            t0 = time.perf_counter()
            flow = make()
            nll = fit(flow, name, args.steps, seed=r)
            with torch.no_grad():
                dens = flow.log_prob(pts).exp().reshape(200, 200)
            ax = axes[r, c]
            ax.imshow(dens.numpy(), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
            ax.set_title(f"{fname}: NLL {nll:.3f}", fontsize=9)
            print(
                f"{name:>13} {fname:>8} test NLL {nll:.4f}  ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
