"""Screens of NPE on the sbibm tasks at 10,000 simulations (the race's pairs, seed = budget):
best validation step and loss, and on Gaussian linear the held-out KL to the exact posterior
(the mean of ``log p(theta | x) - log q(theta | x)`` over 5,000 fresh pairs) and the posterior
mean's error at the race's three observations, in posterior standard deviations.

Run (one JSON line each; benchmarks/results/sbi_gl_kl_screens.jsonl, Stop 32 of
benchmarks/results/sbi.md)::

    python benchmarks/sbi_gl_screens.py '{}'
    python benchmarks/sbi_gl_screens.py '{"lr": 5e-4}'
    python benchmarks/sbi_gl_screens.py '{"patience": 8, "est": {"flow": "maf"}}'
    python benchmarks/sbi_gl_screens.py '{"task": "slcp"}'
    python benchmarks/sbi_gl_screens.py '{"sbi": true}'   # sbi's NPE (NSF) on the GL pairs

The JSON holds ``NPE.fit`` keywords, plus ``task``, ``budget``, ``est`` (``NPE`` keywords)
and ``sbi``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from torch.distributions import MultivariateNormal  # noqa: E402

import flowforge as ff  # noqa: E402
from flowforge.sbi.prior import box_bounds  # noqa: E402
from flowforge.sbi.tasks import get_task  # noqa: E402


def main(arg: str) -> dict:
    torch.set_num_threads(1)
    cfg = json.loads(arg)
    task = get_task(cfg.pop("task", "gaussian_linear"))
    budget = cfg.pop("budget", 10000)
    theta, x = task.sample_joint(budget, seed=budget)
    prior = task.prior
    if isinstance(prior, MultivariateNormal):
        prior = MultivariateNormal(prior.loc.float(), prior.covariance_matrix.float())
    else:
        low, high = box_bounds(prior)
        prior = ff.sbi.BoxUniform(low.float(), high.float())
    torch.manual_seed(0)
    out: dict = {"cfg": arg}
    cpu = time.process_time()
    if cfg.pop("sbi", False):
        from sbi.inference import NPE

        inference = NPE(prior=prior, density_estimator="nsf", show_progress_bars=False)
        inference.append_simulations(theta.float(), x.float())
        net = inference.train()
        out["fit_cpu"] = round(time.process_time() - cpu, 1)
        val = list(inference._summary["validation_loss"])
        out["best_val"] = round(min(val), 4)

        def log_q(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return net.log_prob(t.unsqueeze(0), c)[0]

        sample = None
    else:
        est = ff.sbi.NPE(prior, **cfg.pop("est", {}))
        history: list[dict[str, float]] = []
        post = est.fit(theta.float(), x.float(), callback=history.append, **cfg)
        out["fit_cpu"] = round(time.process_time() - cpu, 1)
        out.update(
            steps=post.info["steps"],
            best=post.info["best_step"],
            best_val=round(post.info["best_val_loss"], 4),
        )
        every = max(1, len(history) // 12)
        out["val_traj"] = [round(h["val_loss"], 3) for h in history][::every]
        out["train_traj"] = [round(h["train_loss"], 3) for h in history][::every]

        def log_q(t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return post.log_prob(t.unsqueeze(0), c)[0]

        sample = post.sample
    if task.name == "gaussian_linear":
        t2, x2 = task.sample_joint(5000, seed=777)
        exact = torch.stack([task.posterior(xi).log_prob(ti) for ti, xi in zip(t2, x2)])
        with torch.no_grad():
            lq = log_q(t2.float(), x2.float()).double()
        out["kl"] = round(float((exact - lq).mean()), 4)
        if sample is not None:
            stats = []
            for i in range(3):
                _, x_o = task.observation(i)
                s = sample(4000, x_o.float()).double()
                sd = s.std(0) / 0.05**0.5
                err = float((s.mean(0) - x_o / 2).norm() / 0.05**0.5)
                stats.append([round(err, 3), round(float(sd.mean()), 3)])
            out["mean_err_sd_ratio"] = stats
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "{}")
