"""Evaluation of trained flows: per-row log-likelihoods, the NLL with its error bar and bits/dim
(:mod:`.likelihood`: :func:`log_likelihoods`, :func:`summarize`, :func:`bits_per_dim`), per-row
scores and samples of a run (:mod:`.score`: :func:`score_rows`, :func:`sample_rows`), anomaly
detection (:mod:`.anomaly`: :func:`auroc`, :func:`typicality_scores`, :func:`fpr_threshold`),
the Gaussian baseline of tabular NLLs (:mod:`.baseline`: :func:`gaussian_baseline`).

Example:
    >>> import torch, flowforge as ff
    >>> flow = ff.flows.RealNVP(features=2, transforms=2, hidden=(8,))
    >>> ll = ff.eval.log_likelihoods(flow, torch.randn(100, 2))
    >>> s = ff.eval.summarize(ll)
    >>> s.n, s.nll == float(-ll.mean())
    (100, True)
"""

from flowforge.eval.anomaly import auroc, fpr_threshold, typicality_scores
from flowforge.eval.baseline import GaussianBaseline, gaussian_baseline
from flowforge.eval.likelihood import (
    NLLSummary,
    NonFiniteLikelihood,
    bits_per_dim,
    log_likelihoods,
    summarize,
)
from flowforge.eval.score import sample_rows, score_rows

__all__ = [
    "GaussianBaseline",
    "NLLSummary",
    "NonFiniteLikelihood",
    "auroc",
    "bits_per_dim",
    "fpr_threshold",
    "gaussian_baseline",
    "log_likelihoods",
    "sample_rows",
    "score_rows",
    "summarize",
    "typicality_scores",
]
