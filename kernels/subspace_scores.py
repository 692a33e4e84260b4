"""Fused MASC scoring: per-class projection energies, cos² scores and the argmax, in Triton.

Contract
--------
Inputs (checked by the launcher for what protects memory):
  x         (n, d)  float32 or float64, any strides: the rows to score.
  basis     (d, R)  same dtype and device, any strides: [U_1 .. U_K]; class c owns columns
                    offsets[c] .. offsets[c+1]-1 (an empty segment is an absent class).
  offsets   (K + 1,) int64, non-decreasing from 0 to R, same device.
  complement (K,)   bool, same device: class c's columns hold the complement W_c of its
                    subspace (its d - r_c trailing eigenvectors, fewer than r_c).
  precision "fp32" | "tf32" | "tf32x3" | "bf16" (float32 x; float64 x takes "fp32" only).
Outputs (allocated here, contiguous):
  scores    (n, K)  x's dtype.
  pred      (n,)    int64.

For each row i and class c, with P = X · U computed tile by tile:
  energy       = sum_{j in class c} P[i, j]^2
  ratio        = energy / ||x_i||^2, or 1 - energy / ||x_i||^2 where complement[c]
  scores[i, c] = min(max(ratio, 0), 1) if ||x_i||^2 > 0, else 0 (a zero row scores 0)
  pred[i]      = the present class (nonempty segment or complement flag) with the largest
                 stored score, lowest index on ties; -1 if no class is present.

Two kernels, launched once per layer whatever K and the ragged r_k (one launch family):

1. ``_class_energies_kernel``: a 1-D grid over (row block, column tile) pairs in GROUP_M-grouped
   order (a group of row blocks sweeps all column tiles while its X rows are hot in L2). A
   program owns a BLOCK_M x BLOCK_R tile of P, accumulated over d in BLOCK_D steps with
   ``tl.dot``; it squares the tile in registers and reduces it into the classes whose columns
   the tile holds (columns are sorted by class, so a tile holds the classes
   tile_first[t] .. tile_first[t] + tile_count[t] - 1), adding each class's row sums into
   ``energies`` (n, K) with atomic adds (a class may span tiles). P is never written to global
   memory: extra memory is the n x K energies, the size of the output.
2. ``_scores_epilogue_kernel``: a 1-D grid over row blocks, each holding all K classes
   (BLOCK_K = next power of two >= K). It sums ||x||^2 in float64 (a second read of X, n*d
   elements against the n*d*R multiply-adds of kernel 1), divides, clamps, stores the scores
   and takes the masked argmax.

Precision: tl.dot on float32 uses TF32 unless told input_precision="ieee"; "fp32" passes
"ieee" (exact float32 products), "tf32" and "tf32x3" pass themselves, "bf16" rounds both tiles
to bfloat16 in registers (X is read as float32, so ||x||^2 is exact). Under the interpreter,
whose bfloat16 tl.dot is wrong, the rounded tiles are multiplied in float32: the same products.
Energies accumulate in float32 (float64 for float64 x). The interpreter ignores
input_precision, so CPU tests cannot tell "fp32" from "tf32"; the agreement of each mode is
measured on a GPU (bench/RESULTS.md).

Determinism: atomic adds make the order in which a class's tiles are summed vary between runs
(last-bit differences when a class spans several tiles), and a class's squares are reduced in
the order of its columns' positions within a tile, so two classes with the same basis at
different positions can score a rounding apart. Exact ties from clamping (score 1) and zero
rows (score 0) stay exact; predictions can differ from an unfused sum only at near-ties.

Limits: row and column offsets are int64. K up to 4096 per epilogue program (BLOCK_K); the
launcher raises ValueError for more (EPILOGUE_MAX_CLASSES). Block
sizes come from masc_fast.kernels._utils.fused_blocks; provisional until a GPU sweep is
recorded. enable_fp_fusion=False keeps each square rounded before it is added (states the
choice that triton otherwise warns about).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from masc_fast.kernels._utils import (
    EPILOGUE_MAX_CLASSES,
    FLOAT_DTYPES,
    PRECISIONS,
    FusedBlocks,
    epilogue_blocks,
    fused_blocks,
)

__all__ = ["subspace_scores"]


@triton.jit
def _class_energies_kernel(
    energies_ptr,
    x_ptr,
    basis_ptr,
    col_class_ptr,
    tile_first_ptr,
    tile_count_ptr,
    n,
    d,
    r,
    stride_xn,
    stride_xd,
    stride_bd,
    stride_br,
    stride_en,
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    GROUP_M: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    CAST_BF16: tl.constexpr,
    BF16_DOT: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
):
    pid = tl.program_id(0)
    num_m = tl.cdiv(n, BLOCK_M)
    num_r = tl.cdiv(r, BLOCK_R)
    # Grouped order: GROUP_M consecutive row blocks visit every column tile before moving on.
    per_group = GROUP_M * num_r
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_r = (pid % per_group) // group_rows

    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    cols = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    row_mask = rows < n
    col_mask = cols < r
    x_rows = x_ptr + rows[:, None] * stride_xn
    basis_cols = basis_ptr + cols[None, :] * stride_br

    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=ACC_DTYPE)
    for start in range(0, d, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D).to(tl.int64)
        dim_mask = dims < d
        # other=0: padded rows, dims and columns add 0 to every dot product.
        a = tl.load(
            x_rows + dims[None, :] * stride_xd,
            mask=row_mask[:, None] & dim_mask[None, :],
            other=0.0,
        )
        b = tl.load(
            basis_cols + dims[:, None] * stride_bd,
            mask=dim_mask[:, None] & col_mask[None, :],
            other=0.0,
        )
        if CAST_BF16:
            a16 = a.to(tl.bfloat16)
            b16 = b.to(tl.bfloat16)
            if BF16_DOT:
                acc = tl.dot(a16, b16, acc, out_dtype=ACC_DTYPE)
            else:
                # Interpreter only: its tl.dot on bfloat16 operands is wrong (triton 3.9).
                # Products of bfloat16 values are exact in float32, so this is the same sum.
                acc = tl.dot(
                    a16.to(tl.float32),
                    b16.to(tl.float32),
                    acc,
                    input_precision="ieee",
                    out_dtype=ACC_DTYPE,
                )
        else:
            # out_dtype names the accumulator's type: triton 3.6 (the GPU image's) does not take
            # it from acc and rejects a float64 acc without it.
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION, out_dtype=ACC_DTYPE)

    squares = acc * acc
    # other=-1 matches no class, so padded columns join no segment.
    col_class = tl.load(col_class_ptr + cols, mask=col_mask, other=-1)
    first = tl.load(tile_first_ptr + pid_r)
    count = tl.load(tile_count_ptr + pid_r)
    energy_rows = energies_ptr + rows * stride_en
    for j in range(count):
        c = first + j
        part = tl.sum(tl.where(col_class[None, :] == c, squares, 0.0), axis=1)
        tl.atomic_add(energy_rows + c, part, mask=row_mask)


@triton.jit
def _scores_epilogue_kernel(
    scores_ptr,
    pred_ptr,
    energies_ptr,
    x_ptr,
    present_ptr,
    complement_ptr,
    n,
    d,
    k,
    stride_xn,
    stride_xd,
    stride_en,
    stride_sn,
    BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    row_mask = rows < n
    x_rows = x_ptr + rows[:, None] * stride_xn

    sq_norms = tl.zeros([BLOCK_M], dtype=tl.float64)
    for start in range(0, d, BLOCK_D):
        dims = start + tl.arange(0, BLOCK_D).to(tl.int64)
        # other=0: padding adds 0 to the sum of squares.
        values = tl.load(
            x_rows + dims[None, :] * stride_xd,
            mask=row_mask[:, None] & (dims < d)[None, :],
            other=0.0,
        ).to(tl.float64)
        sq_norms += tl.sum(values * values, axis=1)
    is_positive = sq_norms > 0.0
    # A stand-in denominator of 1 keeps the unused branch of the where() finite.
    denominators = tl.where(is_positive, sq_norms, 1.0)

    classes = tl.arange(0, BLOCK_K)
    class_mask = classes < k
    mask = row_mask[:, None] & class_mask[None, :]
    energy = tl.load(
        energies_ptr + rows[:, None] * stride_en + classes[None, :], mask=mask, other=0.0
    ).to(tl.float64)
    # other=0: padding classes are read directly (their scores are masked out of the store).
    flipped = tl.load(complement_ptr + classes, mask=class_mask, other=0) != 0
    ratio = energy / denominators[:, None]
    ratio = tl.where(flipped[None, :], 1.0 - ratio, ratio)
    score = tl.where(is_positive[:, None], tl.minimum(tl.maximum(ratio, 0.0), 1.0), 0.0)
    stored = score.to(scores_ptr.dtype.element_ty)
    tl.store(scores_ptr + rows[:, None] * stride_sn + classes[None, :], stored, mask=mask)

    # other=0: padding classes count as absent. Scores are >= 0, so -1 ranks every absent
    # class below every present one; argmax takes the lowest index on ties.
    present = tl.load(present_ptr + classes, mask=class_mask, other=0) != 0
    ranked = tl.where(present[None, :], stored.to(tl.float64), -1.0)
    best = tl.argmax(ranked, axis=1, tie_break_left=True).to(tl.int64)
    any_present = tl.max(present.to(tl.int32), axis=0) > 0
    tl.store(pred_ptr + rows, tl.where(any_present, best, -1), mask=row_mask)


def _tile_tables(lengths: torch.Tensor, r: int, block_r: int):
    """Per column: its class; per column tile: its first class and how many classes it holds.

    ``lengths`` (K,) are the class segment lengths r_k, summing to ``r``."""
    classes = torch.arange(lengths.shape[0], device=lengths.device, dtype=torch.int32)
    col_class = torch.repeat_interleave(classes, lengths, output_size=r)
    starts = torch.arange(0, r, block_r, device=lengths.device)
    ends = torch.clamp(starts + block_r, max=r) - 1
    first = col_class[starts]
    count = col_class[ends] - first + 1
    return col_class, first.contiguous(), count.to(torch.int32).contiguous()


def subspace_scores(
    x: torch.Tensor,
    basis: torch.Tensor,
    offsets: torch.Tensor,
    complement: torch.Tensor | None = None,
    *,
    precision: str = "fp32",
    blocks: FusedBlocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scores (n, K) in x's dtype, pred (n,) int64)``; see the module header.

    ``blocks`` overrides the tile shape (tests and tuning sweeps). Costs one device-to-host
    sync to check ``offsets`` (they index basis columns).
    """
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if basis.dtype != x.dtype:
        raise TypeError(f"basis dtype {basis.dtype} differs from x dtype {x.dtype}")
    if offsets.dtype != torch.int64:
        raise TypeError(f"offsets must be int64, got {offsets.dtype}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if x.dtype == torch.float64 and precision != "fp32":
        raise ValueError(f"float64 x is scored in float64; precision {precision!r} needs float32")
    if x.ndim != 2 or basis.ndim != 2:
        raise ValueError(
            f"x and basis must be 2-D, got shapes {tuple(x.shape)} and {tuple(basis.shape)}"
        )
    n, d = x.shape
    if basis.shape[0] != d:
        raise ValueError(f"basis has {basis.shape[0]} rows but x has {d} columns")
    if offsets.ndim != 1 or offsets.shape[0] < 1:
        raise ValueError(f"offsets must be 1-D with K + 1 >= 1 entries, got {tuple(offsets.shape)}")
    if offsets.shape[0] - 1 > EPILOGUE_MAX_CLASSES:
        raise ValueError(
            f"{offsets.shape[0] - 1} classes: the fused scoring epilogue holds at most "
            f"EPILOGUE_MAX_CLASSES = {EPILOGUE_MAX_CLASSES} classes per program; score with "
            f"backend='torch'"
        )
    if basis.device != x.device or offsets.device != x.device:
        raise ValueError(
            f"x, basis and offsets must share a device, got {x.device}, {basis.device} and "
            f"{offsets.device}"
        )
    if complement is None:
        complement = torch.zeros(offsets.shape[0] - 1, dtype=torch.bool, device=x.device)
    if complement.shape != (offsets.shape[0] - 1,) or complement.device != x.device:
        raise ValueError(
            f"complement must be ({offsets.shape[0] - 1},) on {x.device}, got "
            f"{tuple(complement.shape)} on {complement.device}"
        )
    r = basis.shape[1]
    lengths = torch.diff(offsets, prepend=offsets.new_zeros(1))
    first, last, shortest = torch.stack([offsets[0], offsets[-1], lengths.min()]).tolist()
    if first != 0 or last != r or shortest < 0:
        raise ValueError(
            f"offsets must be non-decreasing from 0 to basis.shape[1] = {r}, got {offsets.tolist()}"
        )

    k = offsets.shape[0] - 1
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    energies = torch.zeros((n, k), dtype=acc_dtype, device=x.device)
    scores = torch.empty((n, k), dtype=x.dtype, device=x.device)
    pred = torch.empty(n, dtype=torch.int64, device=x.device)
    if n == 0:
        return scores, pred
    if k == 0:
        return scores, pred.fill_(-1)

    if r > 0:
        blocks = blocks or fused_blocks(precision, x.dtype, x.device)
        col_class, tile_first, tile_count = _tile_tables(lengths[1:], r, blocks.block_r)
        grid = (triton.cdiv(n, blocks.block_m) * triton.cdiv(r, blocks.block_r),)
        _class_energies_kernel[grid](
            energies,
            x,
            basis,
            col_class,
            tile_first,
            tile_count,
            n,
            d,
            r,
            x.stride(0),
            x.stride(1),
            basis.stride(0),
            basis.stride(1),
            energies.stride(0),
            BLOCK_M=blocks.block_m,
            BLOCK_R=blocks.block_r,
            BLOCK_D=blocks.block_d,
            GROUP_M=blocks.group_m,
            DOT_PRECISION="ieee" if precision == "fp32" else precision,
            CAST_BF16=precision == "bf16",
            BF16_DOT=x.device.type == "cuda",
            ACC_DTYPE=tl.float64 if acc_dtype == torch.float64 else tl.float32,
            num_warps=blocks.num_warps,
            num_stages=blocks.num_stages,
            enable_fp_fusion=False,
        )

    flipped = complement.to(torch.int8).contiguous()
    present = ((lengths[1:] > 0) | (flipped != 0)).to(torch.int8)
    block_m, block_k, block_d = epilogue_blocks(k)
    _scores_epilogue_kernel[(triton.cdiv(n, block_m),)](
        scores,
        pred,
        energies,
        x,
        present,
        flipped,
        n,
        d,
        k,
        x.stride(0),
        x.stride(1),
        energies.stride(0),
        scores.stride(0),
        BLOCK_M=block_m,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        num_warps=4,
        enable_fp_fusion=False,
    )
    return scores, pred
