"""GPU scoring: the fused Triton kernel against the unfused torch path and the authors' way.

Issue 3, deliverable 6. Needs a CUDA device; without one every benchmark skips (no numbers
are estimated). ``MASC_FAST_BENCH_INTERPRET=1`` runs the same code on tiny shapes under
Triton's interpreter on the CPU, to check that the benchmark itself works, not to time it.

Per shape (n rows, d features, K classes of r_k components, R = K·r_k):

* ``gemm-<precision>``: the ceiling, ``torch.matmul`` of (n, d) by (d, R) at that precision
  (cuBLAS; "fp32" with TF32 off), whose TFLOP/s is the measured GEMM throughput;
* ``triton-<precision>``: ``masc_fast.kernels.subspace_scores`` (fused: the n×R product never
  reaches global memory), reported as TFLOP/s of its 2·n·d·R multiply-adds and as the fraction
  of the ceiling at the same precision;
* ``torch``: ``torch_ops.subspace_scores`` (row-blocked GEMM, then a separate reduction);
* ``authors``: the authors' scoring (SPEC §5.3): float64, chunks of 100 rows, per class
  ``p = (x Vᵀ) V`` and the diagonal of the full 100×100 ``x pᵀ``, arccos, argmin.

Agreement: fraction of predictions equal to the float64 torch path's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _authors import authors_predict
from _gpu import DEVICE, INTERPRET, SKIP_REASON, scoring_case

from masc_fast.backends.torch_ops import precision_product

if SKIP_REASON:
    pytest.skip(SKIP_REASON, allow_module_level=True)

# name: (n, d, K, r_k)
SHAPES = {
    "n10000-d4096-R5000": (10000, 4096, 100, 50),
    "n100000-d4096-k200-R44000": (100000, 4096, 200, 220),
    "n50000-d512-k10": (50000, 512, 10, 50),
}
if INTERPRET:
    SHAPES = {"n64-d40-k3-interpret": (64, 40, 3, 6)}
PRECISIONS = ("fp32", "tf32", "tf32x3", "bf16")
_CASES: dict = {}


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _case(shape: str):
    """Rows near the class subspaces (plus noise), orthonormal bases, offsets; one at a time."""
    if shape not in _CASES:
        _CASES.clear()
        x, basis, offsets = scoring_case(*SHAPES[shape], DEVICE)
        expected = _torch_scores(x.double(), basis.double(), offsets)[1].cpu()
        _CASES[shape] = (x, basis, offsets, expected)
    return _CASES[shape]


def _torch_scores(x, basis, offsets, precision="fp32"):
    from masc_fast.backends import torch_ops

    return torch_ops.subspace_scores(x, basis, offsets, precision=precision)


def _triton_scores(x, basis, offsets, precision):
    from masc_fast.backends import triton_ops

    return triton_ops.subspace_scores(x, basis, offsets.to(x.device), precision=precision)


def _authors_predict(x, basis, offsets):
    """SPEC §5.3 (bench/_authors.py) on packed bases; the argmin-angle class per row."""
    bounds = offsets.tolist()
    return authors_predict(x, [basis[:, lo:hi].T for lo, hi in zip(bounds[:-1], bounds[1:])])


def _gemm(x, basis, precision):
    """The cuBLAS GEMM at ``precision`` (bf16 operands cast beforehand: the GEMM alone)."""
    if precision == "bf16":
        a, b = x.bfloat16(), basis.bfloat16()
        return lambda: a @ b
    product = precision_product(precision)
    return lambda: product(x, basis)


_CEILING: dict = {}


def _timed(benchmark, run, rounds):
    def synced():
        result = run()
        _sync()
        return result

    synced()  # warm-up: compilation, cuBLAS handles
    return benchmark.pedantic(synced, rounds=rounds, iterations=1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_gemm_ceiling(benchmark, shape, precision, peak_memory, record):
    if precision == "tf32x3":
        pytest.skip("cuBLAS has no 3-pass TF32 GEMM; tf32x3 is compared with the fp32 ceiling")
    benchmark.group = f"gpu_scoring-{shape}"
    x, basis, _, _ = _case(shape)
    n, d, r = x.shape[0], x.shape[1], basis.shape[1]
    with peak_memory.measure():
        _timed(benchmark, _gemm(x, basis, precision), rounds=5)
    tflops = 2 * n * d * r / benchmark.stats.stats.median / 1e12
    _CEILING[(shape, precision)] = tflops
    record(backend=f"gemm-{precision}", shape=shape, rate=f"{tflops:.1f} TFLOP/s")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_fused_triton(benchmark, shape, precision, peak_memory, record):
    benchmark.group = f"gpu_scoring-{shape}"
    x, basis, offsets, expected = _case(shape)
    n, d, r = x.shape[0], x.shape[1], basis.shape[1]
    with peak_memory.measure():
        _, pred = _timed(benchmark, lambda: _triton_scores(x, basis, offsets, precision), rounds=5)
    tflops = 2 * n * d * r / benchmark.stats.stats.median / 1e12
    ceiling = _CEILING.get((shape, "fp32" if precision == "tf32x3" else precision))
    record(
        backend=f"triton-{precision}",
        shape=shape,
        rate=f"{tflops:.1f} TFLOP/s",
        fraction_of_gemm_ceiling=None if ceiling is None else round(tflops / ceiling, 3),
        agreement_with_reference=float((pred.cpu() == expected).double().mean()),
    )


@pytest.mark.parametrize("shape", list(SHAPES))
def bench_unfused_torch(benchmark, shape, peak_memory, record):
    benchmark.group = f"gpu_scoring-{shape}"
    x, basis, offsets, expected = _case(shape)
    n, d, r = x.shape[0], x.shape[1], basis.shape[1]
    with peak_memory.measure():
        _, pred = _timed(benchmark, lambda: _torch_scores(x, basis, offsets), rounds=5)
    record(
        backend="torch",
        shape=shape,
        rate=f"{2 * n * d * r / benchmark.stats.stats.median / 1e12:.1f} TFLOP/s",
        agreement_with_reference=float((pred.cpu() == expected).double().mean()),
    )


@pytest.mark.parametrize("shape", list(SHAPES))
def bench_authors_way(benchmark, shape, peak_memory, record):
    benchmark.group = f"gpu_scoring-{shape}"
    x, basis, offsets, expected = _case(shape)
    with peak_memory.measure():
        pred = _timed(benchmark, lambda: _authors_predict(x, basis, offsets), rounds=1)
    record(
        backend="reference",  # report.py's "vs reference" column is the ratio to this row
        method="authors (SPEC §5.3)",
        shape=shape,
        agreement_with_reference=float((pred.cpu() == expected).double().mean()),
    )
    assert np.isfinite(benchmark.stats.stats.median)
