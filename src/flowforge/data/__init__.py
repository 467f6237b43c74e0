"""Datasets: 2-D toys, scikit-learn sets, the MAF tabular benchmark, images, user files.

>>> from flowforge.data import load_dataset
>>> ds = load_dataset("checkerboard", n_val=10, n_test=10)
>>> ds.dim
2
"""

from .base import DataError, Dataset, DatasetInfo, Standardizer, default_data_dir, dequantize
from .registry import dataset_names, list_datasets, load_dataset
from .toy import EXACT_TOY_DATASETS, TOY_DATASETS, sample_toy, toy_log_prob
from .user import read_table

#: Names that moved to :mod:`flowforge.dequantization`, still importable from here.
_MOVED = (
    "DequantizedLikelihood",
    "Dequantizer",
    "UniformDequantizer",
    "VariationalDequantizer",
    "dequantized_log_likelihood",
)


def __getattr__(name: str) -> object:
    """The dequantization names of :data:`_MOVED`, from :mod:`flowforge.dequantization` (a
    lazy re-export for old imports: datasets know no models)."""
    if name in _MOVED:
        import flowforge.dequantization as moved

        return getattr(moved, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EXACT_TOY_DATASETS",
    "TOY_DATASETS",
    "DataError",
    "Dataset",
    "DatasetInfo",
    "DequantizedLikelihood",
    "Dequantizer",
    "Standardizer",
    "UniformDequantizer",
    "VariationalDequantizer",
    "dataset_names",
    "default_data_dir",
    "dequantize",
    "dequantized_log_likelihood",
    "list_datasets",
    "load_dataset",
    "read_table",
    "sample_toy",
    "toy_log_prob",
]
