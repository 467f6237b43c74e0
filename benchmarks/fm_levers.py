"""Screen velocity-network levers for flow matching on 8gaussians (race-only networks).

Each model is a plain MLP on ``[x, t]`` (or time features) in the CNF's convention (data at
``s = 0``, noise at ``s = 1``), trained as :class:`~flowforge.train.losses.FlowMatching` does
(straight paths, ``sigma`` noise around them, loss ``mean ||v - (z - x)||^2``) with Adam at
``--lr`` and no schedule, on the same fresh batches as torchcfm's recipe (``cfm``, from
``fm_race.py``), each model on its own random stream. Scored by ``fm_race.test_nll`` at the
``--at`` steps.

A model is ``name:kwargs`` with kwargs of :class:`Net`: ``act`` (tanh, silu, elu, gelu,
softplus, selu), ``skip`` (0: none; 1: a linear layer on ``[x, t, x t]`` added to the output,
zero at the start), ``tfeat`` (sin/cos time features ``sin(pi k t), cos(pi k t)``, k = 1..K),
``outscale`` (the output layer's initial weights and bias times it), ``hidden``.

Run: ``python benchmarks/fm_levers.py "cfm;a:act='tanh';b:act='silu'" --seed 0``
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowforge.data.toy import sample_toy

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cnf_race import _kwargs
from fm_race import Streams, build, test_nll

ACTS = {
    "tanh": torch.tanh,
    "silu": F.silu,
    "elu": F.elu,
    "gelu": F.gelu,
    "softplus": F.softplus,
    "selu": F.selu,
}


class Net(nn.Module):
    """The screened velocity network ``v(s, x)``."""

    def __init__(
        self,
        act: str = "tanh",
        skip: int = 0,
        tfeat: int = 0,
        outscale: float = 1.0,
        hidden: tuple[int, ...] = (64, 64, 64),
        skipinit: float = 0.0,
    ) -> None:
        super().__init__()
        self.act, self.tfeat = ACTS[act], tfeat
        sizes = [2 + 1 + 2 * tfeat, *hidden, 2]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        with torch.no_grad():
            self.layers[-1].weight.mul_(outscale)
            self.layers[-1].bias.mul_(outscale)
        self.skip = nn.Linear(5, 2) if skip else None
        if self.skip is not None:
            with torch.no_grad():
                self.skip.weight.mul_(skipinit)
                self.skip.bias.mul_(skipinit)

    def forward(self, s: Tensor, x: Tensor) -> Tensor:
        t = s.to(x).reshape(-1, 1).expand(x.shape[0], 1)
        feats = [x, t]
        if self.tfeat:
            k = torch.arange(1, self.tfeat + 1, dtype=x.dtype) * math.pi
            feats += [torch.sin(k * t), torch.cos(k * t)]
        h = torch.cat(feats, -1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        out = self.layers[-1](h)
        if self.skip is not None:
            out = out + self.skip(torch.cat([x, t, x * t], -1))
        return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("models")
    p.add_argument("--at", default="250,500,1000")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=5000)
    p.add_argument("--tol", type=float, default=1e-5)
    args = p.parse_args()
    torch.set_num_threads(1)
    at = sorted(int(k) for k in args.at.split(","))
    names = args.models.split(";")
    params, steps, vels = {}, {}, {}
    for n in names:
        if n == "cfm":
            params[n], steps[n], vels[n] = build("cfm", args)
            continue
        torch.manual_seed(args.seed)
        net = Net(**_kwargs(n.partition(":")[2]))

        def step(x: Tensor, net: Net = net) -> None:
            z = torch.randn_like(x)
            s = torch.rand(x.shape[0])
            xs = (1 - s[:, None]) * x + s[:, None] * z + args.sigma * torch.randn_like(x)
            (net(s, xs) - (z - x)).square().sum(-1).mean().backward()

        params[n], steps[n], vels[n] = list(net.parameters()), step, net
    opts = {n: torch.optim.Adam(params[n], args.lr) for n in names}
    streams = Streams(names, args.seed)
    cpu = dict.fromkeys(names, 0.0)
    g = torch.Generator().manual_seed(args.seed)
    test = sample_toy("8gaussians", args.test, torch.Generator().manual_seed(10_000 + args.seed))
    for i in range(1, at[-1] + 1):
        x = sample_toy("8gaussians", args.batch, g)
        for n in names:
            opts[n].zero_grad()
            with streams.of(n):
                start = time.process_time()
                steps[n](x)
                opts[n].step()
                cpu[n] += time.process_time() - start
        if i in at:
            for n in names:
                nll = test_nll(vels[n], test, args.tol)
                print(
                    f"seed {args.seed} step {i:5d} {n:40s} cpu {cpu[n]:6.2f} NLL {nll:.4f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
