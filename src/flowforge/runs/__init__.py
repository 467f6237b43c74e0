"""Run directories: what ``flowforge train`` writes and :func:`load` reads back.

This package sits below :mod:`flowforge.train`, :mod:`flowforge.vi`, :mod:`flowforge.sklearn`
and :mod:`flowforge.cli` (they use it; it uses none of them), so that loading a trained flow needs no training code. It holds:

- :mod:`.writer`: :class:`RunWriter`, the ONLY code that creates, writes into and finishes a
  run directory, for every kind of run (``flowforge train``, ``flowforge vi``, the
  scikit-learn estimators), with :func:`check_new_run` (a folder that is not a run is refused);
- :mod:`.lock`: the exclusive lock a writer holds for the life of a run (``.lock``, the PID);
- :mod:`.status`: whether a run finished, and the one "incomplete" note of one that did not;
- :mod:`.checkpoint`, :mod:`.metrics`: the checkpoint file and ``metrics.jsonl``;
- :mod:`.layout`: the files of a run directory and its record, ``config.json``;
- :mod:`.recipe`: :class:`ModelSpec`, the flow's recipe, and :func:`build_flow`;
- :mod:`.weights`: weights as safetensors files (``safetensors`` is imported on first use);
- :mod:`.atomic`: atomic file writes (temporary file, then rename);
- :mod:`.run`: :func:`open_run` and :func:`load`;
- :mod:`.tables`: ``.npy`` / ``.csv`` output files;
- :mod:`.errors`: :class:`RunError` and :class:`ConfigError`.

Plumbing (atomic writes, the check of options a resumed run may change) is imported from its
module; the old names ``flowforge.runs.atomic_write_*`` and ``refuse_fixed_options`` still work
but are not part of the public list.
"""

from flowforge.runs.atomic import (  # noqa: F401  plumbing: old imports keep working
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from flowforge.runs.errors import (
    ConfigError,
    RunError,
    refuse_fixed_options,  # noqa: F401  plumbing (old imports)
)
from flowforge.runs.layout import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    RunFiles,
    read_run_record,
    run_files,
)
from flowforge.runs.recipe import ModelSpec, build_flow, check_flow_name
from flowforge.runs.run import Run, load, open_run, parse_spec
from flowforge.runs.tables import TABLE_SUFFIXES, check_output, write_table
from flowforge.runs.weights import load_state, load_weights, read_safetensors, save_weights
from flowforge.runs.writer import RunWriter, check_new_run

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "TABLE_SUFFIXES",
    "ConfigError",
    "ModelSpec",
    "Run",
    "RunError",
    "RunFiles",
    "RunWriter",
    "build_flow",
    "check_flow_name",
    "check_new_run",
    "check_output",
    "load",
    "load_state",
    "load_weights",
    "open_run",
    "parse_spec",
    "read_run_record",
    "read_safetensors",
    "run_files",
    "save_weights",
    "write_table",
]
