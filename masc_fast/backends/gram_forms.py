"""Which torch form of the Gram update to run for a flush shape, from measured winners.

The torch backend has three forms of ``gram_update`` with one contract
(:mod:`masc_fast.backends.torch_ops`): ``per_class`` (sort by class, one GEMM per class; the
default), ``bucketed`` (rows padded per class, one batched GEMM) and ``onehot`` (one-hot
weighted rows, one GEMM per chunk of classes, K× the flops). :func:`select_gram_form` picks one
per (K, d, rows, device) from the medians below, measured by ``bench/bench_gram_forms.py``
(float32 rows into a float64 Gram, classes balanced) and recorded in bench/RESULTS.md,
"Gram accumulation forms".

CPU (AMD EPYC, 2 cores, torch 2.15, 2 threads), median ms per flush:

==================  =========  ========  =======
K, d, rows          per_class  bucketed  onehot
==================  =========  ========  =======
10, 784, 10240         82.6     301.5     888.2
200, 512, 25600       155.1     296.2   19480.3
10, 96, 2048            0.98      0.99      3.58
50, 64, 3200            7.00      0.96     26.2
==================  =========  ========  =======

Bucketing only pays where each class's GEMM is tiny (d = 64, 64 rows per class: the per-class
loop's fixed cost per class dominates); at the sizes of real layers one GEMM per class wins.

CUDA: nothing measured yet (no GPU was available when this table was made), so CUDA gets the
default per-class form until a GPU run of ``bench/bench_gram_forms.py`` fills its table.
"""

from __future__ import annotations

import math

import torch

from masc_fast.backends import torch_ops

__all__ = ["GRAM_FORMS", "select_gram_form"]

GRAM_FORMS = {
    "per_class": torch_ops.gram_update_per_class,
    "bucketed": torch_ops.gram_update_bucketed,
    "onehot": torch_ops.gram_update_onehot,
}

# device type -> {(K, d, rows): {form: median seconds}}; bench/RESULTS.md, same run.
_MEASURED: dict[str, dict[tuple[int, int, int], dict[str, float]]] = {
    "cpu": {
        (10, 784, 10240): {"per_class": 0.08258, "bucketed": 0.30153, "onehot": 0.88818},
        (200, 512, 25600): {"per_class": 0.15508, "bucketed": 0.29623, "onehot": 19.48032},
        (10, 96, 2048): {"per_class": 0.00098, "bucketed": 0.00099, "onehot": 0.00358},
        (50, 64, 3200): {"per_class": 0.00700, "bucketed": 0.00096, "onehot": 0.02621},
    },
    "cuda": {},  # waits for a GPU run of bench/bench_gram_forms.py
}
# Another form replaces the default only when it is this much faster: on the shared 2-core
# machine one median moved 2.3x between two runs of the same code (bucketed, K=10, d=784), so
# near-ties stay per_class.
_MIN_SPEEDUP = 1.2


def _winner(medians: dict[str, float]) -> str:
    best = min(medians, key=medians.get)
    return best if medians["per_class"] >= _MIN_SPEEDUP * medians[best] else "per_class"


def select_gram_form(num_classes: int, dim: int, rows: int, device) -> str:
    """Name of the fastest measured Gram-update form for a flush of ``rows`` rows.

    Looks up the measured shape nearest to (``num_classes``, ``dim``, ``rows``) in log space
    for the device's type and returns its winner (``"per_class"`` unless another form was at
    least 1.2× faster there). Device types with no measurements (CUDA so far) get
    ``"per_class"``, the default ``GramAccumulator`` uses.

    Parameters
    ----------
    num_classes, dim, rows : int
        K, d and the rows of one flush.
    device : torch.device or str
        Where the Gram lives; only its type matters.

    Returns
    -------
    str
        A key of :data:`GRAM_FORMS`: ``"per_class"``, ``"bucketed"`` or ``"onehot"``.

    Notes
    -----
    Outside the measured points the choice is a guess by proximity, not a measurement.

    Example
    -------
    >>> select_gram_form(10, 784, 10240, "cpu")
    'per_class'
    >>> GRAM_FORMS[select_gram_form(50, 64, 3200, "cpu")].__name__
    'gram_update_bucketed'
    """
    table = _MEASURED.get(torch.device(device).type)
    if not table:
        return "per_class"
    query = [math.log(max(1, value)) for value in (num_classes, dim, rows)]

    def distance(shape: tuple[int, int, int]) -> float:
        return sum((math.log(value) - point) ** 2 for value, point in zip(shape, query))

    return _winner(table[min(table, key=distance)])
