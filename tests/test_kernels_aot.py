"""The Triton kernels compiled ahead of time for Hopper (sm_90), with no GPU.

Triton's interpreter runs the kernels' arithmetic on the CPU but never compiles them, so a tile
shape whose shared memory does not fit an H100, or code the compiler rejects, would first fail
on a lent GPU. Here every tile shape the launcher can pick (the provisional table, the tuned
table, the sweep candidates of ``bench/gpu_check.py``) and the scores epilogue up to its
4096-class limit are compiled for sm_90 to PTX and cubin, in a process without
``TRITON_INTERPRET``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# An H100's largest shared memory per block (227 KiB, opt-in).
H100_SHARED_BYTES = 232448
MAX_COMPILE_SECONDS = 60

_SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys, time
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sys.path.insert(0, "bench")
    kernel = importlib.import_module("masc_fast.kernels.subspace_scores")
    from masc_fast.kernels import _utils
    from gpu_parts import sweep_candidates

    TARGET = GPUTarget("cuda", 90, 32)

    def energies(blocks, mode):
        float_type = "fp64" if mode == "float64" else "fp32"
        names = kernel._class_energies_kernel.arg_names
        signature = {name: "*" + float_type for name in names[:3]}
        signature.update({name: "*i32" for name in names[3:6]})
        signature.update({name: "i32" for name in names[6:14]})
        constants = {
            "BLOCK_M": blocks.block_m, "BLOCK_R": blocks.block_r, "BLOCK_D": blocks.block_d,
            "GROUP_M": blocks.group_m,
            "DOT_PRECISION": "ieee" if mode in ("fp32", "float64") else mode,
            "CAST_BF16": mode == "bf16", "BF16_DOT": True,
            "ACC_DTYPE": tl.float64 if mode == "float64" else tl.float32,
        }
        signature.update({name: "constexpr" for name in constants})
        options = {"num_warps": blocks.num_warps, "num_stages": blocks.num_stages,
                   "enable_fp_fusion": False}
        return triton.compile(
            ASTSource(kernel._class_energies_kernel, signature, constants), target=TARGET,
            options=options,
        )

    def epilogue(classes):
        block_m, block_k, block_d = _utils.epilogue_blocks(classes)
        names = kernel._scores_epilogue_kernel.arg_names
        signature = dict(zip(names[:6], ["*fp32", "*i64", "*fp32", "*fp32", "*i8", "*i8"]))
        signature.update({name: "i32" for name in names[6:13]})
        constants = {"BLOCK_M": block_m, "BLOCK_K": block_k, "BLOCK_D": block_d}
        signature.update({name: "constexpr" for name in constants})
        return triton.compile(
            ASTSource(kernel._scores_epilogue_kernel, signature, constants), target=TARGET,
            options={"num_warps": 4, "enable_fp_fusion": False},
        )

    cases = [(f"provisional {mode}", mode, blocks) for mode, blocks in _utils._CUDA_BLOCKS.items()]
    for gpu, table in _utils.TUNED_BLOCKS.items():
        cases += [(f"tuned {gpu} {mode}", mode, _utils.FusedBlocks(*shape))
                  for mode, shape in table.items()]
    for mode in ("fp32", "tf32", "bf16", "tf32x3"):
        cases += [(f"sweep {mode} {blocks}", mode, blocks) for blocks in sweep_candidates(mode)]
    results = []
    for name, mode, blocks in cases:
        started = time.perf_counter()
        compiled = energies(blocks, mode)
        results.append({"case": name, "shared": compiled.metadata.shared,
                        "has_cubin": bool(compiled.asm.get("cubin")),
                        "seconds": time.perf_counter() - started})
    for classes in (1, 2, 3, 10, 200, 4096):
        started = time.perf_counter()
        compiled = epilogue(classes)
        results.append({"case": f"epilogue K={classes}", "shared": compiled.metadata.shared,
                        "has_cubin": bool(compiled.asm.get("cubin")),
                        "seconds": time.perf_counter() - started})
    print(json.dumps(results))
    """
)


def test_every_tile_shape_compiles_for_sm90_within_an_h100s_shared_memory(tmp_path):
    pytest.importorskip("triton")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")  # compile for real, and time it
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    if done.returncode != 0 and "ptxas" in done.stderr and "not found" in done.stderr:
        pytest.skip(f"triton cannot assemble for sm_90 here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) >= 5 + 4 * 6 + 6
    too_big = [row for row in results if row["shared"] > H100_SHARED_BYTES]
    assert not too_big, too_big
    assert all(row["has_cubin"] for row in results)
    # Each compiles in seconds here; a minute would eat a lent GPU's time (the epilogue at K = 1
    # once took 8 minutes, before its rows were capped).
    slow = [row for row in results if row["seconds"] > MAX_COMPILE_SECONDS]
    assert not slow, slow
