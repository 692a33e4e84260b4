"""C++ class-bucketed Gram accumulation against the torch path and a float64 reference.

Issue 4, deliverable 6: Gram accumulation at (n=60000, d=784, K=10) and (n=100000, d=512,
K=200), float32 rows in batches of 256 into float64 Grams, through ``GramAccumulator`` (its
staging, then each backend's ``gram_update`` on a flush):

- ``cpp``: counting sort by class, buckets of <= 1024 rows per class, SYRK on diagonal blocks
  and GEMM above them, column blocks over OpenMP workers (``masc_fast._C.gram_update``).
- ``torch``: the torch backend's measured-fastest form (one GEMM per class per flush).
- ``reference``: the authors' way, float64 NumPy, ``X_kᵀX_k`` per class per batch.

The Grams are checked against the reference's once (relative error) before the timed rounds.
Rate: GFLOP/s of ``n·d²`` multiply-adds (2·n·d² flops; SYRK does half of that work).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast import GramAccumulator
from masc_fast.backends import available, cpp_ops

SHAPES = {
    "n4096-d16-k4": (4096, 16, 4),  # small: where thread start-up may cost more than it saves
    "n60000-d784-k10": (60000, 784, 10),
    "n100000-d512-k200": (100000, 512, 200),
}
BATCH = 256
_DATA: dict = {}
_REFERENCE: dict = {}


def _data(shape):
    if shape not in _DATA:
        _DATA.clear()
        n, d, k = SHAPES[shape]
        generator = torch.Generator().manual_seed(5)
        _DATA[shape] = (
            torch.randn(n, d, generator=generator),
            torch.randint(0, k, (n,), generator=generator),
        )
    return _DATA[shape]


def reference_grams(x, y, k):
    x, y = x.numpy().astype(np.float64), y.numpy()
    gram = np.zeros((k, x.shape[1], x.shape[1]))
    for start in range(0, len(x), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        for label in np.unique(yb):
            rows = xb[yb == label]
            gram[label] += rows.T @ rows
    return gram


def engine_grams(x, y, k, backend):
    accumulator = GramAccumulator(k, x.shape[1], backend=backend)
    for start in range(0, len(x), BATCH):
        accumulator.update(x[start : start + BATCH], y[start : start + BATCH])
    accumulator.flush()
    return accumulator.gram.numpy()


@pytest.mark.parametrize("backend", ["reference", "torch", "cpp"])
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_cpu_gram(benchmark, shape, backend, peak_memory, record):
    if backend == "cpp" and not available()["cpp"][0]:
        pytest.skip(available()["cpp"][1])
    benchmark.group = f"cpu_gram-{shape}"
    n, d, k = SHAPES[shape]
    x, y = _data(shape)
    if backend == "reference":
        run = lambda: reference_grams(x, y, k)  # noqa: E731
    else:
        # Warm-up (thread pools, first allocations) doubling as a check before timing.
        warm = engine_grams(x[:4096], y[:4096], k, backend)
        expected = reference_grams(x[:4096], y[:4096], k)
        assert np.abs(warm - expected).max() < 1e-5 * np.abs(expected).max()
        run = lambda: engine_grams(x, y, k, backend)  # noqa: E731
    rounds = 1 if backend == "reference" else 3
    with peak_memory.measure():
        gram = benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    if shape not in _REFERENCE:
        _REFERENCE[shape] = gram if backend == "reference" else reference_grams(x, y, k)
    expected = _REFERENCE[shape]
    relative = float(np.abs(gram - expected).max() / np.abs(expected).max())
    record(
        backend=backend,
        dtype="float64" if backend == "reference" else "float32 rows, float64 Gram",
        shape=shape,
        batch=BATCH,
        max_relative_error=relative,
        threads=cpp_ops.default_threads(),
        rate=f"{2 * n * d * d / benchmark.stats.stats.median / 1e9:.1f} GFLOP/s",
    )
    assert relative < 1e-5, f"{backend}: Gram relative error {relative:.2e}"
