"""``metrics.jsonl``: re-exported from :mod:`flowforge.runs.metrics`."""

from flowforge.runs.metrics import MetricsLog

__all__ = ["MetricsLog"]
