"""The amortised posterior ``q(theta | x)``: a conditional flow over parameters, an observation
z-scoring and an embedding network, with the prior's support built in.

``theta`` in the user's units goes through fixed bijections inside the flow before the
preset's layers:

- a box prior ``[low, high]``: ``u = (theta - low) / (high - low)``, then ``logit(u)``, so every
  sample lies inside the box by construction and ``log_prob`` carries the Jacobian
  ``-sum(log(high - low)) - sum(log u + log(1 - u))``; ``theta`` outside the box has
  ``log_prob = -inf``;
- any other bounded support (``spec["bounds"]``, :func:`~flowforge.sbi.prior.support_bounds`):
  :class:`~flowforge.transforms.Bounds`, a logit per interval and a log per half-line, with its
  Jacobian;
- the parameters' z-scoring (:func:`~flowforge.sbi.zscore.theta_zscore`);
- with ``spec["linear_shift"]``, the preset then models ``theta - (A c + b)`` given the
  context ``c`` (:class:`~flowforge.sbi.shift.LinearShift`, fitted by least squares to the
  training pairs when the posterior is built).

The observation ``x`` (``(*x_shape)`` per simulation) goes through its z-scoring
(:class:`~flowforge.sbi.zscore.XScore`) and the embedding (flatten when there is none) to a
context vector ``(E,)``.

:func:`build_posterior` builds it from its JSON recipe (:attr:`Posterior.spec`), which is all a
saved run needs beside its safetensors weights.
"""

from __future__ import annotations

import datetime as _dt
import math
import operator
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from flowforge._version import __version__
from flowforge.core import Bijection, Compose, Flow
from flowforge.core.memory import too_big
from flowforge.flows import PRESETS
from flowforge.nn.embedding import EMBEDDINGS, build_embedding, check_embedding
from flowforge.runs import RUN_FORMAT, RUN_FORMAT_VERSION, RunWriter
from flowforge.runs.status import SBI_KIND
from flowforge.sbi.prior import BoxUniform
from flowforge.sbi.shift import LinearShift
from flowforge.sbi.zscore import XScore, theta_zscore
from flowforge.transforms import Bounds, Logit, SourceShift
from flowforge.transforms.standardize import Standardize

__all__ = [
    "Flatten",
    "Posterior",
    "build_posterior",
    "embedding_entry",
    "run_record",
    "save_posterior",
]


class Flatten(nn.Module):
    """The default embedding: ``(*, *x_shape) -> (*, prod(x_shape))``."""

    def __init__(self, x_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.out_features = math.prod(self.x_shape)

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[: x.dim() - len(self.x_shape)], self.out_features)


def embedding_entry(net: nn.Module | None) -> dict[str, Any] | None:
    """The JSON entry of an embedding: ``{"name", "config"}`` for :data:`~flowforge.nn.embedding.
    EMBEDDINGS`' classes, ``{"name": "custom", "class": ...}`` for any other module, ``None`` for
    none."""
    if net is None:
        return None
    for name, cls in EMBEDDINGS.items():
        if type(net) is cls:
            return {"name": name, "config": dict(net.config)}  # type: ignore[arg-type]
    return {"name": "custom", "class": f"{type(net).__module__}.{type(net).__qualname__}"}


def _numbers(value: Any, what: str, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a tensor, or one line naming ``what`` (strings were "too many dimensions
    'str'")."""
    try:
        return torch.as_tensor(value, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"expected {what} as numbers (a tensor or an array), got {type(value).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else err!r}"
        ) from None


class Posterior(nn.Module):
    """``q(theta | x)``: sample, evaluate and maximise the posterior at observations.

    Built by :meth:`flowforge.sbi.NPE.fit` / :meth:`flowforge.sbi.FMPE.fit` (or
    :func:`build_posterior`); saved by :meth:`save`, read back by :func:`flowforge.sbi.load`
    and :func:`flowforge.load`.

    Shapes: an observation ``x_o`` of the simulator's event shape ``(*X)`` gives samples
    ``(n, D)`` and log-densities ``(N,)`` for ``theta`` ``(N, D)``; a batch ``(B, *X)`` of
    observations gives ``(n, B, D)`` and ``(N, B)`` for ``theta`` ``(N, B, D)`` (each row
    ``theta[:, b]`` evaluated at ``x_o[b]``), the convention of ``Flow.sample(n, context)``.

    Attributes:
        flow: the conditional flow over ``theta`` (user's units; its first bijections are the
            box's logit and the z-scoring).
        embedding: ``(*, *X) -> (*, E)``, after :attr:`x_score`.
        x_score: the observations' z-scoring.
        prior: the prior (``None`` after loading a run whose prior was not a box).
        spec: the JSON recipe (:func:`build_posterior`).
        history: the fit's validation records (``{"step", "train_loss", "val_loss", "lr"}``).
        info: the fit's summary (steps, best step, seconds, rows dropped).

    Example:
        >>> import torch, flowforge as ff
        >>> prior = ff.sbi.BoxUniform([-1.0, -1.0], [1.0, 1.0])
        >>> theta, x = ff.sbi.simulate(lambda t: t + 0.1 * torch.randn_like(t), prior, 200)
        >>> est = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (8,)})
        >>> posterior = est.fit(theta, x, max_steps=5)
        >>> posterior.sample(4, torch.zeros(2)).shape, posterior.sample(4, torch.zeros(3, 2)).shape
        (torch.Size([4, 2]), torch.Size([4, 3, 2]))
        >>> posterior.log_prob(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.zeros(2))[1]
        tensor(-inf)
    """

    low: Tensor
    high: Tensor

    def __init__(
        self,
        flow: Flow,
        embedding: nn.Module,
        x_score: XScore,
        spec: dict[str, Any],
        prior: Distribution | None = None,
    ) -> None:
        super().__init__()
        self.flow, self.embedding, self.x_score = flow, embedding, x_score
        self.spec, self.prior = spec, prior
        self.theta_dim = int(spec["theta_dim"])
        self.x_shape = tuple(int(s) for s in spec["x_shape"])
        self.trial_axis = bool(getattr(embedding, "trial_axis", False))
        box = spec.get("box")
        self.is_box = box is not None
        lo, hi = _bounds_of(spec)
        self.bounded = lo is not None
        if lo is None or hi is None:
            lo = torch.full((self.theta_dim,), -math.inf)
            hi = torch.full((self.theta_dim,), math.inf)
        self.register_buffer("low", lo, persistent=False)
        self.register_buffer("high", hi, persistent=False)
        self.history: list[dict[str, float]] = []
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------------ observations
    def _check_x(self, x: Tensor, what: str = "x_o") -> bool:
        """Whether ``x`` is a batch ``(B, *X)`` (else one observation ``(*X)``)."""
        k = len(self.x_shape)
        shape = tuple(x.shape)
        expected = f"{self.x_shape} or (B, *{self.x_shape})"

        def fits(event: tuple[int, ...]) -> bool:
            if self.trial_axis:  # any number of trials
                return len(event) == k and event[1:] == self.x_shape[1:] and event[0] >= 1
            return event == self.x_shape

        if x.dim() == k and fits(shape):
            batched = False
        elif x.dim() == k + 1 and fits(shape[1:]):
            batched = True
        else:
            raise ValueError(f"expected {what} of shape {expected}, got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"expected a finite {what}, got NaN or inf values")
        return batched

    def embed(self, x: Tensor) -> Tensor:
        """The context of observations: ``(*, *X) -> (*, E)`` (z-scoring, then the embedding)."""
        return self.embedding(self.x_score(x))

    def _context(self, x_o: Tensor | Any) -> tuple[Tensor, bool]:
        x = _numbers(x_o, "x_o", torch.get_default_dtype(), self.low.device)
        batched = self._check_x(x)
        c = self.embed(x if batched else x.unsqueeze(0))  # (B, E)
        return c, batched

    # ------------------------------------------------------------------ the posterior
    @torch.no_grad()
    def sample(self, n: int, x_o: Tensor | Any) -> Tensor:
        """``n`` posterior samples at ``x_o``: ``(n, D)``, or ``(n, B, D)`` for ``(B, *X)``.

        With a bounded prior every sample lies strictly inside its support.
        """
        try:  # an int, numpy's and torch's integers included; 1.5 and True are not counts
            count = -1 if isinstance(n, bool) else operator.index(n)
        except TypeError:
            count = -1
        if count < 0:
            raise ValueError(f"expected a number of samples n >= 0, got {n!r}")
        n = count
        was = self.training
        self.eval()
        try:
            c, batched = self._context(x_o)
            # the samples and the flow's activations (a few copies): refused before drawing
            why = too_big(64.0 * n * c.shape[0] * self.theta_dim, f"{n} samples")
            if why is not None:  # 10**30 was torch's "Overflow when unpacking long long"
                raise ValueError(f"sample(n={n}): {why}; draw fewer at a time")
            theta = self.flow.sample(n, c)  # (n, B, D)
            theta = self._inside(theta)
        finally:
            self.train(was)
        return theta if batched else theta[:, 0]

    def _inside(self, theta: Tensor) -> Tensor:
        """Samples clamped into the open support (a float32 sigmoid may round to 0 or 1)."""
        if not self.bounded:
            return theta
        lo, hi = self.low.to(theta), self.high.to(theta)
        lo_in = torch.nextafter(lo, hi)
        hi_in = torch.nextafter(hi, lo)
        return torch.minimum(torch.maximum(theta, lo_in), hi_in)

    def log_prob(self, theta: Tensor, x_o: Tensor | Any, track_gradients: bool = False) -> Tensor:
        """``log q(theta | x_o)`` in the user's units (the box's and z-scoring's Jacobians in).

        Args:
            theta: ``(N, D)`` for one observation ``(*X)``; ``(N, B, D)`` for ``(B, *X)``.
            x_o: the observation(s).
            track_gradients: keep the graph (gradients to ``theta`` and the weights); by
                default the result is computed without it.

        Returns:
            ``(N,)`` or ``(N, B)``; ``-inf`` for ``theta`` outside a bounded prior's support.
        """
        with torch.set_grad_enabled(track_gradients and torch.is_grad_enabled()):
            return self._log_prob(theta, x_o)

    def _log_prob(self, theta: Tensor, x_o: Tensor | Any) -> Tensor:
        c, batched = self._context(x_o)  # (B, E)
        theta = _numbers(theta, "theta", c.dtype, c.device)
        want = 3 if batched else 2
        if (
            theta.dim() != want
            or theta.shape[-1] != self.theta_dim
            or (batched and theta.shape[1] != c.shape[0])
        ):
            expected = (
                f"(N, {c.shape[0]}, {self.theta_dim})" if batched else f"(N, {self.theta_dim})"
            )
            raise ValueError(
                f"expected theta of shape {expected} for x_o of shape "
                f"{'(B, *X)' if batched else '(*X)'}, got {tuple(theta.shape)}"
            )
        if not torch.isfinite(theta).all():  # was -inf, as if outside the prior, in silence
            raise ValueError("expected finite theta, got NaN or inf values")
        rows = theta if batched else theta.unsqueeze(1)  # (N, B, D)
        inside = self._support(rows)
        if self.bounded:  # evaluate outside rows at a point inside, then -inf
            rows = torch.where(inside.unsqueeze(-1), rows, self._centre().to(rows))
        ctx = c.unsqueeze(0).expand(rows.shape[0], *c.shape)  # (N, B, E)
        lp = self.flow.log_prob(rows.reshape(-1, self.theta_dim), ctx.reshape(-1, c.shape[-1]))
        lp = lp.reshape(rows.shape[:2]).masked_fill(~inside, -math.inf)
        return lp if batched else lp[:, 0]

    def _centre(self) -> Tensor:
        """A point inside the support: the middle of an interval, one unit in from the bound
        of a half-line, 0 on the line."""
        lo_f, hi_f = torch.isfinite(self.low), torch.isfinite(self.high)
        zero = torch.zeros_like(self.low)
        lo, hi = torch.where(lo_f, self.low, zero), torch.where(hi_f, self.high, zero)
        return torch.where(
            lo_f & hi_f,
            0.5 * (lo + hi),
            torch.where(lo_f, lo + 1.0, torch.where(hi_f, hi - 1.0, zero)),
        )

    def log_prob_unconstrained(self, theta: Tensor, x_o: Tensor | Any) -> Tensor:
        """The log-density at ``theta`` of the posterior of the unconstrained parameters
        ``eta`` (a box prior: ``logit((theta - low) / (high - low))``; another bounded
        support: :class:`~flowforge.transforms.Bounds`; otherwise :meth:`log_prob`):
        ``log q(theta | x_o) + sum(log |d theta / d eta|)``.

        Its level sets bound the region where the posterior's mass lies without the logit's
        spikes of density at the box's faces (what the truncated rounds of
        :func:`~flowforge.sbi.sequential` threshold). Shapes as :meth:`log_prob`.
        """
        lp = self.log_prob(theta, x_o)
        if not self.bounded:
            return lp
        t = torch.as_tensor(theta, dtype=lp.dtype, device=lp.device)
        if not self.is_box:
            inside = torch.isfinite(lp).unsqueeze(-1)
            t = torch.where(inside, self._inside(t), self._centre().to(t))
            to_free = Bounds(self.low, self.high).to(t.device)
            eta_ladj = to_free(t.reshape(-1, self.theta_dim))[1].reshape(lp.shape)
            return torch.where(torch.isfinite(lp), lp - eta_ladj, lp)
        width = (self.high - self.low).to(t)
        u = ((t - self.low.to(t)) / width).clamp(1e-30, 1.0)
        ladj = (torch.log(width) + torch.log(u) + torch.log1p(-u.clamp(max=1 - 1e-7))).sum(-1)
        return torch.where(torch.isfinite(lp), lp + ladj, lp)

    def _support(self, rows: Tensor) -> Tensor:
        """Whether each row is inside the open box (all true without a box)."""
        if not self.bounded:
            return ~torch.isnan(rows).any(-1)
        lo, hi = self.low.to(rows), self.high.to(rows)
        return ((rows > lo) & (rows < hi)).all(-1)

    def map(
        self,
        x_o: Tensor | Any,
        samples: int = 1000,
        steps: int = 200,
        lr: float = 0.01,
    ) -> Tensor:
        """The maximum of the posterior density at ``x_o``: ``(D,)`` or ``(B, D)``.

        Starts from the best of ``samples`` posterior samples and climbs ``log_prob`` by Adam
        for ``steps`` steps in the unconstrained space (the box's logit).
        """
        c, batched = self._context(x_o)
        c = c.detach()
        with torch.no_grad():
            x = x_o if batched else torch.as_tensor(x_o).unsqueeze(0)
            draws = self.sample(samples, x)  # (S, B, D)
            lp = self.log_prob(draws, x)  # (S, B)
            best = draws.gather(0, lp.argmax(0)[None, :, None].expand(1, *draws.shape[1:]))[0]
        eta = self._to_free(best).clone().requires_grad_(True)  # (B, D)
        opt = torch.optim.Adam([eta], lr=lr)
        was = self.training
        self.eval()
        try:
            for _ in range(steps):
                opt.zero_grad()
                loss = -self.flow.log_prob(self._from_free(eta), c).sum()
                if not bool(torch.isfinite(loss)):
                    break
                loss.backward()
                opt.step()
        finally:
            self.train(was)
        out = self._inside(self._from_free(eta.detach()))
        with torch.no_grad():  # keep the start where the climb went nowhere better
            better = self.flow.log_prob(out, c) >= self.flow.log_prob(best, c)
            out = torch.where(better[:, None], out, best)
        return out if batched else out[0]

    def _to_free(self, theta: Tensor) -> Tensor:
        if not self.bounded:
            return theta
        return Bounds(self.low, self.high).to(theta)(theta)[0]

    def _from_free(self, eta: Tensor) -> Tensor:
        if not self.bounded:
            return eta
        return Bounds(self.low, self.high).to(eta).inverse(eta)[0]

    # ------------------------------------------------------------------ runs
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the posterior as a run directory (``config.json``, ``model.safetensors``,
        ``metrics.jsonl``, ``results.json``) through :class:`~flowforge.runs.RunWriter`;
        :func:`flowforge.load` and :func:`flowforge.sbi.load` read it back without executing
        code."""
        save_posterior(self, path, overwrite=overwrite)

    def extra_repr(self) -> str:
        method = self.spec.get("method", "npe")
        return f"method={method!r}, theta_dim={self.theta_dim}, x_shape={self.x_shape}"


def _bounds_of(spec: dict[str, Any]) -> tuple[Tensor | None, Tensor | None]:
    """``(low, high)`` of a recipe's box or bounds (``None`` sides read as infinite), or
    ``(None, None)`` without either."""
    entry = spec.get("box") or spec.get("bounds")
    if entry is None:
        return None, None

    def side(values: list[float | None], open_at: float) -> Tensor:
        return torch.tensor([open_at if v is None else float(v) for v in values])

    return side(entry["low"], -math.inf), side(entry["high"], math.inf)


def _theta_prefix(spec: dict[str, Any], rows: Tensor | None) -> list[Bijection]:
    """The fixed bijections before the preset: the box's logit (or another support's
    :class:`~flowforge.transforms.Bounds`), then the z-scoring.

    ``rows``: training parameters in the user's units (``None``: placeholders, a saved
    posterior's values are loaded into them).
    """
    d = int(spec["theta_dim"])
    pre: list[Bijection] = []
    box = spec.get("box")
    if box is not None:
        low = torch.tensor(box["low"], dtype=torch.float64)
        high = torch.tensor(box["high"], dtype=torch.float64)
        pre += [Standardize(low, high - low), Logit(0.0, d)]
    elif spec.get("bounds") is not None:
        low_b, high_b = _bounds_of(spec)
        assert low_b is not None and high_b is not None
        pre += [Bounds(low_b, high_b)]
    free = rows
    if rows is not None and pre:
        with torch.no_grad():
            free = rows.detach().double()
            for b in pre:
                free, _ = b.double()(free)
            for b in pre:
                b.float()
    pre += theta_zscore(spec["z_score_theta"], free, d)
    return pre


#: The most training pairs the linear shift's least squares reads.
_SHIFT_ROWS = 20_000


def _linear_shift(
    inner: Bijection,
    pre: list[Bijection],
    embedding: nn.Module,
    x_score: XScore,
    context: int,
    theta: Tensor | None,
    x: Tensor | None,
) -> SourceShift:
    """``inner`` behind a :class:`~flowforge.sbi.shift.LinearShift` of the context, fitted by
    least squares to the training pairs' prefixed parameters and contexts (at most
    :data:`_SHIFT_ROWS` of them; without pairs: zeros, a saved posterior's weights load into
    it)."""
    d = int(inner.event_shape[0])
    net = LinearShift(context, d)
    if theta is not None and x is not None:
        with torch.no_grad():
            z = theta[:_SHIFT_ROWS].to(torch.get_default_dtype())
            for b in pre:
                z, _ = b(z)
            was = embedding.training
            embedding.eval()
            try:
                rows = x[:_SHIFT_ROWS].to(z.dtype)
                c = torch.cat([embedding(x_score(r)) for r in rows.split(4096)])
            finally:
                embedding.train(was)
            net.fit(z, c)
    return SourceShift(inner, net, context=context)


def build_posterior(
    spec: dict[str, Any],
    theta: Tensor | None = None,
    x: Tensor | None = None,
    embedding: nn.Module | None = None,
    prior: Distribution | None = None,
) -> Posterior:
    """The (untrained) posterior of a recipe, its z-scoring fitted to ``theta`` and ``x``.

    Args:
        spec: ``{"method", "theta_dim", "x_shape", "box": {"low", "high"} | None, "bounds":
            {"low", "high"} | None (``None`` entries: an open side), "flow",
            "flow_options", "z_score_theta", "z_score_x", "embedding", "linear_shift"}`` (see
            :func:`embedding_entry`; ``linear_shift``, absent in runs saved before it: the
            preset models ``theta - (A c + b)`` given the context ``c``,
            :class:`~flowforge.sbi.shift.LinearShift`, fitted to ``theta`` and ``x``).
        theta: ``(N, D)`` training parameters (``None``: placeholders, for loading).
        x: ``(N, *X)`` training observations (``None``: placeholders).
        embedding: the embedding module (required for a ``"custom"`` entry; a built-in one is
            built from its entry when not given).
        prior: the prior, kept on the posterior.

    Raises:
        ValueError: an unknown flow or embedding, options a preset rejects, a custom embedding
            that is not given, or an embedding with batch normalisation.
    """
    x_shape = tuple(int(s) for s in spec["x_shape"])
    entry = spec.get("embedding")
    if embedding is None:
        if entry is None:
            embedding = Flatten(x_shape)
        elif entry["name"] == "custom":
            raise ValueError(
                f"the posterior's embedding is a custom module ({entry.get('class')}); pass it "
                "as embedding= (an instance of that class; its weights are loaded)"
            )
        else:
            embedding = build_embedding(entry["name"], entry["config"])
    check_embedding(embedding)
    x_score = XScore(spec["z_score_x"], x_shape, bool(getattr(embedding, "trial_axis", False)))
    if x is not None:
        x_score.fit(x)
    with torch.no_grad():  # the context size, from one placeholder observation
        probe = torch.zeros(1, *x_shape)
        context = int(embedding(x_score(probe)).shape[-1])
    name = spec["flow"]
    if name not in PRESETS:
        raise ValueError(f"unknown flow {name!r}; valid flows: {', '.join(sorted(PRESETS))}")
    options = {**spec.get("flow_options", {}), "features": int(spec["theta_dim"])}
    try:
        preset = PRESETS[name](**options, context=context)
    except TypeError as e:
        raise ValueError(f"cannot build flow {name!r} with {options}: {e}") from None
    pre = _theta_prefix(spec, theta)
    inner: Bijection = preset.bijection
    if spec.get("linear_shift"):
        inner = _linear_shift(inner, pre, embedding, x_score, context, theta, x)
    bijection: Bijection
    if spec.get("method") == "fmpe" and isinstance(inner, Compose):  # flow matching: one chain
        bijection = Compose([*pre, *inner.bijections]) if pre else inner
    else:
        bijection = Compose([*pre, inner]) if pre else inner
    flow = Flow(bijection, preset.base, context=context)
    if prior is None and spec.get("box") is not None:
        prior = BoxUniform(spec["box"]["low"], spec["box"]["high"])
    return Posterior(flow, embedding, x_score, spec, prior)


def run_record(posterior: Posterior, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run record (``config.json``) of a posterior."""
    prior = posterior.prior
    record: dict[str, Any] = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "task": SBI_KIND,
        "posterior": posterior.spec,
        "prior": {"box": posterior.spec.get("box"), "repr": repr(prior) if prior else None},
        "total_steps": int(posterior.info.get("steps", 0)),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "flowforge": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    record.update(extra or {})
    return record


def save_posterior(
    posterior: Posterior,
    path: str | os.PathLike[str],
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    results: dict[str, Any] | None = None,
    plots: Callable[[Path], Iterable[Path]] | None = None,
) -> Path:
    """Write ``posterior`` as the run directory ``path``: ``config.json``,
    ``model.safetensors``, ``metrics.jsonl`` (the fit's validation records), the plots
    ``plots(root)`` draws, then ``results.json`` (the fit's summary plus ``results``).

    A failure before ``results.json`` removes what was written (no half-written run).

    Raises:
        ConfigError, RunError: ``path`` is not a new (or, with ``overwrite``, an old) run.
    """
    writer = RunWriter.create(path, run_record(posterior, extra), overwrite=overwrite)
    try:
        writer.write_weights(posterior)
        for record in posterior.history:
            writer.metrics.append(record)
        if plots is not None:
            writer.write_plots(plots)
        writer.write_results({**_jsonable(posterior.info), **(results or {})})
    except BaseException:
        writer.discard()
        raise
    writer.close()
    return writer.files.root


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, float) and v != v:  # NaN is not JSON
            v = None
        out[k] = v
    return out
