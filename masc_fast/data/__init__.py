"""Datasets as compact in-memory splits, and batch loaders over them (SPEC §2, §5.1).

``load_dataset(name, root=...)`` returns ``(train, test)`` :class:`LabelledSplit` objects with
true labels in dataset order; :class:`BatchLoader` yields ``(x, y[, y_true])`` batches of
preprocessed float32 inputs. Label noise lives in :mod:`masc_fast.data.corruption`, Zhang et al.'s
randomization tests in :mod:`masc_fast.data.randomization` (:func:`randomize`).
"""

from masc_fast.data.catalog import DATASET_NAMES, DatasetInfo, dataset_info
from masc_fast.data.corruption import corrupt_labels, noisy_labels
from masc_fast.data.in_memory import labelled_loader, load_digits_split, load_mnist1d
from masc_fast.data.loader import BatchLoader
from masc_fast.data.randomization import RANDOMIZATIONS, randomize
from masc_fast.data.sources import find_datasets, load_dataset
from masc_fast.data.splits import LabelledSplit

__all__ = [
    "DATASET_NAMES",
    "RANDOMIZATIONS",
    "BatchLoader",
    "DatasetInfo",
    "LabelledSplit",
    "corrupt_labels",
    "dataset_info",
    "find_datasets",
    "labelled_loader",
    "load_dataset",
    "load_digits_split",
    "load_mnist1d",
    "noisy_labels",
    "randomize",
]
