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

__all__ = [
    "GRAM_FORMS",
    "gram_update_bucketed",
    "gram_update_onehot",
    "gram_update_per_class",
    "select_gram_form",
]

# Temporaries of one class chunk of the bucketed and one-hot Gram forms stay under this size,
# so a flush of K = 200 classes does not allocate K × n × d at once.
_FORM_BYTES = 256 * 2**20


def gram_update_per_class(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """Add ``X_kᵀ X_k`` to ``gram[k]`` for every class k present in ``y`` (in place).

    Rows are sorted by class once, so each class costs one GEMM on a contiguous slice. The
    product is computed in ``x.dtype`` and added into ``gram.dtype`` (float32 rows: a float32
    GEMM over this call's rows, summed into the float64 Gram across calls).
    """
    counts = torch.bincount(y, minlength=gram.shape[0]).tolist()
    order = torch.argsort(y, stable=True)
    rows = x.index_select(0, order)
    start = 0
    for label, count in enumerate(counts):
        if count:
            chunk = rows[start : start + count]
            if chunk.dtype == gram.dtype:
                gram[label].addmm_(chunk.T, chunk)
            else:
                gram[label] += (chunk.T @ chunk).to(gram.dtype)
            start += count


def _accumulate(gram: torch.Tensor, labels: torch.Tensor, products: torch.Tensor) -> None:
    """``gram[labels[c]] += products[c]``; ``labels`` ascending and unique."""
    first, last = int(labels[0]), int(labels[-1])
    if last - first + 1 == labels.numel():
        # Consecutive classes: add into a view, casting element by element (no float64 copy).
        gram[first : last + 1].add_(products)
    else:
        gram.index_add_(0, labels, products.to(gram.dtype))


def _classes_per_chunk(gram: torch.Tensor, x: torch.Tensor, rows_per_class: int) -> int:
    """Classes per chunk so that one chunk's rows, products and cast products fit the budget."""
    dim = x.shape[1]
    per_class = (rows_per_class * dim + dim * dim) * x.element_size()
    if x.dtype != gram.dtype:  # adding into the Gram casts the products on the CPU (a copy)
        per_class += dim * dim * gram.element_size()
    return max(1, _FORM_BYTES // per_class)


def gram_update_bucketed(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """:func:`gram_update` as one batched GEMM over rows padded per class.

    Rows are sorted by class and copied into a zero tensor ``B`` of shape (P, m_max, d), P the
    classes present and m_max the largest class count among them; then
    ``gram[k] += B_kᵀ B_k`` for all of them by one ``bmm`` (``baddbmm_`` straight into the
    Gram when the dtypes match). Zero padding rows add nothing to ``B_kᵀ B_k``, so the result
    equals the per-class form up to summation order. Same signature, dtypes and in-place
    contract as :func:`gram_update`.

    Notes
    -----
    Work ``2 · P · m_max · d²`` flops: the per-class form's for balanced classes, up to P×
    more when one class dominates the call. Memory: the sorted rows, then per chunk of classes
    C ``|C| · (m_max · d + d²)`` elements of ``x.dtype`` (padded rows and products) plus
    ``|C| · d²`` of ``gram.dtype`` when the dtypes differ (the cast), at most 256 MiB.
    """
    counts = torch.bincount(y, minlength=gram.shape[0])
    present = counts.nonzero().flatten()
    if present.numel() == 0:
        return
    order = torch.argsort(y, stable=True)
    rows, labels = x.index_select(0, order), y.index_select(0, order)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(y.numel(), device=y.device) - starts.index_select(0, labels)
    # Dense index 0..P-1 of each present class: absent classes take no padding.
    dense = torch.full_like(counts, -1)
    dense[present] = torch.arange(present.numel(), device=y.device)
    step = _classes_per_chunk(gram, x, int(counts.max()))
    bounds = torch.stack([starts, starts + counts], 1).tolist()
    for first in range(0, present.numel(), step):
        chunk = present[first : first + step]
        # Sorted rows of the chunk's classes are contiguous (absent classes have none).
        lo, hi = bounds[int(chunk[0])][0], bounds[int(chunk[-1])][1]
        _bucketed_chunk(gram, chunk, rows[lo:hi], dense[labels[lo:hi]] - first, slots[lo:hi])


def _bucketed_chunk(gram, chunk, rows, buckets, slots) -> None:
    """Pad one chunk's sorted rows into (|C|, m_max, d) and add ``Bᵀ B`` to its Grams."""
    longest = int(slots.max()) + 1
    padded = rows.new_zeros((chunk.numel(), longest, rows.shape[1]))
    padded[buckets, slots] = rows
    first, last = int(chunk[0]), int(chunk[-1])
    if padded.dtype == gram.dtype and last - first + 1 == chunk.numel():
        gram[first : last + 1].baddbmm_(padded.mT, padded)
    else:
        _accumulate(gram, chunk, torch.bmm(padded.mT, padded))


def gram_update_onehot(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """:func:`gram_update` by one-hot weighting, with no sort or gather.

    For a chunk C of the classes present, ``W[i, c, :] = 1[y_i = C_c] · x_i`` (n, |C|, d) and
    ``gram[C] += (W viewed as (n, |C|·d))ᵀ @ x``, one plain GEMM per chunk. Rows of other
    classes are multiplied by zero, so the result equals the per-class form up to summation
    order. Same signature, dtypes and in-place contract as :func:`gram_update`.

    Notes
    -----
    Work ``2 · P · n · d²`` flops for P present classes: P× the per-class form, traded for one
    regular GEMM per chunk. Memory: per chunk of classes C, ``|C| · (n · d + d²)`` elements
    of ``x.dtype`` (weighted rows and products) plus ``|C| · d²`` of ``gram.dtype`` when the
    dtypes differ (the cast); the einsum ``'nk,ni,nj->kij'`` would hold ``K · n · d`` at once
    (10 GiB at K=200, n=25600, d=512 in float32), so chunks are capped at 256 MiB, or one
    class where a single class exceeds that.
    """
    present = torch.bincount(y, minlength=gram.shape[0]).nonzero().flatten()
    step = _classes_per_chunk(gram, x, x.shape[0])
    for first in range(0, present.numel(), step):
        _onehot_chunk(gram, present[first : first + step], x, y)


def _onehot_chunk(gram, chunk, x, y) -> None:
    """Add ``(x ⊙ 1[y = c])ᵀ x`` for the classes c of one chunk (temporaries die on return)."""
    n, dim = x.shape
    onehot = (y.unsqueeze(1) == chunk.unsqueeze(0)).to(x.dtype)  # (n, |C|)
    weighted = (onehot.unsqueeze(2) * x.unsqueeze(1)).view(n, chunk.numel() * dim)
    _accumulate(gram, chunk, (weighted.T @ x).view(chunk.numel(), dim, dim))


GRAM_FORMS = {
    "per_class": gram_update_per_class,
    "bucketed": gram_update_bucketed,
    "onehot": gram_update_onehot,
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
