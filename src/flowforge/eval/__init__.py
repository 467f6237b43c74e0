"""Evaluation of trained flows: NLL with error bars and bits/dim (:mod:`.likelihood`), per-row
scores and samples of a run (:mod:`.score`)."""
