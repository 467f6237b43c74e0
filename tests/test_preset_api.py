"""The preset API: explicit signatures, docs that match them, ``hparams``, ``context``."""

from __future__ import annotations

import ast
import inspect
import json
import re

import pytest

import flowforge as ff
from flowforge.flows._common import Preset, preset_hparams
from flowforge.runs.recipe import RENAMED_KWARGS

PRESETS = sorted(ff.flows.PRESETS)
D, C = 4, 3
IMAGE = (1, 4, 4)


def is_image(name: str) -> bool:
    return "shape" in inspect.signature(ff.flows.PRESETS[name]).parameters


def small(name: str, context: int, size: int = 3, width: int = 8) -> dict[str, object]:
    """Arguments of a small instance of a preset (``size`` layers or steps)."""
    if name == "tarflow":  # images or vectors, sized by blocks/layers/width
        return {"shape": IMAGE, "context": context, "blocks": size, "width": width, "heads": 2}
    if name == "waveglow":  # a sequence (C, T); a context is frames of frame_features each
        sizes = {"group": 4, "depth": size, "early_every": 2, "hidden": width, "layers": 2}
        return {"shape": (1, 16), "context": context, "frame_features": context, **sizes}
    if is_image(name):
        hidden = (width, width)  # glow, multiscale_realnvp: the conv nets' hidden layers
        return {"shape": IMAGE, "context": context, "levels": 2, "depth": size, "hidden": hidden}
    return {"features": D, "context": context, "transforms": size, "hidden": (width, 6)}


def args_entries(doc: str | None) -> list[str]:
    """The argument names of a Google-style ``Args:`` section, in order."""
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Args:" not in lines:
        return []
    names = []
    for line in lines[lines.index("Args:") + 1 :]:
        if not line.strip() or not line.startswith("    "):
            break
        m = re.match(r"    (\w+)( \(.*\))?: \S", line)
        if m:
            names.append(m.group(1))
        elif not line.startswith("        "):
            raise AssertionError(f"not an Args entry: {line!r}")
    return names


def parameters(cls: type) -> list[str]:
    return list(inspect.signature(cls).parameters)


@pytest.mark.parametrize("name", PRESETS)
def test_signature_is_explicit_and_takes_context(name: str) -> None:
    params = inspect.signature(ff.flows.PRESETS[name]).parameters
    kinds = {p.kind for p in params.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds, name
    assert inspect.Parameter.VAR_POSITIONAL not in kinds, name
    assert "context" in params and params["context"].default == 0, name
    assert "features" in params or "shape" in params, name


@pytest.mark.parametrize("name", PRESETS)
def test_signature_and_docstring_stand_in_the_presets_own_source(name: str) -> None:
    """One file to read: the class defines its own ``__init__`` (no inherited signature) and
    its docstring is the one in its source, not one generated or rewritten at import."""
    cls = ff.flows.PRESETS[name]
    assert "__init__" in vars(cls), f"{name}: inherits its signature"
    (node,) = ast.parse(inspect.getsource(cls)).body
    assert isinstance(node, ast.ClassDef) and not node.decorator_list, name
    assert ast.get_docstring(node) == inspect.cleandoc(cls.__doc__ or ""), name


@pytest.mark.parametrize("name", PRESETS)
def test_docstring_documents_every_argument_in_order(name: str) -> None:
    cls = ff.flows.PRESETS[name]
    assert args_entries(cls.__doc__) == parameters(cls), name


@pytest.mark.parametrize("name", PRESETS)
def test_docstring_has_references_and_an_example(name: str) -> None:
    doc = inspect.cleandoc(ff.flows.PRESETS[name].__doc__ or "")
    refs = doc.split("References:\n", 1)
    assert len(refs) == 2 and "arXiv:" in refs[1].split("\n\n")[0], name
    assert "Example:\n" in doc and ">>> " in doc.split("Example:\n", 1)[1], name
    assert "{" not in doc.split("Example:\n", 1)[0], f"{name}: an unfilled placeholder"


def architecture(flow: ff.Flow) -> dict[str, tuple[int, ...]]:
    state = flow.state_dict()
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("context", [0, C])
def test_hparams_round_trip_rebuilds_the_architecture(name: str, context: int) -> None:
    cls = ff.flows.PRESETS[name]
    args = small(name, context)
    flow = cls(**args)
    old = RENAMED_KWARGS.get(name, {})  # deprecated old names: not hyper-parameters
    assert list(flow.hparams) == [p for p in parameters(cls) if p != "base" and p not in old]
    expected = json.loads(json.dumps(args))
    assert {k: flow.hparams[k] for k in expected} == expected
    saved = json.loads(json.dumps(flow.hparams))  # as a run's config.json keeps them
    for rebuilt in (type(flow)(**flow.hparams), type(flow)(**saved)):
        assert rebuilt.hparams == flow.hparams
        assert architecture(rebuilt) == architecture(flow)
    assert architecture(cls(**small(name, context, size=2))) != architecture(flow)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("context", [0, C])
def test_flow_context_is_the_context_passed(name: str, context: int) -> None:
    flow = ff.flows.PRESETS[name](**small(name, context, size=1))
    assert flow.context == context
    assert not hasattr(flow, "context_features")


def test_conditional_base_names_its_context_size_context() -> None:
    base = ff.distributions.ConditionalDiagNormal(D, context=C)
    assert base.context == C and not hasattr(base, "context_features")
    flow = ff.flows.MAF(features=D, context=C, transforms=1, hidden=(8,), base=base)
    assert flow.context == C and flow.base is base


@pytest.mark.parametrize(
    ("arg", "value"),
    [
        ("features", 0),
        ("features", 2.0),
        ("context", -1),
        ("context", True),
        ("transforms", 0),
        ("hidden", (8, 0)),
        ("hidden", "8"),
        ("scale_bound", 0.0),
        ("base", "normal"),
    ],
)
def test_common_arguments_are_checked_by_name(arg: str, value: object) -> None:
    kwargs = {"features": D, arg: value}
    with pytest.raises(
        ValueError, match=rf"^RealNVP: expected {arg}\b.*got {re.escape(repr(value))}"
    ):
        ff.flows.RealNVP(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("preset", "kwargs", "expected"),
    [
        ("glow", {"shape": IMAGE, "levels": 2, "lu": "false"}, "lu of type bool"),
        ("glow", {"shape": IMAGE, "levels": 2, "lu": 1}, "lu of type bool"),
        ("glow", {"shape": IMAGE, "levels": True}, "levels of type int"),
        ("ffjord", {"features": D, "adjoint": "no"}, "adjoint of type bool"),
        ("ffjord", {"features": D, "learn_time": 0}, "learn_time of type bool"),
        ("ffjord", {"features": D, "rtol": "1e-5"}, "rtol of type float"),
        ("ffjord", {"features": D, "method": "rk5"}, "'dopri5' or 'rk4' or 'euler'"),
        ("nsf", {"features": D, "bins": 8.0}, "bins of type int"),
        ("nsf", {"features": D, "coupling": "yes"}, "coupling of type bool"),
        ("sylvester", {"features": D, "kind": 3}, "kind of type"),
        ("nsf", {"features": D, "residual_blocks": 10**9, "hidden": (8,)}, "<= 1000"),
        ("maf", {"features": D, "transforms": 10**9}, "transforms <= 1000"),
    ],
)
def test_every_option_is_checked_against_its_declared_type(
    preset: str, kwargs: dict[str, object], expected: str
) -> None:
    """A truthy string is no ``True`` (``lu="false"`` built an LU convolution)."""
    with pytest.raises(ValueError, match=re.escape(expected)):
        ff.flows.PRESETS[preset](**kwargs)


@pytest.mark.parametrize(("arg", "value"), [("shape", ()), ("shape", (1, 0, 8)), ("depth", 0)])
def test_image_arguments_are_checked_by_name(arg: str, value: object) -> None:
    class Image(Preset):
        pass

    with pytest.raises(ValueError, match=rf"^Image: expected {arg}\b"):
        preset_hparams({"self": Image.__new__(Image), "context": 0, arg: value})
