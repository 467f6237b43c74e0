"""Read a pandas DataFrame pickle without running code from the file.

A pickle names the functions it calls to rebuild its objects, so ``pandas.read_pickle`` on a
crafted file runs whatever the file names (``os.system`` included). :func:`read_frame` unpickles
with an allow-list: a global is resolved only when its module is pandas, numpy or a few
builtins and its name is a plain name, and it is used only when it *is* one of the objects
that rebuild a DataFrame of numbers or strings (the frame, its block manager and blocks, its
indexes, numpy arrays). Anything else refuses the file in one line, with the way to convert it
once in a session the user trusts. pandas' own remapping of the class locations of older
pandas versions is applied first, so pickles written by old pandas still read.
"""

from __future__ import annotations

import codecs
import copyreg
import functools
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from .base import DataError

__all__ = ["read_frame"]

_MODULE_ROOTS = ("pandas", "numpy", "builtins", "__builtin__", "copy_reg", "copyreg", "_codecs")


def _attr(path: str) -> Any:
    """``importlib.import_module(module).name`` for ``"module:name"``, or ``None``."""
    module, name = path.split(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


@functools.cache
def _allowed() -> tuple[Any, ...]:
    """The objects a DataFrame pickle may name (whatever exists in this pandas and numpy)."""
    import pandas as pd

    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    names = [
        f"{core}.multiarray:_reconstruct",
        f"{core}.multiarray:scalar",
        f"{core}.numeric:_frombuffer",
        "pandas.core.internals.managers:BlockManager",
        "pandas.core.internals.managers:SingleBlockManager",
        "pandas._libs.internals:_unpickle_block",
        "pandas._libs.internals:BlockPlacement",
        "pandas.core.internals.blocks:new_block",
        "pandas.core.internals.blocks:make_block",
        "pandas.core.indexes.base:_new_Index",
        "pandas.core.indexes.datetimes:_new_DatetimeIndex",
        "pandas._libs.arrays:__pyx_unpickle_NDArrayBacked",
        "pandas._libs.tslibs.nattype:_nat_unpickle",
    ]
    objects: list[Any] = [_attr(n) for n in names]
    blocks = importlib.import_module("pandas.core.internals.blocks")
    objects += [v for k, v in vars(blocks).items() if k.endswith("Block") and isinstance(v, type)]
    objects += [
        np.ndarray,
        np.dtype,
        slice,
        object,
        codecs.encode,
        getattr(copyreg, "_reconstructor", None),
    ]
    objects += [getattr(pd, n, None) for n in ("DataFrame", "Series", "Index", "RangeIndex")]
    objects += [getattr(pd, n, None) for n in ("MultiIndex", "DatetimeIndex", "Timestamp")]
    objects += [getattr(pd, n, None) for n in ("StringDtype", "CategoricalDtype", "Categorical")]
    objects += [getattr(pd, n, None) for n in ("CategoricalIndex", "DatetimeTZDtype")]
    arrays = getattr(pd, "arrays", None)
    objects += [getattr(arrays, n, None) for n in ("StringArray", "DatetimeArray")]
    return tuple(o for o in objects if o is not None)


def _base_unpickler() -> type[pickle.Unpickler]:
    """pandas' unpickler for old pickles (it remaps moved classes), else the standard one."""
    compat = _attr("pandas.compat.pickle_compat:Unpickler")
    return compat if isinstance(compat, type) else pickle.Unpickler


def _refusal(path: Path, why: str) -> DataError:
    return DataError(
        f"{path}: {why}; a pickle can run code, so only a plain DataFrame is read. If you trust "
        f'the file, convert it once: python -c "import pandas as pd; '
        f"pd.read_pickle('{path}').to_csv('{path.with_suffix('.csv')}', index=False)\""
    )


def read_frame(path: Path) -> Any:
    """The pandas DataFrame pickled in ``path``, built without running code from the file.

    Raises:
        flowforge.data.DataError: the file names anything but the pieces of a DataFrame (the
            message says how to convert a trusted file to CSV), is not a pickle, or holds
            something other than a DataFrame.

    Example:
        >>> import tempfile, pandas as pd
        >>> p = Path(tempfile.mkdtemp()) / "f.pickle"
        >>> pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}).to_pickle(p)
        >>> read_frame(p).shape
        (2, 2)
    """
    import pandas as pd

    allowed = _allowed()
    base = _base_unpickler()

    class FrameUnpickler(base):  # type: ignore[valid-type, misc]
        def find_class(self, module: str, name: str) -> Any:
            shown = f"{module}.{name}"
            if "." in name or module.split(".")[0] not in _MODULE_ROOTS:
                raise pickle.UnpicklingError(f"it names {shown}")
            obj = super().find_class(module, name)
            if not any(obj is a for a in allowed):
                raise pickle.UnpicklingError(f"it names {shown}")
            return obj

    frame: Any = None
    for encoding in ("ASCII", "latin1"):  # latin1: a pickle written by Python 2
        try:
            with open(path, "rb") as f:
                frame = FrameUnpickler(f, encoding=encoding).load()
            break
        except UnicodeDecodeError:
            continue
        except pickle.UnpicklingError as e:
            raise _refusal(path, f"refusing to unpickle: {' '.join(str(e).split())}") from None
        except Exception as e:  # a truncated or foreign file fails in many different ways
            text = " ".join(str(e).split())[:200]
            raise _refusal(path, f"cannot read it ({type(e).__name__}: {text})") from None
    if not isinstance(frame, pd.DataFrame):
        raise _refusal(path, f"expected a pandas DataFrame, got {type(frame).__name__}")
    return frame
