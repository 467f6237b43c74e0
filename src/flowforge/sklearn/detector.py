"""``FlowAnomalyDetector``: a flow's likelihood (or typicality) as a scikit-learn outlier
detector with a calibrated threshold."""

from __future__ import annotations

import inspect
import numbers
from typing import Any, ClassVar

import numpy as np
from sklearn.base import OutlierMixin
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from flowforge.eval.anomaly import fpr_threshold, typicality_scores
from flowforge.sklearn._fit import log_prob_rows, spec_stats
from flowforge.sklearn.density import FlowDensity

__all__ = ["FlowAnomalyDetector"]


class FlowAnomalyDetector(OutlierMixin, FlowDensity):
    """Flag rows a flow finds unlikely (or atypical): ``predict`` is ``+1`` normal, ``-1``
    anomaly, as scikit-learn's outlier detectors return.

    The flow is fitted as :class:`FlowDensity` (every option of it applies). Scores follow
    scikit-learn's convention, higher is more normal:

    - ``criterion="likelihood"`` (default): ``score_samples(X) = log p(x)``. Use it when anomalies
      are *less likely* than normal data: novel classes, corrupted or shifted rows of tabular
      data. It is the better score on most tabular tasks.
    - ``criterion="typicality"``: ``score_samples(X) = -|NLL(x) - entropy_|``, the distance of a
      row's NLL from the training entropy (Nalisnick et al. 2019). Use it when anomalies may be
      *more* likely than normal data (flows on images famously give simpler datasets a higher
      likelihood; near-constant or heavily shrunk rows). Per row it is noisier than the
      likelihood; on batches it is a strong test: :meth:`typicality` with ``batch_size > 1``.

    The threshold ``offset_`` (``decision_function = score_samples - offset_``, flagged when
    negative):

    - ``contamination="auto"``: ``target_fpr`` of the *held-out* validation rows (normal data
      the flow did not train on) score below it, so new normal rows are flagged at about that
      rate. Fit on normal rows only (semi-supervised novelty detection).
    - ``contamination=c`` (a share in ``(0, 0.5]``): the fit data hold that share of anomalies;
      the lowest-scoring ``c`` of all fitted rows are flagged, as ``IsolationForest`` does.
      A flow can learn a compact cluster of anomalies as well as the normal data; ``trim=c``
      leaves the least likely share ``c`` of rows out of each epoch after the first, which
      keeps it from doing so (a 5% cluster of anomalies in 4-D: recall 0.02 without, 0.98
      with); on anomalies that look like normal data it does not help (5% of a held-out
      digit class in the fit rows: AUROC 0.580 / 0.581 without / with for class 1, 0.879 /
      0.858 for class 8), so it is off by default.

    Args:
        contamination: ``"auto"`` or the share of anomalies in the fit data.
        target_fpr: with ``contamination="auto"``, the false-positive rate on held-out normal
            rows.
        criterion: the score, ``"likelihood"`` or ``"typicality"``.
        **others: as :class:`FlowDensity`.

    Attributes:
        offset_: the threshold on ``score_samples``.
        calibration_scores_: the scores the threshold was taken from.

    Example:
        >>> import numpy as np
        >>> X = np.random.default_rng(0).normal(size=(300, 2))
        >>> det = FlowAnomalyDetector(transforms=1, hidden=(8,), max_epochs=2, random_state=0)
        >>> det.fit(X).predict(np.array([[0.0, 0.0], [9.0, 9.0]])).tolist()
        [1, -1]

    References:
        Nalisnick et al., "Do Deep Generative Models Know What They Don't Know?", ICLR 2019;
        Nalisnick et al., "Detecting Out-of-Distribution Inputs to Deep Generative Models
        Using Typicality", arXiv:1906.02994, 2019.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **FlowDensity._parameter_constraints,
        "contamination": [StrOptions({"auto"}), Interval(numbers.Real, 0, 0.5, closed="right")],
        "target_fpr": [Interval(numbers.Real, 0, 1, closed="both")],
        "criterion": [StrOptions({"likelihood", "typicality"})],
    }

    def __init__(
        self,
        flow: str = "maf",
        *,
        contamination: str | float = "auto",
        target_fpr: float = 0.05,
        criterion: str = "likelihood",
        transforms: int | None = None,
        hidden: tuple[int, ...] | None = None,
        bins: int | None = None,
        flow_options: dict[str, Any] | None = None,
        standardize: bool = True,
        whiten: bool = False,
        min_scale: float = 1.0,
        noise: float | str = "auto",
        max_epochs: int = 200,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int = 15,
        trim: float = 0.0,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool | int = False,
    ) -> None:
        super().__init__(
            flow,
            transforms=transforms,
            hidden=hidden,
            bins=bins,
            flow_options=flow_options,
            standardize=standardize,
            whiten=whiten,
            min_scale=min_scale,
            noise=noise,
            max_epochs=max_epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            validation_fraction=validation_fraction,
            patience=patience,
            trim=trim,
            random_state=random_state,
            verbose=verbose,
        )
        self.contamination = contamination
        self.target_fpr = target_fpr
        self.criterion = criterion

    def _scores_of(self, log_prob: np.ndarray) -> np.ndarray:
        if self.criterion == "typicality":
            return -typicality_scores(log_prob, self.entropy_, 1)
        return log_prob

    def _check_options(self) -> None:
        """:meth:`FlowDensity._check_options`, and ``target_fpr`` only with
        ``contamination="auto"`` (a contamination share sets the threshold alone)."""
        super()._check_options()
        default = inspect.signature(FlowAnomalyDetector).parameters["target_fpr"].default
        if self.contamination != "auto" and self.target_fpr != default:
            raise InvalidParameterError(
                f"The 'target_fpr' parameter of {type(self).__name__} applies with "
                f"contamination='auto' only; with contamination={self.contamination!r} the "
                f"share sets the threshold. Got target_fpr={self.target_fpr!r} instead of its "
                f"default {default}."
            )

    def fit(self, X: Any, y: Any = None) -> FlowAnomalyDetector:
        """Fit the flow and calibrate the threshold.

        Args:
            X: ``(N, D)`` rows: normal only (``contamination="auto"``) or with a share
                ``contamination`` of anomalies.
            y: ignored.
        """
        super().fit(X, y)
        auto = self.contamination == "auto"
        # "auto": the held-out normal rows (the training rows when there were too few for a
        # split); a contamination share: every fitted row, anomalies included
        rows = self.X_val_ if auto else None
        if rows is None:
            rows = validate_data(self, X, dtype=np.float64, reset=False)
        self.calibration_scores_ = self._scores_of(
            log_prob_rows(self.flow_, rows, stats=spec_stats(self.spec_))
        )
        share = float(self.target_fpr) if auto else float(self.contamination)
        self.offset_ = fpr_threshold(self.calibration_scores_, share)
        return self

    def score_samples(self, X: Any) -> np.ndarray:
        """Normality per row, higher is more normal: ``log p(x)`` or ``-|NLL(x) - entropy_|``."""
        return self._scores_of(self._log_prob(X))

    def decision_function(self, X: Any) -> np.ndarray:
        """``score_samples(X) - offset_``: negative for the rows flagged as anomalies."""
        check_is_fitted(self, "offset_")
        return self.score_samples(X) - self.offset_

    def predict(self, X: Any) -> np.ndarray:
        """``+1`` for normal rows, ``-1`` for anomalies."""
        return np.where(self.decision_function(X) >= 0, 1, -1)
