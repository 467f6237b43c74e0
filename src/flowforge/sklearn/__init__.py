"""scikit-learn estimators over flowforge's flows (needs the ``scikit-learn`` extra).

- :class:`FlowDensity`: a density estimator (``fit``, ``score_samples``, ``score``,
  ``sample``, ``save``), usable in a ``Pipeline`` and with ``GridSearchCV``;
- :class:`FlowAnomalyDetector`: an outlier detector (``predict`` +1 / -1,
  ``decision_function``) with a threshold calibrated from ``contamination`` or a target
  false-positive rate, scoring by likelihood or typicality.

``import flowforge`` does not import this module (nor scikit-learn): ``ff.FlowDensity`` and
``ff.FlowAnomalyDetector`` load it on first access.
"""

from flowforge.sklearn.density import FlowDensity
from flowforge.sklearn.detector import FlowAnomalyDetector

__all__ = ["FlowAnomalyDetector", "FlowDensity"]
