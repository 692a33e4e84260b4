"""Block-size heuristics and dtype lists shared by the Triton launchers."""

from __future__ import annotations

import torch
import triton

__all__ = ["FLOAT_DTYPES", "NUM_WARPS", "projection_blocks"]

# Scores are stored in the input dtype; half types are refused because the GEMM feeding the
# epilogue would already have lost more than the float32 score tolerance.
FLOAT_DTYPES = (torch.float32, torch.float64)

# Tile sizes for projection_scores. Not yet timed on a GPU (the sweep comes with the fused-kernel
# issue and goes to bench/RESULTS.md); chosen from the sm_90 resource usage of the compiled
# kernel (triton 3.9, `cuobjdump --dump-resource-usage`): with 4 warps a tile of 512 values
# (4 per thread) needs 78-90 registers and no stack for every (BLOCK_N, BLOCK_R) from (128, 4)
# to (16, 32), float32 and float64, while 1024-value tiles need 164-250 and 4096-value tiles
# spill. The per-row running state is replicated across the threads that share a row, so it is
# the tile size, not BLOCK_R alone, that sets register pressure.
NUM_WARPS = 4
_TILE_ELEMENTS = 512
# BLOCK_R in [4, 32] keeps BLOCK_N in [16, 128]: at most 128 rows per program leaves a
# 65536-row scoring block 512 programs (about 4 per H100 SM); at 32 columns one warp spans the
# chunk, and longer segments simply take more iterations.
_MIN_BLOCK_R = 4
_MAX_BLOCK_R = 32


def projection_blocks(longest_segment: int) -> tuple[int, int]:
    """``(BLOCK_N, BLOCK_R)`` for projection_scores: BLOCK_R covers the longest class segment
    (power of two in [4, 32]); BLOCK_N = 512 // BLOCK_R rows (16 to 128)."""
    block_r = min(_MAX_BLOCK_R, max(_MIN_BLOCK_R, triton.next_power_of_2(max(1, longest_segment))))
    return _TILE_ELEMENTS // block_r, block_r
