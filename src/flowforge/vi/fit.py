"""``fit_vi``: stochastic optimisation of a variational objective, returning its history."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from flowforge.core.flow import Flow
from flowforge.fit.loop import Stepper
from flowforge.fit.progress import Progress
from flowforge.fit.recovery import Recovery
from flowforge.fit.schedule import LRSchedule
from flowforge.vi.objectives import ELBO, LogDensity, VariationalObjective

__all__ = ["fit_vi"]

#: Steps between the snapshots that a non-finite step goes back to.
SNAPSHOT_EVERY = 25


def fit_vi(
    flow: Flow,
    log_target: LogDensity,
    steps: int = 1000,
    samples: int = 256,
    lr: float = 1e-3,
    objective: VariationalObjective | None = None,
    progress: bool = False,
    context: Tensor | None = None,
    schedule: str = "cosine",
    anneal: int = 0,
    clip: float | None = 100.0,
    optimizer: torch.optim.Optimizer | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    start: int = 0,
    max_recoveries: int = 5,
) -> list[dict[str, float]]:
    """Fit ``flow`` to the unnormalised density ``exp(log_target)``.

    Each step draws ``samples`` reparameterised samples, evaluates ``objective`` (default
    :class:`~flowforge.vi.ELBO`) and takes one Adam step on the step engine of
    :mod:`flowforge.fit.loop` (this function brings the objective, the annealing and the
    defaults). The flow is left in training mode as it was found.

    Args:
        flow: the variational family ``q``; a fast ``sample_and_log_prob`` matters (planar,
            radial, Sylvester, IAF).
        log_target: ``log p~``, ``(*, D) -> (*)``; any callable, e.g. a
            :mod:`flowforge.vi.targets` target.
        steps: optimisation steps.
        samples: draws per step.
        lr: Adam's learning rate (ignored with ``optimizer``).
        objective: a :class:`~flowforge.vi.objectives.VariationalObjective`.
        progress: show the progress bar (:class:`~flowforge.fit.progress.Progress`; tqdm is
            imported only then).
        context: ``(B, C)`` for a conditional flow (amortised inference).
        schedule: ``"cosine"`` (decay to 0) or ``"constant"`` learning rate.
        anneal: the first ``anneal`` steps fit ``beta_t log p~`` with ``beta_t`` rising
            linearly from 0.01 to 1 (Rezende and Mohamed's annealing); 0: none.
        clip: clip the gradient norm to this (``None``: no clipping).
        optimizer: an optimizer over the flow's parameters, instead of Adam. Its groups'
            ``initial_lr`` (set from ``lr`` on first use) is the schedule's peak.
        callback: called as ``callback(step, record)`` after each step.
        start: the first step to take (resuming: the flow, ``optimizer`` and the random
            generator restored as they were after step ``start - 1``; the schedule and the
            annealing continue where they were).
        max_recoveries: a non-finite loss or gradient norm (a draw from ``q`` where
            ``log p~`` overflows) skips the step, restores the flow and the optimizer as they
            were at the last snapshot (every 25 steps), halves the learning rate, says so on
            stderr and draws again; more than ``max_recoveries`` in a row raise (0: raise at
            the first). The halving is not kept in a checkpoint: a resumed run starts again
            from the schedule's rate.

    Returns:
        The history of steps ``start .. steps - 1``: ``{"step", "loss", "beta", "lr", *terms}``
        (floats; ``terms`` from the objective, e.g. ``elbo``).

    Raises:
        ValueError: on an unknown ``schedule`` or non-positive ``steps`` / ``samples``.
        FloatingPointError: if the loss or the gradient norm is infinite or NaN more than
            ``max_recoveries`` times in a row (the step is named).

    Example:
        >>> import torch, flowforge as ff
        >>> from flowforge.vi import fit_vi
        >>> flow = ff.flows.Planar(features=2, transforms=2)
        >>> history = fit_vi(flow, lambda x: -0.5 * (x - 1).pow(2).sum(-1), steps=5, samples=16)
        >>> len(history), sorted(history[-1])
        (5, ['beta', 'elbo', 'loss', 'lr', 'step'])
    """
    if steps < 1 or samples < 1:
        raise ValueError(f"fit_vi: expected steps >= 1 and samples >= 1, got {steps}, {samples}")
    if not 0 <= start <= steps:
        raise ValueError(f"fit_vi: expected 0 <= start <= steps = {steps}, got {start}")
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"fit_vi: expected schedule 'cosine' or 'constant', got {schedule!r}")
    objective = objective if objective is not None else ELBO()
    opt = optimizer if optimizer is not None else torch.optim.Adam(flow.parameters(), lr=lr)
    base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in opt.param_groups]
    params = [p for g in opt.param_groups for p in g["params"]]
    rates = LRSchedule(schedule, 1.0, steps)  # times each group's peak
    bar = Progress(steps, initial=start, enabled=progress, desc="fit_vi", leave=False)
    recovery = Recovery(flow, opt, rates, max_recoveries=max_recoveries, log=lambda _: None)

    def non_finite(what: str, value: float, step: int) -> None:
        if recovery.streak >= max_recoveries:
            _diverged(what, value, step)
        recovery.recover(what, step)
        bar.write(
            f"fit_vi: step {step}: the {what} is {value}: skipped, restored the state of step "
            f"{recovery.step} and halved the learning rate to {base_lrs[0] * rates.lr_at(step):.3g}"
            f" (recovery {recovery.streak} of {max_recoveries} in a row)"
        )

    stepper = Stepper(
        opt,
        rates,
        params=params,
        clip=clip,
        check_gradient=False,  # an infinite norm is clipped (the gradients scaled to zero)
        peaks=base_lrs,
        on_non_finite=non_finite,
    )
    history: list[dict[str, float]] = []
    was_training = flow.training
    flow.train()
    recovery.take(start)
    try:
        step = start
        while step < steps:
            beta = min(1.0, 0.01 + 0.99 * step / anneal) if anneal > 0 else 1.0
            target = log_target if beta == 1.0 else _tempered(log_target, beta)
            terms: dict[str, Tensor] = {}

            def loss(target: LogDensity = target, terms: dict[str, Tensor] = terms) -> Tensor:
                out = objective(flow, target, samples, context)
                terms.update(out.terms)
                return out.value

            done = stepper.step(step, loss)
            if done is None:  # skipped and restored: draw this step again
                continue
            value = float(done)
            lr_now = float(opt.param_groups[0]["lr"])
            record = {"step": float(step), "loss": value, "beta": beta, "lr": lr_now}
            record.update({k: float(v.detach()) for k, v in terms.items()})
            history.append(record)
            if callback is not None:
                callback(step, record)
            bar.show(step + 1, {"loss": f"{value:.4g}"})
            step += 1
            if step % SNAPSHOT_EVERY == 0:
                recovery.streak = 0
                recovery.take(step)
        # The last update was never evaluated: weights it broke go back to the last snapshot.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            final = objective(flow, log_target, samples, context).value
        if start < steps and not bool(torch.isfinite(final)):
            non_finite("loss at the final weights", float(final), steps)
    finally:
        bar.close()
        flow.train(was_training)
    return history


def _diverged(what: str, value: float, step: int) -> None:
    raise FloatingPointError(f"fit_vi: the {what} is {value} at step {step}")


def _tempered(log_target: LogDensity, beta: float) -> LogDensity:
    return lambda x: beta * log_target(x)
