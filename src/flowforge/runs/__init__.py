"""Run directories: what ``flowforge train`` writes and :func:`load` reads back.

This package sits below :mod:`flowforge.train` and :mod:`flowforge.cli` (both use it; it uses
neither), so that loading a trained flow needs no training code. It holds:

- :mod:`.layout`: the files of a run directory and its record, ``config.json``;
- :mod:`.recipe`: :class:`ModelSpec`, the flow's recipe, and :func:`build_flow`;
- :mod:`.weights`: weights as safetensors files (``safetensors`` is imported on first use);
- :mod:`.atomic`: atomic file writes (temporary file, then rename);
- :mod:`.run`: :func:`open_run` and :func:`load`;
- :mod:`.tables`: ``.npy`` / ``.csv`` output files;
- :mod:`.errors`: :class:`RunError` and :class:`ConfigError`.
"""

from flowforge.runs.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from flowforge.runs.errors import ConfigError, RunError, refuse_fixed_options
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

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "TABLE_SUFFIXES",
    "ConfigError",
    "ModelSpec",
    "Run",
    "RunError",
    "RunFiles",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "build_flow",
    "check_flow_name",
    "check_output",
    "load",
    "load_state",
    "load_weights",
    "open_run",
    "parse_spec",
    "read_run_record",
    "read_safetensors",
    "refuse_fixed_options",
    "run_files",
    "save_weights",
    "write_table",
]
