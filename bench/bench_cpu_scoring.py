"""C++ fused scoring against torch CPU compositions and the reference, on one CPU.

Issue 4, deliverable 6: scoring at (n=10000, d=512, R=2000), (n=10000, d=4096, R=5000) and
(n=20000, d=4096, K=200, r_k=50), float32 rows and bases (equal precision everywhere but the
float64 reference). Timed per group, same run:

- ``cpp``: ``masc_fast._C.subspace_scores`` through ``cpp_ops`` (GEMM per row block into a
  per-thread tile, squared segment sums, ratio and argmax in the same pass).
- ``torch``: the torch backend as shipped (32 MiB blocks, float64 ``index_add_`` epilogue).
- ``torch-onehot``: the fastest plain torch composition we know: one ``x @ U`` GEMM, square in
  place, and a second GEMM with the (R, K) 0/1 class-membership matrix for the segment sums.
- ``torch-onehot-blocked``: the same in blocks of 512 rows (bounded memory).
- ``reference``: the authors' way, float64 NumPy with a loop over classes.

Each backend's scores on the first 500 rows are checked against a float64 computation before
timing. Rate: GFLOP/s of the dominant GEMM, 2·n·d·R. Peak memory: RSS above the start.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.backends import available, cpp_ops, torch_ops
from masc_fast.reference import subspace_scores_ref

# name -> (n, d, K, r_k)
SHAPES = {
    "n2000-d32-R40": (2000, 32, 4, 10),  # small: where thread start-up may cost more than it saves
    "n10000-d512-R2000": (10000, 512, 10, 200),
    "n10000-d4096-R5000": (10000, 4096, 10, 500),
    "n20000-d4096-k200-r50": (20000, 4096, 200, 50),
}
_BLOCK = 512
_CHECK_ROWS = 500
_DATA: dict = {}


def _data(shape):
    if shape not in _DATA:
        _DATA.clear()
        n, d, k, r = SHAPES[shape]
        generator = torch.Generator().manual_seed(11)
        x = torch.randn(n, d, generator=generator)
        bases = [torch.linalg.qr(torch.randn(d, r, generator=generator))[0] for _ in range(k)]
        basis = torch.cat(bases, 1).contiguous()
        offsets = torch.arange(0, k * r + 1, r)
        membership = torch.zeros(k * r, k)
        membership[torch.arange(k * r), torch.arange(k * r) // r] = 1.0
        _DATA[shape] = (x, basis, offsets, membership, [b.double().numpy() for b in bases])
    return _DATA[shape]


def _onehot_scores(x, basis, membership):
    energy = (x @ basis).square_() @ membership
    sq_norms = x.double().square().sum(1, keepdim=True)
    scores = (energy.double() / sq_norms).clamp_(max=1.0).float()
    return scores, scores.argmax(1)


def _onehot_blocked(x, basis, membership):
    parts = [_onehot_scores(x[i : i + _BLOCK], basis, membership) for i in range(0, len(x), _BLOCK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _runner(backend, x, basis, offsets, membership, bases):
    if backend == "cpp":
        return lambda: cpp_ops.subspace_scores(x, basis, offsets)
    if backend == "torch":
        return lambda: torch_ops.subspace_scores(x, basis, offsets)
    if backend == "torch-onehot":
        return lambda: _onehot_scores(x, basis, membership)
    if backend == "torch-onehot-blocked":
        return lambda: _onehot_blocked(x, basis, membership)

    def reference():
        scores = subspace_scores_ref(x, bases)
        return scores, scores.argmax(1)

    return reference


@pytest.mark.parametrize(
    "backend", ["cpp", "torch", "torch-onehot", "torch-onehot-blocked", "reference"]
)
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_cpu_scoring(benchmark, shape, backend, peak_memory, record):
    if backend == "cpp" and not available()["cpp"][0]:
        pytest.skip(available()["cpp"][1])
    benchmark.group = f"cpu_scoring-{shape}"
    n, d, k, r = SHAPES[shape]
    x, basis, offsets, membership, bases = _data(shape)
    # Correctness once, before timing, on the first rows (float64 reference of the same data).
    check = _runner(backend, x[:_CHECK_ROWS], basis, offsets, membership, bases)
    scores, _ = check()
    expected = subspace_scores_ref(x[:_CHECK_ROWS], bases)
    error = float(np.abs(np.asarray(scores, dtype=np.float64) - expected).max())
    assert error < 1e-4, f"{backend}: max score error {error:.2e} against float64"
    run = _runner(backend, x, basis, offsets, membership, bases)
    rounds = 1 if backend == "reference" else 3
    with peak_memory.measure():
        benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    flops = 2 * n * d * k * r
    record(
        backend=backend,
        dtype="float64" if backend == "reference" else "float32",
        shape=shape,
        components=k * r,
        max_error_first_rows=error,
        threads=cpp_ops.default_threads(),
        rate=f"{flops / benchmark.stats.stats.median / 1e9:.1f} GFLOP/s",
    )
