"""The authors' corrupted labels, bit for bit, on the real MNIST and CIFAR-10 label arrays.

SPEC §2.1 gives the number of training labels the authors' recipe leaves unchanged (read from
their runs whose final train accuracy on corrupted labels is exactly 100 %). Reproducing those
counts needs the real label files, which cannot be downloaded on the development machine: the
test runs where ``MASC_FAST_DATA_ROOT`` points at a folder holding torchvision's ``MNIST`` and
``cifar-10-batches-py`` (``masc-fast train --download --data-root DIR`` fetches them) and skips
with that reason elsewhere.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from masc_fast.data import load_dataset
from masc_fast.data.corruption import noisy_labels

UNCHANGED = {  # SPEC §2.1: unchanged training labels at p = 0.2, 0.4, 0.6, 0.8, 1.0
    "mnist": (49_222, 38_464, 27_697, 16_724, 6_011),
    "cifar10": (40_977, 31_918, 22_879, 13_900, 5_044),
}


@pytest.mark.parametrize("dataset", sorted(UNCHANGED))
def test_paper_recipe_reproduces_the_authors_unchanged_label_counts(dataset):
    root = os.environ.get("MASC_FAST_DATA_ROOT")
    if not root:
        pytest.skip("set MASC_FAST_DATA_ROOT to a folder with the real MNIST / CIFAR-10 files")
    try:
        train, _ = load_dataset(dataset, root=root, progress=False)
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    true = train.labels.numpy()
    for p, expected in zip((0.2, 0.4, 0.6, 0.8, 1.0), UNCHANGED[dataset]):
        corrupted = noisy_labels(true, p, 10, recipe="paper")
        assert int(np.sum(corrupted == true)) == expected, f"{dataset} p={p}"
