"""Datasets as compact in-memory splits, and batch loaders over them (SPEC §2, §5.1).

``load_dataset(name, root=...)`` returns ``(train, test)`` :class:`LabelledSplit` objects with
true labels in dataset order; :class:`BatchLoader` yields ``(x, y[, y_true])`` batches of
preprocessed float32 inputs. Label noise lives in :mod:`masc_fast.data.corruption`.
"""

from masc_fast.data.catalog import DATASET_NAMES, DatasetInfo, dataset_info
from masc_fast.data.loader import BatchLoader
from masc_fast.data.sources import load_dataset
from masc_fast.data.splits import LabelledSplit

__all__ = [
    "DATASET_NAMES",
    "BatchLoader",
    "DatasetInfo",
    "LabelledSplit",
    "dataset_info",
    "load_dataset",
]
