"""Plain torch versions of the MASC ops: any device, always available.

These are the fallback backend and the baseline the fused backends are measured against.
Inputs are validated upstream (``masc_fast._validation``); here we only shape the work.
"""

from __future__ import annotations

import torch

from masc_fast._magnitude import out_of_range_exponents, rows_in_range
from masc_fast.backends import PRECISIONS
from masc_fast.backends.gram_forms import (
    GRAM_FORMS,
    gram_update_bucketed,
    gram_update_onehot,
    gram_update_per_class,
    select_gram_form,
)

__all__ = [
    "blocked_projection_scores",
    "complement_flags",
    "default_block_rows",
    "gram_update",
    "gram_update_per_class",
    "gram_update_bucketed",
    "gram_update_onehot",
    "precision_product",
    "subspace_scores",
]

# One block's projection (rows × R) is kept near this size so memory stays O(block × R).
_BLOCK_BYTES = 32 * 2**20


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
    exponents = _class_exponents(x, y, gram.shape[0])
    if exponents is not None:
        _scaled_gram_update(gram, x, y, exponents)
        return
    form = select_gram_form(gram.shape[0], gram.shape[1], x.shape[0], gram.device)
    GRAM_FORMS[form](gram, x, y)


def _class_exponents(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """Per class, the power of two its rows need to keep their products in range
    (:mod:`masc_fast._magnitude`), or None when no class needs one (the common case)."""
    if x.numel() == 0:
        return None
    peaks = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    peaks.scatter_reduce_(0, y, x.abs().amax(dim=1), reduce="amax")
    exponents = out_of_range_exponents(peaks, x.dtype)
    return exponents if bool(exponents.any()) else None


def _scaled_gram_update(gram, x, y, exponents) -> None:
    """Each class's rows scaled by ``2^-e_k`` before the product, which goes into the Gram
    times ``2^2e_k`` (exact); for batches with rows far outside float32's product range."""
    for label in torch.unique(y).tolist():
        shift = int(exponents[label])
        rows = torch.ldexp(x[y == label], torch.tensor(float(-shift), device=x.device))
        product = (rows.T @ rows).to(gram.dtype)
        gram[label] += torch.ldexp(product, torch.tensor(float(2 * shift), device=x.device))


def complement_flags(
    complement: torch.Tensor | None, num_classes: int, device: torch.device
) -> torch.Tensor:
    """(K,) bool on ``device``: which classes' columns hold the complement ``W_k`` of their
    subspace (scored as ``1 − ‖W_kᵀx‖² / ‖x‖²``); all False when ``complement`` is None."""
    if complement is None:
        return torch.zeros(num_classes, dtype=torch.bool, device=device)
    if complement.ndim != 1 or complement.shape[0] != num_classes:
        raise ValueError(
            f"complement must have one flag per class ({num_classes}), got shape "
            f"{tuple(complement.shape)}"
        )
    return complement.to(device=device, dtype=torch.bool)


def _segment_ids(offsets: torch.Tensor, device: torch.device) -> torch.Tensor:
    lengths = (offsets[1:] - offsets[:-1]).to(device)
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)


def precision_product(precision: str):
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
    complement: torch.Tensor | None = None,
    block_rows: int | None = None,
    precision: str = "fp32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class cos² scores and the argmax class for every row of ``x``.

    ``basis`` is ``[U_1 … U_K]`` (d, R); class k owns columns ``offsets[k]:offsets[k+1]``.
    score[i, k] = ‖U_kᵀ x_i‖² / ‖x_i‖², or ``1 − ‖W_kᵀ x_i‖² / ‖x_i‖²`` where
    ``complement[k]`` (its columns hold the complement W_k), clamped to [0, 1]; 0 for a zero
    row or an absent class (an empty segment without the flag).
    Prediction: the largest score among present classes, lowest index on ties.
    Energies are summed in float64 whatever the GEMM dtype. ``precision`` picks the GEMM's
    products for float32 ``x`` (:func:`precision_product`); float64 ``x`` takes "fp32" only.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"torch backend: precision must be one of {PRECISIONS}, got {precision!r}")
    if x.dtype == torch.float64 and precision != "fp32":
        raise ValueError(
            f"torch backend: float64 x is scored in float64; precision {precision!r} needs float32"
        )
    x = rows_in_range(x)  # ‖x‖² and the energies in range for rows of 1e-30 … 1e30
    num_classes, device = len(offsets) - 1, x.device
    segment_ids = _segment_ids(offsets, device)
    flags = complement_flags(complement, num_classes, device)
    absent = (offsets[1:] == offsets[:-1]).to(device) & ~flags

    def epilogue(proj: torch.Tensor, sq_norms: torch.Tensor):
        energy = torch.zeros((proj.shape[0], num_classes), dtype=torch.float64, device=device)
        energy.index_add_(1, segment_ids, proj.double().square_())
        sq = sq_norms.double().unsqueeze(1)
        ratio = energy / sq.clamp_min(torch.finfo(torch.float64).tiny)
        ratio = torch.where(flags, 1.0 - ratio, ratio)
        scores = torch.where(sq > 0, ratio, 0.0).clamp_(0.0, 1.0).to(x.dtype)
        # argmax of the scores as returned (x's dtype), so ties resolve like every backend
        return scores, scores.masked_fill(absent, -torch.inf).argmax(dim=1)

    product = precision_product(precision)
    scores, pred = blocked_projection_scores(x, basis, offsets, epilogue, block_rows, product)
    if bool(absent.all()):
        pred.fill_(-1)  # no class can be predicted (the contract of every backend)
    return scores, pred
