"""Plain torch versions of the MASC ops: any device, always available.

These are the fallback backend and the baseline the fused backends are measured against.
Inputs are validated upstream (``masc_fast._validation``); here we only shape the work.
"""

from __future__ import annotations

import torch

from masc_fast.backends import PRECISIONS

__all__ = [
    "blocked_projection_scores",
    "default_block_rows",
    "gram_update",
    "gram_update_per_class",
    "gram_update_bucketed",
    "gram_update_onehot",
    "subspace_scores",
]

# One block's projection (rows × R) is kept near this size so memory stays O(block × R).
_BLOCK_BYTES = 32 * 2**20
# Temporaries of one class chunk of the bucketed and one-hot Gram forms stay under this size,
# so a flush of K = 200 classes does not allocate K × n × d at once.
_FORM_BYTES = 256 * 2**20


def default_block_rows(total_components: int, itemsize: int) -> int:
    """Rows per scoring block so that one block's ``rows × R`` projection is about 32 MiB."""
    return max(1, min(65536, _BLOCK_BYTES // max(1, total_components * itemsize)))


def blocked_projection_scores(x, basis, offsets, epilogue, block_rows=None, product=None):
    """Score ``x`` block by block: ``proj = product(x_blk, basis)`` (default ``x_blk @ basis``,
    a torch GEMM), then ``epilogue(proj, sq_norms) -> (scores, pred)`` on the block.

    The loop shared by the torch and cpp backends; extra memory is one block's (rows, R)
    projection. ‖x‖² is summed in float64, then cast to x's dtype.
    """
    n, num_classes = x.shape[0], offsets.shape[0] - 1
    block_rows = block_rows or default_block_rows(basis.shape[1], x.element_size())
    scores = torch.empty((n, num_classes), dtype=x.dtype, device=x.device)
    pred = torch.empty(n, dtype=torch.int64, device=x.device)
    with torch.no_grad():
        basis = basis.contiguous()
        for start in range(0, n, block_rows):
            block = x[start : start + block_rows]
            sq_norms = block.double().square().sum(dim=1).to(x.dtype)
            stop = start + block.shape[0]
            proj = block @ basis if product is None else product(block, basis)
            scores[start:stop], pred[start:stop] = epilogue(proj, sq_norms)
    return scores, pred


def gram_update(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
    """Add ``X_kᵀ X_k`` to ``gram[k]`` for every class k present in ``y`` (in place).

    Runs the form measured fastest for this flush shape and device
    (:func:`masc_fast.backends.gram_forms.select_gram_form`): ``gram_update_per_class`` unless another
    form won by 1.2× or more in ``bench/bench_gram_forms.py``.
    """
    from masc_fast.backends.gram_forms import (  # lazy: gram_forms imports this module
        GRAM_FORMS,
        select_gram_form,
    )

    form = select_gram_form(gram.shape[0], gram.shape[1], x.shape[0], gram.device)
    GRAM_FORMS[form](gram, x, y)


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


def _segment_ids(offsets: torch.Tensor, device: torch.device) -> torch.Tensor:
    lengths = (offsets[1:] - offsets[:-1]).to(device)
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)


def _precision_product(precision: str):
    """The block GEMM for a precision mode (see ``masc_fast.backends.PRECISIONS``).

    "fp32" and "tf32x3": exact float32 products (TF32 switched off for the call on CUDA; torch
    has no 3-pass TF32). "tf32": TF32 allowed (CUDA only; CPUs have no TF32, so it is exact
    there). "bf16": both operands rounded to bfloat16, product returned in float32.
    """
    if precision == "bf16":
        return lambda block, basis: (block.bfloat16() @ basis.bfloat16()).to(block.dtype)
    allow_tf32 = precision == "tf32"

    def product(block, basis):
        if block.device.type != "cuda":
            return block @ basis
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
        try:
            return block @ basis
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved

    return product


def subspace_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    *,
    block_rows: int | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class cos² scores and the argmax class for every row of ``x``.

    ``basis`` is ``[U_1 … U_K]`` (d, R); class k owns columns ``offsets[k]:offsets[k+1]``.
    score[i, k] = ‖U_kᵀ x_i‖² / ‖x_i‖² (clamped to 1; 0 for a zero row or an absent class).
    Prediction: the largest score among present classes, lowest index on ties.
    Energies are summed in float64 whatever the GEMM dtype. ``precision`` picks the GEMM's
    products for float32 ``x`` (:func:`_precision_product`); float64 ``x`` takes "fp32" only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"torch backend: precision must be one of {PRECISIONS}, got {precision!r}")
    if x.dtype == torch.float64 and precision != "fp32":
        raise ValueError(
            f"torch backend: float64 x is scored in float64; precision {precision!r} needs float32"
        )
    num_classes, device = len(offsets) - 1, x.device
    segment_ids = _segment_ids(offsets, device)
    absent = (offsets[1:] == offsets[:-1]).to(device)

    def epilogue(proj: torch.Tensor, sq_norms: torch.Tensor):
        energy = torch.zeros((proj.shape[0], num_classes), dtype=torch.float64, device=device)
        energy.index_add_(1, segment_ids, proj.double().square_())
        sq = sq_norms.double().unsqueeze(1)
        scores = torch.where(sq > 0, energy / sq.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
        scores = scores.clamp_(max=1.0).to(x.dtype)
        # argmax of the scores as returned (x's dtype), so ties resolve like every backend
        return scores, scores.masked_fill(absent, -torch.inf).argmax(dim=1)

    product = _precision_product(precision)
    scores, pred = blocked_projection_scores(x, basis, offsets, epilogue, block_rows, product)
    if bool(absent.all()):
        pred.fill_(-1)  # no class can be predicted (the contract of every backend)
    return scores, pred
