"""Every preset refuses the same bad argument with the same one-line message.

The messages are written out here (not read from ``flowforge.flows.arguments``), so a preset
that checks an argument its own way, or skips the shared check, fails by name.
"""

from __future__ import annotations

import inspect
import re

import pytest

import flowforge as ff

PRESETS = sorted(ff.flows.PRESETS)
SHAPES = {  # a valid event for the presets that take shape=
    "glow": (1, 4, 4),
    "multiscale_realnvp": (1, 4, 4),
    "tarflow": (1, 4, 4),
    "waveglow": (1, 16),
}
CONV_PRESETS = {"glow", "multiscale_realnvp"}  # hidden: the channels of their conv nets
COUPLING_PRESETS = {"nice": {}, "realnvp": {}, "nsf": {"coupling": True}}

#: argument, bad value, what the message says was expected (the same for every preset).
BAD = [
    ("features", 0, "features >= 1"),
    ("features", 2.0, "features >= 1"),
    ("features", True, "features >= 1"),
    ("context", -1, "context >= 0"),
    ("context", True, "context >= 0"),
    ("context", 1.5, "context >= 0"),
    ("transforms", 0, "transforms >= 1"),
    ("transforms", 1001, "transforms <= 1000 (a deeper stack does not fit in memory)"),
    ("depth", 0, "depth >= 1"),
    ("levels", 0, "levels >= 1"),
    ("scale_bound", 0.0, "scale_bound > 0"),
    ("scale_bound", "3", "scale_bound > 0"),
    (
        "activation",
        "swish",
        "activation in ['elu', 'gelu', 'leaky_relu', 'relu', 'silu', 'tanh']",
    ),
    ("dropout", 1.0, "dropout in [0, 1)"),
    ("residual_blocks", -1, "residual_blocks >= 0"),
    ("residual_blocks", 1001, "residual_blocks <= 1000 (a deeper stack does not fit in memory)"),
    ("permutation", "shuffle", "permutation in ['reverse', 'random']"),
    ("base", "normal", "base: None or a BaseDistribution"),
    ("lu", "false", "lu of type bool"),
    ("affine", 1, "affine of type bool"),
]


def valid(name: str) -> dict[str, object]:
    """Small valid arguments of a preset (each case below changes one)."""
    if name in SHAPES:
        return {"shape": SHAPES[name]}
    return {"features": 4, "transforms": 1, "hidden": (8,)}


def takes(name: str, arg: str) -> bool:
    return arg in inspect.signature(ff.flows.PRESETS[name]).parameters


def refusal(name: str, **changes: object) -> str:
    """The message of the ValueError a preset raises for its valid arguments with ``changes``."""
    with pytest.raises(ValueError) as caught:
        ff.flows.PRESETS[name](**{**valid(name), **changes})
    return str(caught.value)


CASES = [
    pytest.param(name, arg, value, expected, id=f"{name}-{arg}={value!r}")
    for name in PRESETS
    for arg, value, expected in BAD
    if takes(name, arg)
]


def test_the_cases_cover_every_preset_and_each_argument_more_than_one() -> None:
    assert {c.values[0] for c in CASES} == set(PRESETS)
    shared = {arg for arg, _, _ in BAD}
    for arg in shared - {"lu"}:  # lu: glow and waveglow
        assert sum(takes(n, arg) for n in PRESETS) >= 2, arg


@pytest.mark.parametrize(("name", "arg", "value", "expected"), CASES)
def test_each_preset_refuses_a_bad_argument_with_the_same_message(
    name: str, arg: str, value: object, expected: str
) -> None:
    cls = ff.flows.PRESETS[name].__name__
    assert refusal(name, **{arg: value}) == f"{cls}: expected {expected}, got {value!r}"


@pytest.mark.parametrize(
    "name", [n for n in PRESETS if takes(n, "hidden") and n not in CONV_PRESETS]
)
@pytest.mark.parametrize("value", [(8, 0), "8", 0])
def test_hidden_widths_are_refused_with_the_same_message(name: str, value: object) -> None:
    cls = ff.flows.PRESETS[name].__name__
    assert refusal(name, hidden=value) == f"{cls}: expected hidden: positive sizes, got {value!r}"


@pytest.mark.parametrize("name", sorted(CONV_PRESETS))
@pytest.mark.parametrize("value", [(8, 0), "8", ()])
def test_conv_presets_refuse_hidden_channels_with_the_same_message(
    name: str, value: object
) -> None:
    cls = ff.flows.PRESETS[name].__name__
    expected = f"{cls}: expected hidden to be a sequence of positive channel counts, got "
    assert refusal(name, hidden=value) == expected + repr(value)


@pytest.mark.parametrize("name", sorted(COUPLING_PRESETS))
def test_coupling_presets_refuse_one_feature_with_the_same_message(name: str) -> None:
    cls = ff.flows.PRESETS[name].__name__
    why = "a coupling layer conditions one half of the features on the other"
    message = refusal(name, features=1, **COUPLING_PRESETS[name])
    assert message == f"{cls}: expected features >= 2 ({why}), got 1"


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if takes(n, "levels")))
def test_image_presets_refuse_a_shape_that_is_not_an_image(name: str) -> None:
    cls = ff.flows.PRESETS[name].__name__
    assert refusal(name, shape=(4, 4)) == f"{cls}: expected shape=(C, H, W), got (4, 4)"
    assert re.fullmatch(
        rf"{cls}: 2 levels halve the height and width [12] times, so they must be divisible "
        r"by [24]; got 3x4",
        refusal(name, shape=(1, 3, 4), levels=2),
    )


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if takes(n, "residual_blocks")))
def test_residual_blocks_need_one_width_the_same_way(name: str) -> None:
    cls = ff.flows.PRESETS[name].__name__
    message = refusal(name, residual_blocks=1, hidden=(4, 8))
    assert (
        message
        == f"{cls}: residual_blocks needs hidden layers of one width (H, ..., H), got (4, 8)"
    )
