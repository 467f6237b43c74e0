"""Simulation-based inference, the library: NPE against a closed-form posterior, bounded priors
that no sample leaves, densities that integrate to one (the box's Jacobian), batched shapes that
match one-by-one evaluation, z-scoring modes, save / load, and one-line errors on bad input."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch.distributions import Independent, MultivariateNormal, Normal

import flowforge as ff
from flowforge.runs import RunError, open_run

TINY_NSF = {"transforms": 2, "bins": 4, "hidden": (16, 16)}


def _identity_sims(n: int, prior: torch.distributions.Distribution, noise: float = 0.1):
    return ff.sbi.simulate(lambda t: t + noise * torch.randn_like(t), prior, n, seed=1)


@pytest.fixture(scope="module")
def box_posterior() -> ff.sbi.Posterior:
    """An NPE posterior on a box prior: x = theta + 0.1 noise (trained briefly)."""
    torch.manual_seed(0)
    prior = ff.sbi.BoxUniform([-1.0, 0.0], [1.0, 3.0])
    theta, x = _identity_sims(2000, prior)
    return ff.sbi.NPE(prior, flow_options=TINY_NSF).fit(
        theta, x, max_steps=500, batch_size=256, lr=5e-3
    )


# ---------------------------------------------------------------------------- correctness
def test_npe_matches_the_conjugate_gaussian_posterior() -> None:
    """Gaussian linear: theta ~ N(m0, S0), x = A theta + N(0, s^2 I). The posterior is
    N(mu, C) with C = (S0^-1 + A^T A / s^2)^-1 and mu = C (S0^-1 m0 + A^T x / s^2)."""
    m0 = torch.tensor([0.5, -0.5])
    S0 = torch.tensor([[1.0, 0.3], [0.3, 0.5]])
    A = torch.tensor([[1.0, 0.5], [-0.3, 1.0], [0.2, 0.2]])
    s = 0.4
    prior = MultivariateNormal(m0, S0)
    theta, x = ff.sbi.simulate(lambda t: t @ A.T + s * torch.randn(len(t), 3), prior, 3000)
    est = ff.sbi.NPE(prior, flow="maf", flow_options={"transforms": 2, "hidden": (32,)})
    est.small_budget_average = None  # the raw weights stop early (the average trains 800)
    post = est.fit(theta, x, max_steps=800, batch_size=256, lr=3e-3)
    x_o = torch.tensor([0.8, -0.2, 0.3])
    P0 = torch.linalg.inv(S0)
    C = torch.linalg.inv(P0 + A.T @ A / s**2)
    mu = C @ (P0 @ m0 + A.T @ x_o / s**2)
    samples = post.sample(20_000, x_o)
    assert torch.allclose(samples.mean(0), mu, atol=0.06), (samples.mean(0), mu)
    cov = torch.cov(samples.T)
    assert torch.allclose(cov, C, atol=0.25 * C.diagonal().max()), (cov, C)
    # the density too: KL(p || q) by the closed form's samples is small
    p = MultivariateNormal(mu, C)
    t = p.sample((5000,))
    kl = (p.log_prob(t) - post.log_prob(t, x_o)).mean()
    assert 0 <= float(kl) < 0.1, float(kl)


@pytest.mark.parametrize("z_score", ["none", "independent", "structured"])
def test_box_posterior_density_integrates_to_one(z_score: str) -> None:
    """exp(log_prob) over the box sums to 1 (the logit's and scaling's Jacobians in), for a
    briefly trained (non-trivial) posterior, in 1-D by a fine grid."""
    prior = ff.sbi.BoxUniform([-3.0], [5.0])
    theta, x = _identity_sims(400, prior, noise=0.5)
    post = ff.sbi.NPE(prior, z_score=z_score, flow_options=TINY_NSF).fit(theta, x, max_steps=40)
    grid = torch.linspace(-3.0, 5.0, 40_001)[1:-1, None]  # inside the open box
    for x_o in ([0.5], [4.0]):
        lp = post.log_prob(grid, torch.tensor(x_o))
        mass = torch.logsumexp(lp, 0).exp() * (8.0 / 40_000)
        assert abs(float(mass) - 1.0) < 0.01, (z_score, x_o, float(mass))


def test_box_posterior_density_integrates_to_one_in_2d(box_posterior) -> None:
    n = 400
    g0 = torch.linspace(-1.0, 1.0, n + 1)[:-1] + 1.0 / n
    g1 = torch.linspace(0.0, 3.0, n + 1)[:-1] + 1.5 / n
    grid = torch.cartesian_prod(g0, g1)  # cell centres
    lp = box_posterior.log_prob(grid, torch.tensor([0.2, 1.5]))
    mass = torch.logsumexp(lp, 0).exp() * (2.0 / n) * (3.0 / n)
    assert abs(float(mass) - 1.0) < 0.02, float(mass)


def test_box_posterior_concentrates_where_the_observation_says(box_posterior) -> None:
    s = box_posterior.sample(4000, torch.tensor([0.2, 1.5]))
    assert torch.allclose(s.mean(0), torch.tensor([0.2, 1.5]), atol=0.05), s.mean(0)
    assert bool((s.std(0) < 0.25).all()), s.std(0)


# ---------------------------------------------------------------------------- support
@pytest.mark.parametrize("scale", [1.0, 1e3, 1e6])
def test_samples_never_leave_the_box(box_posterior, scale: float) -> None:
    """10^5 samples, for observations in and far out of the training range, all strictly
    inside the box, all finite; their log_prob is finite."""
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0])
    for x_o in (torch.tensor([0.9, 2.9]), torch.tensor([-5.0, 20.0]) * scale):
        s = box_posterior.sample(100_000, x_o)
        assert s.shape == (100_000, 2)
        assert bool(torch.isfinite(s).all())
        assert bool(((s > low) & (s < high)).all()), (x_o, s.min(0), s.max(0))
        lp = box_posterior.log_prob(s[:2000], x_o)
        assert not bool(torch.isnan(lp).any())


def test_latents_far_in_the_tails_still_land_inside_the_box(box_posterior, monkeypatch) -> None:
    """A latent of norm ~100 rounds sigmoid to exactly 0 or 1 in float32: the sample is still
    strictly inside the box (and so has a finite log_prob under the prior)."""
    monkeypatch.setattr(
        box_posterior.flow, "_latent", lambda total, ctx, t: 100 * torch.randn(total, 2)
    )
    s = box_posterior.sample(10_000, torch.tensor([0.0, 1.0]))
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 3.0])
    assert bool(((s > low) & (s < high)).all()), (s.min(0), s.max(0))
    assert bool(torch.isfinite(box_posterior.prior.log_prob(s)).all())


def test_log_prob_outside_the_box_is_minus_inf(box_posterior) -> None:
    theta = torch.tensor([[0.0, 1.0], [1.5, 1.0], [0.0, -0.1], [1.0, 1.0], [-1.0, 0.0]])
    lp = box_posterior.log_prob(theta, torch.tensor([0.0, 1.0]))
    assert torch.isfinite(lp[0])
    assert lp[1:].tolist() == [-math.inf] * 4
    far = box_posterior.log_prob(theta, torch.tensor([1e7, -1e7]))
    assert not bool(torch.isnan(far).any()) and far[1:].tolist() == [-math.inf] * 4


# ---------------------------------------------------------------------------- shapes
def test_single_and_batched_shapes(box_posterior) -> None:
    x1, xb = torch.tensor([0.0, 1.0]), torch.tensor([[0.0, 1.0], [0.5, 2.0], [-0.5, 0.5]])
    assert box_posterior.sample(7, x1).shape == (7, 2)
    assert box_posterior.sample(7, xb).shape == (7, 3, 2)
    assert box_posterior.log_prob(torch.zeros(5, 2) + 0.5, x1).shape == (5,)
    assert box_posterior.log_prob(torch.zeros(5, 3, 2) + 0.5, xb).shape == (5, 3)
    assert box_posterior.map(x1).shape == (2,)
    assert box_posterior.map(xb, samples=200, steps=20).shape == (3, 2)


def test_batched_conditioning_equals_one_by_one(box_posterior) -> None:
    xb = torch.tensor([[0.0, 1.0], [0.5, 2.0], [-0.5, 0.5]])
    theta = box_posterior.sample(50, torch.tensor([0.0, 1.5]))[:, None].expand(50, 3, 2)
    together = box_posterior.log_prob(theta, xb)
    for b in range(3):
        alone = box_posterior.log_prob(theta[:, b], xb[b])
        assert torch.allclose(together[:, b], alone, atol=1e-5)
    # batched samples: column b follows x_o[b]
    s = box_posterior.sample(3000, xb)
    assert torch.allclose(s.mean(0), xb, atol=0.06), s.mean(0)


def test_map_finds_the_mode(box_posterior) -> None:
    m = box_posterior.map(torch.tensor([0.3, 1.2]))
    assert torch.allclose(m, torch.tensor([0.3, 1.2]), atol=0.08), m


# ---------------------------------------------------------------------------- z-scoring
def test_z_scoring_modes_set_their_statistics() -> None:
    prior = MultivariateNormal(torch.tensor([10.0, -5.0]), torch.tensor([[4.0, 1.9], [1.9, 1.0]]))
    theta, x = ff.sbi.simulate(
        lambda t: torch.cat([1000 * t, t[:, :1] * 0.001], 1) + torch.randn(len(t), 3), prior, 3000
    )
    for mode in ("none", "independent", "structured"):
        post = ff.sbi.NPE(prior, z_score=mode, flow_options=TINY_NSF).build(theta, x)
        z = theta
        chain = post.flow.bijection.bijections[:-1] if mode != "none" else []
        for b in chain:
            z, _ = b(z)
        xs = post.x_score(x)
        if mode == "none":
            assert torch.equal(xs, x)
        elif mode == "independent":
            assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-3)
            assert torch.allclose(z.std(0), torch.ones(2), atol=1e-3)
            assert torch.allclose(xs.std(0), torch.ones(3), atol=1e-3)
            assert abs(float(torch.corrcoef(z.T)[0, 1])) > 0.9  # correlation left alone
        else:  # structured: theta whitened, x: one mean and one std for the observation
            assert torch.allclose(torch.cov(z.T), torch.eye(2), atol=1e-3)
            assert post.x_score.mean.shape == () and post.x_score.std.shape == ()
            flat = x.reshape(-1)
            assert torch.allclose(xs.reshape(-1), (flat - flat.mean()) / flat.std(), atol=1e-3)


@pytest.mark.parametrize("z_score", ["none", "independent", "structured"])
def test_z_scored_density_is_in_the_users_units(z_score: str) -> None:
    """An unbounded prior far from 0: exp(log_prob) of a 1-D posterior sums to one."""
    prior = Independent(Normal(torch.tensor([100.0]), torch.tensor([20.0])), 1)
    theta, x = _identity_sims(500, prior, noise=5.0)
    post = ff.sbi.NPE(prior, z_score=z_score, flow_options=TINY_NSF).fit(theta, x, max_steps=30)
    grid = torch.linspace(-100.0, 300.0, 40_001)[:, None]
    lp = post.log_prob(grid, torch.tensor([110.0]))
    mass = torch.logsumexp(lp, 0).exp() * (400.0 / 40_000)
    assert abs(float(mass) - 1.0) < 0.01, float(mass)


def test_default_schedule_stretches_with_the_budget() -> None:
    """Past 3,000 training pairs the patience grows and the cosine spans 150 epochs, so a
    large budget is not stopped while its rate is still high; below, 20,000 steps."""
    npe = ff.sbi.NPE(ff.sbi.BoxUniform([0.0], [1.0]))
    assert npe.plan(900, 200) == (20_000, 20)
    assert npe.plan(3299, 200) == (20_000, 20)
    assert npe.plan(3300, 200) == (17 * 150, 20)  # the large budget's schedule, patience floor
    assert npe.plan(6600, 200) == (33 * 150, 22)
    assert npe.plan(9000, 200) == (6750, 30)  # 45 steps an epoch
    assert npe.plan(90_000, 500) == (27_000, 300)
    assert ff.sbi.FMPE(ff.sbi.BoxUniform([0.0], [1.0])).plan(9000, 200) == (20_000, 20)
    prior = ff.sbi.BoxUniform([0.0], [1.0])
    theta, x = _identity_sims(3700, prior)
    seen: list[float] = []

    class Enough(Exception):
        pass

    def record(r: dict[str, float]) -> None:
        seen.append(r["lr"])
        if len(seen) == 2:
            raise Enough

    with pytest.raises(Enough):
        ff.sbi.NPE(prior, flow_options={"transforms": 1, "bins": 4, "hidden": (8,)}).fit(
            theta, x, callback=record
        )
    # 3,330 training pairs: 17 steps an epoch, 2,550 steps of cosine from the larger peak
    want = ff.fit.LRSchedule("cosine", 2e-3, 2550)
    assert seen == [want.lr_at(17), want.lr_at(34)]


def test_default_batch_grows_with_the_training_pairs() -> None:
    """Without a batch_size, NPE steps 200 pairs up to 4,500 training pairs, then
    200 * train / 4,500 up to 400 (10,000 simulations); a given batch_size is kept; FMPE
    stays at 200."""
    prior = ff.sbi.BoxUniform([0.0], [1.0])
    npe = ff.sbi.NPE(prior)
    sizes = [npe.batch_for(t) for t in (1, 900, 4500, 4501, 4590, 6750, 8999, 9000, 90_000)]
    assert sizes == [200, 200, 200, 200, 204, 300, 399, 400, 400]
    assert ff.sbi.FMPE(prior).batch_for(9000) == 200
    theta, x = _identity_sims(5100, prior)  # 4,590 training pairs: batch 204, 23 steps
    tiny = {"transforms": 1, "bins": 4, "hidden": (4,)}
    steps: list[float] = []
    post = ff.sbi.NPE(prior, flow_options=tiny).fit(
        theta, x, max_steps=23, callback=lambda r: steps.append(r["step"])
    )
    assert post.info["batch_size"] == 204 and steps == [23]
    post = ff.sbi.NPE(prior, flow_options=tiny).fit(theta, x, max_steps=1, batch_size=50)
    assert post.info["batch_size"] == 50


def test_small_budgets_keep_the_moving_average_of_the_weights() -> None:
    """Below 3,000 training pairs NPE trains from 2e-3, validates, keeps and returns the moving
    average of its weights, and stops after at most ``small_budget_max_epochs`` epochs: the raw
    weights train as without the average (the same training losses), the kept average scores
    the best validation loss; large budgets (bitwise) and FMPE do not average."""
    prior = ff.sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    theta, x = _identity_sims(60, prior)  # 54 training pairs: 3 steps of 18 an epoch
    tiny = {"transforms": 1, "bins": 4, "hidden": (8,)}
    runs = {}
    for decay in (0.9, None):
        npe = ff.sbi.NPE(prior, flow_options=tiny)
        npe.small_budget_average, npe.small_budget_max_epochs = decay, 4
        records: list[dict[str, float]] = []
        post = npe.fit(theta, x, batch_size=18, patience=100, callback=records.append)
        runs[decay] = post, records
    (avg, kept), (_, trained) = runs[0.9], runs[None]
    assert [r["step"] for r in kept] == [3, 6, 9, 12]  # 4 epochs, not 20,000 steps
    assert kept[0]["lr"] == ff.fit.LRSchedule("cosine", 2e-3, 20_000).lr_at(3)
    assert [r["train_loss"] for r in kept] == [r["train_loss"] for r in trained]
    assert all(a["val_loss"] != b["val_loss"] for a, b in zip(kept, trained))
    val = torch.randperm(60, generator=torch.Generator().manual_seed(0))[:6]
    again = ff.sbi.NPE(prior).validation_loss(avg, theta[val], x[val], 0)
    assert abs(again - avg.info["best_val_loss"]) < 1e-6
    assert avg.info["best_val_loss"] == min(r["val_loss"] for r in [avg.history[0], *kept])
    default = ff.sbi.NPE(prior)
    assert (default.small_budget_average, default.small_budget_lr) == (0.99, 2e-3)
    assert (default.step_cap(900, 200), default.step_cap(9000, 400)) == (750, None)
    large = []
    for decay in (0.9, None):
        npe = ff.sbi.NPE(prior, flow_options=tiny)
        npe.small_budget_average, npe.patience_pairs = decay, 4  # 54 // 4 = 13: large
        large.append(npe.fit(theta, x, max_steps=6, batch_size=18).state_dict())
    assert all(torch.equal(v, large[1][k]) for k, v in large[0].items())
    fmpe = ff.sbi.FMPE(prior)
    assert fmpe.small_budget_average is None and fmpe.small_budget_lr is None
    assert fmpe.step_cap(900, 200) is None


# ---------------------------------------------------------------------------- runs
def test_save_and_load_give_identical_log_prob(box_posterior, tmp_path) -> None:
    box_posterior.save(tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == [
        "config.json",
        "metrics.jsonl",
        "model.safetensors",
        "model.safetensors.sha256",
        "results.json",
    ]
    for loaded in (ff.sbi.load(tmp_path / "run"), ff.load(tmp_path / "run")):
        assert isinstance(loaded, ff.sbi.Posterior)
        theta = box_posterior.sample(100, torch.tensor([0.1, 1.0]))
        for x_o in (torch.tensor([0.1, 1.0]), torch.tensor([-0.7, 2.5])):
            assert torch.equal(loaded.log_prob(theta, x_o), box_posterior.log_prob(theta, x_o))
        assert isinstance(loaded.prior, ff.sbi.BoxUniform)
        assert loaded.history and loaded.info["steps"] == box_posterior.info["steps"]
    with pytest.raises(RunError, match="simulation-based inference run"):
        open_run(tmp_path / "run")


def test_load_refuses_a_run_that_is_not_sbi(tmp_path) -> None:
    flow = ff.flows.MAF(features=2, transforms=1, hidden=(8,))
    from flowforge.runs import RUN_FORMAT, RunWriter

    with RunWriter.create(tmp_path / "r", {"format": RUN_FORMAT, "model": {}}) as w:
        w.write_weights(flow)
    with pytest.raises(RunError, match="not a simulation-based inference run"):
        ff.sbi.load(tmp_path / "r")


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_get_one_line_errors() -> None:
    prior = ff.sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    est = ff.sbi.NPE(prior, flow_options=TINY_NSF)
    theta, x = _identity_sims(50, prior)
    cases = [
        ((theta[:, :1], x), r"theta of shape \(N, 2\)"),
        ((theta, x[:40]), "N = 50 rows like theta"),
        ((theta + 1.5, x), "50 of 50 parameter rows lie outside the box prior"),
    ]
    for args, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            est.fit(*args, max_steps=1)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="expected one of none, independent, structured"):
        ff.sbi.NPE(prior, z_score="whiten")
    with pytest.raises(ValueError, match="unknown flow 'nope'"):
        ff.sbi.NPE(prior, flow="nope")
    with pytest.raises(TypeError, match="sample and log_prob"):
        ff.sbi.NPE(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="BoxUniform: expected finite bounds with high > low"):
        ff.sbi.BoxUniform([0.0], [0.0])


def test_nonfinite_simulations_are_dropped_and_counted() -> None:
    prior = ff.sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    theta, x = _identity_sims(60, prior)
    x[[3, 7, 11]] = torch.nan
    x[20, 1] = torch.inf
    est = ff.sbi.NPE(prior, flow_options=TINY_NSF)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        post = est.fit(theta, x, max_steps=2)
    assert any(
        "dropped 4 of 60 simulations with NaN or inf values (first: row 3)" in str(w.message)
        for w in seen
    )
    assert post.info["dropped"] == 4 and post.info["train"] + post.info["validation"] == 56
    with pytest.raises(ValueError, match="4 of 60 simulations have NaN or inf values"):
        est.fit(theta, x, max_steps=2, drop_nonfinite=False)


def test_bad_observations_are_refused(box_posterior) -> None:
    with pytest.raises(
        ValueError, match=r"expected x_o of shape \(2,\) or \(B, \*\(2,\)\), got \(3,\)"
    ):
        box_posterior.sample(3, torch.zeros(3))
    with pytest.raises(ValueError, match="finite x_o"):
        box_posterior.sample(3, torch.tensor([0.0, torch.nan]))
    with pytest.raises(ValueError, match=r"expected theta of shape \(N, 4, 2\)"):
        box_posterior.log_prob(torch.zeros(5, 2), torch.zeros(4, 2))
    # strings were torch's "too many dimensions 'str'"
    with pytest.raises(ValueError, match=r"expected x_o as numbers .*got list"):
        box_posterior.sample(5, ["a", "b"])
    with pytest.raises(ValueError, match=r"expected theta as numbers .*got str"):
        box_posterior.log_prob("ab", torch.zeros(2))


def test_validation_runs_without_dropout() -> None:
    """Early stopping compares validation losses of the network as it will be used (eval mode,
    no dropout): the kept posterior's loss on the held-out rows is the recorded best."""
    prior = ff.sbi.BoxUniform([-1.0], [1.0])
    theta, x = ff.sbi.simulate(lambda t: t + 0.1 * torch.randn_like(t), prior, 200, seed=0)
    est = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (16,), "dropout": 0.5})
    post = est.fit(theta, x, max_steps=10, batch_size=60, patience=100, seed=3)
    assert post.info["best_step"] > 0  # trained weights, where dropout changes the output
    held_out = torch.randperm(200, generator=torch.Generator().manual_seed(3))[:20]  # fit's split
    again = est.validation_loss(post, theta[held_out], x[held_out], seed=3)
    assert again == pytest.approx(post.info["best_val_loss"], rel=1e-6, abs=1e-6)


def test_npe_default_patience_stops_after_twenty_validations_without_improvement() -> None:
    """At small budgets NPE stops after 20 validations without a better loss (measured: lower
    C2ST than 10 on two moons at 1,000 simulations over ten observations, seeds 0-2)."""
    prior = ff.sbi.BoxUniform([-1.0], [1.0])
    theta, x = ff.sbi.simulate(lambda t: t + 0.1 * torch.randn_like(t), prior, 12, seed=0)
    est = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (8,)})
    post = est.fit(theta, x, max_steps=1000, lr=0.1)
    assert post.info["stopped_early"]
    after_best = [h for h in post.history if h["step"] > post.info["best_step"]]
    assert len(after_best) == 20 == est.plan(10, 200)[1]


def test_npe_plateau_halves_the_learning_rate_after_five_validations_without_improvement() -> None:
    """With ``plateau_patience=4`` NPE's rate is constant while the validation loss improves and
    halves after 5 validations without improvement; the rate of each record is the one its epoch
    trained with (default: cosine, so the rate at a record is below the peak)."""
    prior = ff.sbi.BoxUniform([-1.0], [1.0])
    theta, x = ff.sbi.simulate(lambda t: t + 0.1 * torch.randn_like(t), prior, 12, seed=0)
    est = ff.sbi.NPE(prior, flow_options={"transforms": 1, "hidden": (8,)})
    assert est.plateau_patience is None
    cosine = est.fit(theta, x, max_steps=40, lr=0.1, patience=100)
    expected = [0.1 * (1 + math.cos(math.pi * s / 40)) / 2 for s in (1, 2)]
    assert [h["lr"] for h in cosine.history[1:3]] == pytest.approx(expected, rel=1e-9)
    est.plateau_patience = 4
    post = est.fit(theta, x, max_steps=1000, lr=0.1, patience=10)
    assert post.info["stopped_early"]
    best = next(h for h in post.history if h["step"] == post.info["best_step"])
    after_best = [h["lr"] for h in post.history if h["step"] > post.info["best_step"]]
    assert 0.0 < best["lr"] <= 0.1
    assert after_best == [best["lr"]] * 5 + [best["lr"] / 2] * 5


def test_selection_screens_and_only_the_best_trains_on() -> None:
    """The selection trains each candidate ``screen_epochs`` validations, drops all but the
    lowest validation loss so far, and the kept one trains on to the weights it reaches alone
    (its random stream is its own: dropout draws are not shared between candidates)."""
    prior = ff.sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    theta, x = _identity_sims(60, prior)
    tiny = {"transforms": 1, "hidden": (8,), "dropout": 0.2}
    npe = ff.sbi.NPE(prior)
    npe.alternatives, npe.patience_pairs, npe.screen_epochs = ("maf",), 4, 2
    npe.flow_options = {**tiny, "bins": 4}
    maf = {**tiny, "hidden": (8, 8)}  # draws more dropout masks than the NSF
    npe.preset_defaults, npe.alternative_lr = {"maf": maf}, 1e-5  # MAF hardly moves
    npe.linear_shift_flows = ()  # nor starts from the least-squares shift
    records: list[dict[str, float]] = []
    post = npe.fit(theta, x, max_steps=12, lr=0.02, callback=records.append)
    cands = post.info["candidates"]
    assert post.spec["flow"] == "nsf" and cands["nsf"] < cands["maf"]
    assert len(records) == 2 + 12 and len(post.history) == 13  # MAF dropped after 2
    alone = ff.sbi.NPE(prior, flow_options={**tiny, "bins": 4})
    alone.patience_pairs = 4  # the large budget's fit (no moving average), as the screen's
    alone = alone.fit(theta, x, max_steps=12, lr=0.02, patience=13)
    assert all(torch.equal(v, alone.state_dict()[k]) for k, v in post.state_dict().items())


def test_alternatives_keep_the_flow_with_the_lowest_validation_loss() -> None:
    """Opt-in selection: where the patience grows, the default flow and each alternative
    train on the same split and the lowest validation loss is kept; a chosen flow opts out."""
    prior = ff.sbi.BoxUniform([0.0, 0.0], [1.0, 1.0])
    theta, x = _identity_sims(60, prior)
    theta[3, 0] = float("nan")  # a failed simulation: counted once, dropped
    tiny = {"transforms": 1, "hidden": (8,)}
    npe = ff.sbi.NPE(prior)
    npe.alternatives, npe.patience_pairs = ("maf",), 4  # 53 training pairs: patience 13
    npe.flow_options = {**tiny, "bins": 4}
    npe.preset_defaults, npe.alternative_lr = {"maf": tiny}, 0.25
    rates: list[float] = []
    with pytest.warns(UserWarning, match="dropped 1 of 60"):
        post = npe.fit(theta, x, max_steps=2, callback=lambda r: rates.append(r["lr"]))
    assert len(rates) == 4 and rates[0] < 3e-3 and rates[2] > 0.1  # NSF's, then MAF's rate
    cands = post.info["candidates"]
    assert set(cands) == {"nsf", "maf"} and cands["nsf"] != cands["maf"]
    kept = min(cands, key=cands.__getitem__)
    assert post.spec["flow"] == kept and post.info["best_val_loss"] == cands[kept]
    assert (post.info["simulations"], post.info["dropped"]) == (60, 1)
    chosen = ff.sbi.NPE(prior, flow="nsf", flow_options={**tiny, "bins": 4})
    chosen.alternatives, chosen.patience_pairs = ("maf",), 4
    with pytest.warns(UserWarning):
        assert "candidates" not in chosen.fit(theta, x, max_steps=2).info
