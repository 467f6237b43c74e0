"""The estimators' options are checked at ``fit`` (scikit-learn's convention: ``__init__`` only
stores them): ``_parameter_constraints`` for types and ranges, then what it cannot say (issue
22). Each case below was taken before, silently (``hidden=(1.5,)`` trained width 1, ``True``
counted as 1, ``whiten`` without ``standardize`` did nothing, ``flow_options`` lost to the
``hidden`` parameter) or with an error naming internals (``int()`` of a string, an ``__init__``
keyword)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError

from flowforge.sklearn import FlowAnomalyDetector, FlowDensity

X = np.random.default_rng(0).normal(size=(40, 3))
TINY = {"transforms": 1, "hidden": (8,), "max_epochs": 1}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"hidden": (1.5,)}, "'hidden' parameter of FlowDensity must be a non-empty sequence"),
        ({"hidden": ("a",)}, r"non-empty sequence of positive ints. Got \('a',\)"),
        ({"hidden": ((8,),)}, "non-empty sequence of positive ints"),
        ({"hidden": (True,)}, "non-empty sequence of positive ints"),
        ({"hidden": ()}, "non-empty sequence of positive ints"),
        ({"hidden": (0,)}, "non-empty sequence of positive ints"),
        ({"transforms": True}, "'transforms' parameter of FlowDensity must be an int, not a bool"),
        ({"patience": True}, "'patience' parameter .* not a bool"),
        ({"bins": 4}, "'bins' parameter .* None for flow='maf' \\(spline bins: 'nsf' only\\)"),
        ({"flow": "tarflow"}, "'transforms' parameter .* flow='tarflow', which takes no"),
        ({"whiten": True, "standardize": False}, "'whiten' parameter .* standardize=False"),
        ({"flow_options": {"hidden": (4,)}}, "free of 'hidden' when the hidden parameter is set"),
        ({"flow_options": {"features": 3}}, "free of 'features', which comes from the data"),
        ({"flow_options": {"bogus": 1}}, "keys of options of flow='maf' \\(transforms, hidden"),
        ({"flow_options": {1: 2}}, "keys of options of flow='maf'"),
        ({"flow": "waveglow"}, "'flow' parameter of FlowDensity must be a str among"),
        ({"lr": float("nan")}, "'lr' parameter of FlowDensity must be a float"),
    ],
)
def test_a_bad_option_is_one_error_at_fit(options: dict[str, object], expected: str) -> None:
    est = FlowDensity(**{**TINY, **options})  # type: ignore[arg-type]
    assert est.get_params()[next(iter(options))] is options[next(iter(options))]  # stored as is
    with pytest.raises(InvalidParameterError, match=expected) as caught:
        est.fit(X)
    assert "\n" not in str(caught.value)
    assert not hasattr(est, "flow_")


def test_the_detector_checks_its_own_and_the_density_options() -> None:
    with pytest.raises(
        InvalidParameterError, match=r"'target_fpr' parameter .* contamination='auto'"
    ):
        FlowAnomalyDetector(**TINY, contamination=0.1, target_fpr=0.2).fit(X)  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="'hidden' parameter of FlowAnomalyDetector"):
        FlowAnomalyDetector(transforms=1, hidden=(2.5,), max_epochs=1).fit(X)


@pytest.mark.parametrize(
    "options",
    [
        {"hidden": np.array([8])},
        {"hidden": [8, 8]},
        {"flow": "nsf", "bins": 4},
        {"hidden": None, "flow_options": {"hidden": (4,)}},
        {"flow_options": {"dropout": 0.1}},
        {"whiten": True},
    ],
)
def test_good_options_still_fit(options: dict[str, object]) -> None:
    est = FlowDensity(**{**TINY, **options}).fit(X)  # type: ignore[arg-type]
    assert np.isfinite(est.score_samples(X[:3])).all()
    det = FlowAnomalyDetector(**TINY, contamination=0.1).fit(X)  # type: ignore[arg-type]
    assert det.predict(X[:3]).shape == (3,)
