"""One vocabulary across the public API (issue 21): ``ff.eval`` exports what its docstring
lists, ``dir(ff)`` lists every public name (the estimators lazily), one dataset lister (the
other deprecated), plumbing out of the public lists (old names still import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flowforge as ff
import flowforge.dequantization
import flowforge.distributions
import flowforge.eval
import flowforge.flows
import flowforge.functional
import flowforge.nn
import flowforge.runs
import flowforge.transforms

SRC = Path(__file__).resolve().parents[1] / "src"


def test_eval_exports_what_its_docstring_lists() -> None:
    doc = flowforge.eval.__doc__ or ""
    for name in ("log_likelihoods", "summarize", "bits_per_dim", "gaussian_baseline", "auroc"):
        assert f":func:`{name}`" in doc and name in flowforge.eval.__all__, name
    for name in flowforge.eval.__all__:
        assert callable(getattr(flowforge.eval, name)), name


def test_dir_lists_the_estimators_without_importing_scikit_learn() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(SRC)!r}); import flowforge as ff; "
        "names = dir(ff); "
        "assert {'FlowDensity', 'FlowAnomalyDetector', 'load', 'eval'} <= set(names), names; "
        "assert not any(m.split('.')[0] == 'sklearn' for m in sys.modules), 'sklearn loaded'; "
        "assert 'flowforge.sklearn' not in sys.modules"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert set(ff.__all__) <= set(dir(ff))


def test_plumbing_is_out_of_the_public_lists_but_old_names_import() -> None:
    from flowforge.functional import join_layers
    from flowforge.runs import atomic_write_json, refuse_fixed_options

    for module, names in (
        (flowforge.runs, ("atomic_write_bytes", "atomic_write_json", "atomic_write_text")),
        (flowforge.runs, ("refuse_fixed_options",)),
        (flowforge.functional, ("join_layers", "split_layers", "layer_sizes")),
    ):
        for name in names:
            assert name not in module.__all__ and hasattr(module, name), name
    assert callable(join_layers) and callable(atomic_write_json) and callable(refuse_fixed_options)


def _public_callables() -> list[tuple[str, object]]:
    out = [("Flow", ff.Flow)]
    for module in (
        flowforge.flows,
        flowforge.transforms,
        flowforge.nn,
        flowforge.distributions,
        flowforge.dequantization,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj):
                out.append((f"{module.__name__}.{name}", obj))
    return out


def test_context_is_keyword_only_everywhere() -> None:
    """A constructor's (or builder's) ``context`` size is keyword-only: never at a position
    that differs from one class to the next (a tensor ``context`` of ``forward`` is not this)."""
    import inspect

    positional = []
    for name, obj in _public_callables():
        try:
            params = inspect.signature(obj).parameters  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        p = params.get("context")
        if p is not None and p.kind is not inspect.Parameter.KEYWORD_ONLY:
            positional.append(name)
    assert positional == []
    assert len(_public_callables()) > 50  # the check saw the public API


def test_steps_means_optimisation_steps_only() -> None:
    """Glow's, the multiscale RealNVP's and WaveGlow's steps of flow are ``depth``, a CNF's
    fixed solver steps ``solver_steps``; the old name still builds the same flow, with a
    DeprecationWarning, and an old config.json (model kwargs ``steps``) loads."""
    import pytest
    import torch

    from flowforge.runs.recipe import ModelSpec, build_flow
    from flowforge.train.model import preset_options

    for cls, kwargs in (
        (ff.flows.Glow, {"shape": (1, 4, 4), "levels": 1, "hidden": (4, 4)}),
        (ff.flows.MultiscaleRealNVP, {"shape": (1, 4, 4), "levels": 1, "hidden": (4, 4)}),
        (ff.flows.WaveGlow, {"shape": (1, 16), "group": 4, "hidden": 4, "layers": 2}),
    ):
        torch.manual_seed(0)
        new = cls(depth=2, **kwargs)
        torch.manual_seed(0)
        with pytest.warns(DeprecationWarning, match="use depth"):
            old = cls(steps=2, **kwargs)
        assert new.hparams == old.hparams and "steps" not in new.hparams
        for (k, a), (_, b) in zip(new.state_dict().items(), old.state_dict().items(), strict=True):
            assert torch.equal(a, b), k
    with pytest.warns(DeprecationWarning, match="use solver_steps"):
        cnf = ff.transforms.CNF(ff.nn.ODENet(2, (4,)), 2, method="rk4", steps=3)
    assert cnf.solver_steps == 3
    with pytest.warns(DeprecationWarning, match="use solver_steps"):
        assert ff.flows.FFJORD(2, method="rk4", steps=3).hparams["solver_steps"] == 3
    for preset in ("glow", "multiscale_realnvp", "waveglow"):
        assert "depth" in preset_options(preset) and "steps" not in preset_options(preset)
    assert "solver_steps" in preset_options("ffjord") and "steps" not in preset_options("ffjord")
    spec = {
        "preset": "glow",
        "kwargs": {"shape": [1, 4, 4], "context": 0, "levels": 1, "steps": 2, "hidden": 4},
        "kind": "image",
        "data_shape": [1, 4, 4],
        "levels": 2,
    }
    flow = build_flow(ModelSpec.from_dict(spec))  # written before the rename: loads silently

    def size(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    deep = ff.flows.Glow((1, 4, 4), levels=1, depth=2, hidden=(4, 4))
    assert (
        size(flow) == size(deep) != size(ff.flows.Glow((1, 4, 4), levels=1, depth=1, hidden=(4, 4)))
    )


def test_activation_is_a_name_everywhere() -> None:
    """Every public net's and preset's ``activation`` defaults to a name (a class is still
    accepted by the nets)."""
    import inspect

    import torch

    defaults = {}
    for name, obj in _public_callables():
        try:
            p = inspect.signature(obj).parameters.get("activation")  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if p is not None and p.default is not inspect.Parameter.empty:
            defaults[name] = p.default
    assert {"flowforge.nn.MLP", "flowforge.nn.MADE", "flowforge.flows.RealNVP"} <= set(defaults)
    assert "flowforge.nn.ConvNet" in defaults
    assert {k: v for k, v in defaults.items() if not isinstance(v, str)} == {}
    named = ff.nn.ConvNet(2, 4, hidden=(8, 8), activation="tanh", zero_last=False)
    torch.manual_seed(0)
    a = ff.nn.ConvNet(2, 4, hidden=(8, 8), activation="tanh", zero_last=False)
    torch.manual_seed(0)
    b = ff.nn.ConvNet(2, 4, hidden=(8, 8), activation=torch.nn.Tanh, zero_last=False)
    x = torch.randn(3, 2, 4, 4)
    assert torch.equal(a(x), b(x)) and isinstance(named.layers[1], torch.nn.Tanh)


OLD_GLOW = Path(__file__).parent / "fixtures" / "old_runs" / "glow"


def test_hidden_is_a_sequence_for_the_conv_nets() -> None:
    """ConvNet, Glow and MultiscaleRealNVP take ``hidden`` as the hidden layers' channels (any
    depth); the old single number ``h`` builds the same net as ``(h, h)``, with a
    DeprecationWarning."""
    import pytest
    import torch

    net = ff.nn.ConvNet(2, 4, hidden=(8, 16, 6), zero_last=False)
    convs = [m for m in net.layers if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (2, 8, (3, 3)),
        (8, 16, (1, 1)),
        (16, 6, (1, 1)),
        (6, 4, (3, 3)),
    ]
    assert net(torch.randn(3, 2, 4, 4)).shape == (3, 4, 4, 4)
    one = ff.nn.ConvNet(2, 4, hidden=[5])
    assert [m.out_channels for m in one.layers if isinstance(m, torch.nn.Conv2d)] == [5, 4]
    for cls, kwargs in (
        (ff.nn.ConvNet, {"in_channels": 2, "out_channels": 4, "zero_last": False}),
        (ff.flows.Glow, {"shape": (1, 4, 4), "levels": 2, "depth": 1}),
        (ff.flows.MultiscaleRealNVP, {"shape": (1, 4, 4), "levels": 2, "depth": 1}),
    ):
        torch.manual_seed(0)
        new = cls(hidden=(6, 6), **kwargs)
        torch.manual_seed(0)
        with pytest.warns(DeprecationWarning, match=r"give hidden=\(6, 6\)"):
            old = cls(hidden=6, **kwargs)
        a, b = new.state_dict(), old.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a), cls
        if cls is not ff.nn.ConvNet:
            assert new.hparams["hidden"] == old.hparams["hidden"] == [6, 6]
            deep = cls(hidden=(4, 8, 4), **kwargs)
            assert type(deep)(**deep.hparams).hparams["hidden"] == [4, 8, 4]
            widths = {m.out_channels for m in deep.modules() if isinstance(m, torch.nn.Conv2d)}
            assert {4, 8} <= widths and 6 not in widths
        with pytest.raises(ValueError, match="hidden"):
            cls(hidden=(6, 0), **kwargs)


def test_an_old_glow_run_with_one_hidden_number_loads_and_resumes(tmp_path: Path) -> None:
    """A run written when Glow's ``hidden`` was one number (tests/fixtures/old_runs/glow, model
    kwargs ``"hidden": 4``) loads without a warning (warnings are errors here) to the same
    log-densities, and resumes to the old code's numbers."""
    import json
    import shutil

    import pytest
    import torch

    from cli_util import assert_ok, run_cli

    flow = ff.load(OLD_GLOW)
    u = (torch.arange(3 * 64, dtype=torch.float32).reshape(3, 1, 8, 8) % 17 + 0.5) / 17
    expected = [-20.814903259277344, -18.8880615234375, -19.240371704101562]
    assert flow.log_prob(u).tolist() == pytest.approx(expected, rel=1e-6, abs=1e-5)
    run = tmp_path / "glow"
    shutil.copytree(OLD_GLOW, run)
    proc = run_cli("train", "--resume", run, "--steps", "6", "--quiet", "--no-plots", cwd=tmp_path)
    assert_ok(proc)
    assert "Warning" not in proc.stderr, proc.stderr
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == 6
    assert results["test"]["nll"] == pytest.approx(-33.698478105333116, rel=1e-6)
    assert results["best_val_nll"] == pytest.approx(-33.73271221584744, rel=1e-6)
    assert json.loads((run / "config.json").read_text())["model"]["kwargs"]["hidden"] == 4
