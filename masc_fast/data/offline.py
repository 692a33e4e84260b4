"""The two datasets that need no files: scikit-learn's digits and a locally generated MNIST-1D.

Thin wrappers over :mod:`masc_fast.data.in_memory` (which keeps its own API) that return
:class:`~masc_fast.data.LabelledSplit` pairs like the downloadable sets.
"""

from __future__ import annotations

from masc_fast.data.catalog import dataset_info
from masc_fast.data.in_memory import load_digits_split, load_mnist1d
from masc_fast.data.splits import LabelledSplit

__all__ = ["OFFLINE_NAMES", "load_offline"]

OFFLINE_NAMES = ("digits", "mnist1d")


def load_offline(name: str) -> tuple[LabelledSplit, LabelledSplit]:
    """Train and test splits of ``"digits"`` or ``"mnist1d"`` with their default settings.

    Parameters
    ----------
    name : {"digits", "mnist1d"}

    Returns
    -------
    (LabelledSplit, LabelledSplit)
        float32 ``(N, d)`` inputs, already preprocessed (digits scaled to [-1, 1], MNIST-1D
        standardised), and int64 labels: 1,347 / 450 digits (stratified split, seed 0) or
        4,000 / 1,000 MNIST-1D signals (generation seed 0).

    Raises
    ------
    ValueError
        If ``name`` is not one of :data:`OFFLINE_NAMES`.
    ImportError
        For ``"mnist1d"`` without the ``mnist1d`` package.
    """
    if name == "digits":
        x_train, y_train, x_test, y_test = load_digits_split()
    elif name == "mnist1d":
        x_train, y_train, x_test, y_test = load_mnist1d()
    else:
        raise ValueError(f"{name!r} is not an offline dataset; those are {OFFLINE_NAMES}")
    info = dataset_info(name)
    return (
        LabelledSplit(name, "train", x_train, y_train, info),
        LabelledSplit(name, "test", x_test, y_test, info),
    )
