"""MASC scores and predictions from a precomputed projection (the Triton epilogue).

Contract
--------
Inputs (checked by the launcher for what protects memory):
  proj      (n, R)   float32 or float64, any strides: X @ [U_1 .. U_k] for n rows x_i; class c
                     owns columns offsets[c] .. offsets[c+1]-1.
  offsets   (k + 1,) int64, non-decreasing, offsets[0] = 0, offsets[k] = R; same device.
  sq_norms  (n,)     ||x_i||^2 in proj's dtype T; same device.
Outputs (allocated here, contiguous):
  scores    (n, k)   dtype T.
  pred      (n,)     int64.

For each row i and class c (the semantics of csrc/projection_scores.h, exactly):
  energy       = sum_{j = offsets[c]}^{offsets[c+1]-1} proj[i, j]^2      (float64 accumulation)
  scores[i, c] = min(energy / sq_norms[i], 1)   if sq_norms[i] > 0
               = 0                              otherwise (a zero row scores 0, never NaN)
  An empty segment (offsets[c] == offsets[c+1]) is an absent class: score 0, never predicted.
  pred[i]      = the present class with the largest scores[i, c] as stored (rounded to T),
                 lowest index on ties (strict '>' while scanning c upwards); -1 if none present.

Work split: a 1-D grid of cdiv(n, BLOCK_N) programs; program p owns rows
p*BLOCK_N .. p*BLOCK_N + BLOCK_N - 1 and every class of them. It loops over the k classes and,
inside, over the class's columns in chunks of BLOCK_R (a masked BLOCK_N x BLOCK_R tile per
chunk), keeping each row's running best score and class in registers. Each proj element is
read once and each output written once: the op is memory-bound, so no tensor cores.

Accumulation dtype: always float64, for float32 input too, so that the result equals the C++
op (and torch_ops) up to summation order; a float32 sum over a few hundred squares would lose
~1e-5, the whole float32 score tolerance. The division and clamp are in float64; the score is
rounded to T before it is stored and before it is compared for pred.

Limits: k and the segment lengths are runtime loop bounds (no recompilation per shape); row
and column offsets are int64, so n * R may exceed 2^31. The launcher refuses half dtypes,
mismatched dtypes/devices/shapes and offsets that would index outside proj (ValueError), and
returns without launching when n == 0.

Constants: BLOCK_R, BLOCK_N and NUM_WARPS come from masc_fast.kernels._utils (BLOCK_R covers
the longest segment, a power of two in [4, 32]; BLOCK_N = 512 // BLOCK_R; 4 warps), chosen from
the compiled kernel's register use (no spills) and provisional until the GPU timing sweep is
recorded in bench/RESULTS.md. enable_fp_fusion=False is passed at launch: it keeps each square
rounded before it is added, like the float64 reference, and states the choice that triton 3.9
otherwise warns about (TRITON_DEFAULT_FP_FUSION unset).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from masc_fast.kernels._utils import FLOAT_DTYPES, NUM_WARPS, projection_blocks

__all__ = ["projection_scores"]


@triton.jit
def _projection_scores_kernel(
    scores_ptr,
    pred_ptr,
    proj_ptr,
    offsets_ptr,
    sq_norms_ptr,
    n,
    k,
    stride_projn,
    stride_projr,
    stride_scoresn,
    stride_scoresk,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_mask = rows < n
    proj_rows = proj_ptr + rows * stride_projn
    score_rows = scores_ptr + rows * stride_scoresn

    # other=0: padding rows take the zero-norm branch (score 0) and are never stored.
    sq_norms = tl.load(sq_norms_ptr + rows, mask=row_mask, other=0.0).to(tl.float64)
    is_positive = sq_norms > 0.0
    # A stand-in denominator of 1 keeps the unused branch of the where() finite.
    denominators = tl.where(is_positive, sq_norms, 1.0)

    out_dtype = scores_ptr.dtype.element_ty
    best_score = tl.zeros([BLOCK_N], dtype=out_dtype)
    best_class = tl.full([BLOCK_N], -1, dtype=tl.int64)
    for c in range(k):
        # Unmasked scalar loads: c < k, so c and c + 1 index the k + 1 offsets.
        begin = tl.load(offsets_ptr + c)
        end = tl.load(offsets_ptr + c + 1)
        energy = tl.zeros([BLOCK_N], dtype=tl.float64)
        for start in range(begin, end, BLOCK_R):
            cols = start + tl.arange(0, BLOCK_R).to(tl.int64)
            mask = row_mask[:, None] & (cols < end)[None, :]
            # other=0: a padded entry adds 0 to the sum of squares.
            values = tl.load(
                proj_rows[:, None] + cols[None, :] * stride_projr, mask=mask, other=0.0
            ).to(tl.float64)
            energy += tl.sum(values * values, axis=1)
        score = tl.where(is_positive, tl.minimum(energy / denominators, 1.0), 0.0)
        # Round first so pred is the argmax of the scores the caller receives.
        stored = score.to(out_dtype)
        tl.store(score_rows + c * stride_scoresk, stored, mask=row_mask)
        is_better = (end > begin) & ((best_class < 0) | (stored > best_score))
        best_score = tl.where(is_better, stored, best_score)
        best_class = tl.where(is_better, c, best_class)
    tl.store(pred_ptr + rows, best_class, mask=row_mask)


def projection_scores(
    proj: torch.Tensor, offsets: torch.Tensor, sq_norms: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores (n, k) in proj's dtype, pred (n,) int64)``; see the module header.

    Costs one device-to-host sync to read the longest segment and check ``offsets``.
    """
    if proj.dtype not in FLOAT_DTYPES:
        raise TypeError(f"proj must be float32 or float64, got {proj.dtype}")
    if sq_norms.dtype != proj.dtype:
        raise TypeError(f"sq_norms dtype {sq_norms.dtype} differs from proj dtype {proj.dtype}")
    if offsets.dtype != torch.int64:
        raise TypeError(f"offsets must be int64, got {offsets.dtype}")
    if proj.ndim != 2:
        raise ValueError(f"proj must be 2-D (n, R), got shape {tuple(proj.shape)}")
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with k + 1 >= 1 entries, got {tuple(offsets.shape)}")
    n, r = proj.shape
    if sq_norms.shape != (n,):
        raise ValueError(f"sq_norms must have shape ({n},), got {tuple(sq_norms.shape)}")
    if offsets.device != proj.device or sq_norms.device != proj.device:
        raise ValueError(
            f"proj, offsets and sq_norms must share a device, got {proj.device}, "
            f"{offsets.device} and {sq_norms.device}"
        )

    offsets = offsets.contiguous()
    sq_norms = sq_norms.contiguous()
    # One sync for the block size and for the checks that keep the kernel's reads inside proj;
    # prepending 0 makes lengths[0] = offsets[0], so k = 0 needs no special case.
    lengths = torch.diff(offsets, prepend=offsets.new_zeros(1))
    first, last, shortest, longest = torch.stack(
        [offsets[0], offsets[-1], lengths.min(), lengths.max()]
    ).tolist()
    if first != 0 or last != r or shortest < 0:
        raise ValueError(
            f"offsets must be non-decreasing from 0 to proj.shape[1] = {r}, got {offsets.tolist()}"
        )

    k = offsets.shape[0] - 1
    scores = torch.empty((n, k), dtype=proj.dtype, device=proj.device)
    pred = torch.empty(n, dtype=torch.int64, device=proj.device)
    if n == 0:
        return scores, pred
    block_n, block_r = projection_blocks(longest)
    grid = (triton.cdiv(n, block_n),)
    _projection_scores_kernel[grid](
        scores,
        pred,
        proj,
        offsets,
        sq_norms,
        n,
        k,
        proj.stride(0),
        proj.stride(1),
        scores.stride(0),
        scores.stride(1),
        BLOCK_N=block_n,
        BLOCK_R=block_r,
        num_warps=NUM_WARPS,
        enable_fp_fusion=False,
    )
    return scores, pred
