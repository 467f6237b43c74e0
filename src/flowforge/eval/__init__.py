"""Evaluation of trained flows: NLL with error bars and bits/dim (:mod:`.likelihood`), per-row
scores and samples of a run (:mod:`.score`), anomaly detection (:mod:`.anomaly`), the Gaussian
baseline of tabular NLLs (:mod:`.baseline`)."""

from flowforge.eval.anomaly import auroc

__all__ = ["auroc"]
