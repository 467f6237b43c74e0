"""Options files: a TOML file read into a flat option dictionary, for every kind of run.

``tomllib`` (``tomli`` before Python 3.11) is imported on first use: reading a run needs no TOML
parser.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flowforge.runs.errors import ConfigError

__all__ = ["read_toml"]


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file into a flat option dictionary (keys are checked later).

    Raises:
        ConfigError: if the file is missing or is not valid TOML.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib

    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
