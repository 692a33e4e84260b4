"""Block sizes, precision names and dtype lists shared by the Triton launchers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton

__all__ = [
    "EPILOGUE_MAX_CLASSES",
    "TUNED_BLOCKS",
    "FLOAT_DTYPES",
    "PRECISIONS",
    "FusedBlocks",
    "epilogue_blocks",
    "fused_blocks",
]

# Scores are stored in the input dtype; half inputs are refused (the "bf16" precision mode rounds
# float32 tiles in registers instead, so ||x||^2 and the scores keep float32 range and rounding).
FLOAT_DTYPES = (torch.float32, torch.float64)

# "fp32": tl.dot with input_precision="ieee" (exact float32 products); "tf32", "tf32x3": the
# tensor-core modes of the same name; "bf16": both tiles rounded to bfloat16, float32 sums.
PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")


@dataclass(frozen=True)
class FusedBlocks:
    """Tile shape and launch options of ``_class_energies_kernel``."""

    block_m: int
    block_r: int
    block_d: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3


# Provisional (no GPU has been lent yet; the sweep goes to bench/RESULTS.md when one is). They
# are the shapes of Triton's matmul tutorial that suit each input type on sm_80/sm_90: 128x64
# tiles with BLOCK_D=32 for tensor-core float32 modes (acc: 64 float32 registers per thread at 4
# warps; 3 stages of float32 A and B tiles need 72 KiB of shared memory), half the rows for the
# "ieee" float32 path, which runs on the FMA units, and 64x32x16 for float64.
_CUDA_BLOCKS = {
    "fp32": FusedBlocks(64, 64, 32),
    "tf32": FusedBlocks(128, 64, 32),
    "tf32x3": FusedBlocks(128, 64, 32),
    "bf16": FusedBlocks(128, 64, 32),
    "float64": FusedBlocks(64, 32, 16, num_stages=2),
}
# Winners of the block-size sweep of bench/gpu_check.py, per GPU (torch.cuda.get_device_name)
# and per precision (or "float64"): (block_m, block_r, block_d, group_m, num_warps, num_stages).
# A GPU not listed gets _CUDA_BLOCKS. Filled from a GPU run's gpu_check-*.json ("block_sweep");
# no GPU has run the sweep yet.
TUNED_BLOCKS: dict[str, dict[str, tuple[int, int, int, int, int, int]]] = {}
# The interpreter runs each program as NumPy calls, so a few large tiles are fastest; 32 keeps
# the small test shapes spanning several tiles in every direction. tl.dot needs >= 16.
_INTERPRETER_BLOCKS = FusedBlocks(32, 32, 32, group_m=2)

# The epilogue holds a BLOCK_M x BLOCK_K tile of float64 energies: 2048 values over 4 warps are
# 16 per thread. Its rows are also capped at 128, because the ||x||^2 loop holds a BLOCK_M x
# BLOCK_D tile of x: uncapped, K = 1 gave 2048 x 64 float64 values per program, which ptxas took
# 8 minutes to compile for sm_90 (tests/test_kernels_aot.py; 128 x 64 compiles in seconds).
_EPILOGUE_ELEMENTS = 2048
_EPILOGUE_MAX_ROWS = 128
_EPILOGUE_BLOCK_D = 64
# The epilogue holds all K classes of its rows in one tile (BLOCK_K = next power of two >= K):
# at K = 4096 that is one row of 4096 float64 energies per program, 32 per thread at 4 warps;
# larger tiles would spill. The launcher refuses more classes, the limit the kernel header states.
EPILOGUE_MAX_CLASSES = 4096


@functools.cache
def _gpu_name(index: int) -> str:
    return torch.cuda.get_device_name(index)


def fused_blocks(precision: str, dtype: torch.dtype, device: torch.device) -> FusedBlocks:
    """Tile shape for the energies kernel: the sweep's winner for this GPU and precision
    (:data:`TUNED_BLOCKS`), else the provisional shape; one shape when interpreted."""
    if device.type != "cuda":
        return _INTERPRETER_BLOCKS
    key = "float64" if dtype == torch.float64 else precision
    index = device.index if device.index is not None else torch.cuda.current_device()
    tuned = TUNED_BLOCKS.get(_gpu_name(index), {}).get(key)
    return FusedBlocks(*tuned) if tuned is not None else _CUDA_BLOCKS[key]


def epilogue_blocks(num_classes: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_K, BLOCK_D)`` for the scores epilogue: all K classes in one tile."""
    block_k = triton.next_power_of_2(max(1, num_classes))
    block_m = max(1, min(_EPILOGUE_MAX_ROWS, _EPILOGUE_ELEMENTS // block_k))
    return block_m, block_k, _EPILOGUE_BLOCK_D
