"""Plain torch versions of the MASC ops: any device, always available.

These are the fallback backend and the baseline the fused backends are measured against.
Inputs are validated upstream (``masc_fast._validation``); here we only shape the work.
"""

from __future__ import annotations

import torch

__all__ = ["blocked_projection_scores", "default_block_rows", "gram_update", "subspace_scores"]

# One block's projection (rows × R) is kept near this size so memory stays O(block × R).
_BLOCK_BYTES = 32 * 2**20


def default_block_rows(total_components: int, itemsize: int) -> int:
    """Rows per scoring block so that one block's ``rows × R`` projection is about 32 MiB."""
    return max(1, min(65536, _BLOCK_BYTES // max(1, total_components * itemsize)))


def blocked_projection_scores(x, basis, offsets, epilogue, block_rows=None):
    """Score ``x`` block by block: ``proj = x_blk @ basis`` (torch GEMM), then
    ``epilogue(proj, sq_norms) -> (scores, pred)`` on the block.

    The loop shared by the backends whose own kernel is the epilogue (cpp, triton); extra
    memory is one block's (rows, R) projection. ‖x‖² is summed in float64, then cast to x's dtype.
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
            scores[start:stop], pred[start:stop] = epilogue(block @ basis, sq_norms)
    return scores, pred


def gram_update(gram: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
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


def _segment_ids(offsets: torch.Tensor, device: torch.device) -> torch.Tensor:
    lengths = (offsets[1:] - offsets[:-1]).to(device)
    return torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)


def subspace_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    *,
    block_rows: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class cos² scores and the argmax class for every row of ``x``.

    ``basis`` is ``[U_1 … U_K]`` (d, R); class k owns columns ``offsets[k]:offsets[k+1]``.
    score[i, k] = ‖U_kᵀ x_i‖² / ‖x_i‖² (clamped to 1; 0 for a zero row or an absent class).
    Prediction: the largest score among present classes, lowest index on ties.
    Energies are summed in float64 whatever the GEMM dtype.
    """
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

    scores, pred = blocked_projection_scores(x, basis, offsets, epilogue, block_rows)
    if bool(absent.all()):
        pred.fill_(-1)  # no class can be predicted (the contract of every backend)
    return scores, pred
