"""Gram accumulation forms: one flush of staged rows folded into K class Grams.

The three torch forms of ``gram_update`` (``masc_fast.backends.torch_ops``) on the same rows:
``per_class`` (sort by class, one GEMM per class; the default), ``bucketed`` (rows padded per
class into (K, m_max, d), one ``bmm``) and ``onehot`` (one-hot weighted rows, one GEMM per
chunk of classes, no sort). float32 rows into a float64 Gram, as ``GramAccumulator`` flushes
them; classes balanced up to rounding (labels ``i mod K``, shuffled). One group per shape and
device; ``masc_fast.backends.gram_forms`` cites the winners.

Rate: GFLOP/s of useful work, 2·n·d² (each row's outer product once) over the median time; the
one-hot form really does K× that work (it multiplies the other classes' rows by zero), and the
bucketed form m_max·K/n × that.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from masc_fast.backends import torch_ops

FORMS = {
    "per_class": torch_ops.gram_update_per_class,
    "bucketed": torch_ops.gram_update_bucketed,
    "onehot": torch_ops.gram_update_onehot,
}
# name -> (K classes, d features, rows in one flush: ~1024 per class at K=10, 128 at K=200)
SHAPES = {
    "k10-d784-n10240": (10, 784, 10240),
    "k200-d512-n25600": (200, 512, 25600),
}
ROUNDS = 5
if os.environ.get("MASC_FAST_BENCH_QUICK"):  # a seconds-long smoke run of the same code
    SHAPES = {"k10-d96-n2048": (10, 96, 2048), "k50-d64-n3200": (50, 64, 3200)}
    ROUNDS = 20  # millisecond calls: more rounds for a stable median
_DATA: dict = {}


def _data(shape: str, device: torch.device):
    key = (shape, device.type)
    if key not in _DATA:
        _DATA.clear()
        classes, dim, rows = SHAPES[shape]
        generator = torch.Generator().manual_seed(11)
        x = torch.randn(rows, dim, generator=generator)
        y = (torch.arange(rows) % classes)[torch.randperm(rows, generator=generator)]
        _DATA[key] = (x.to(device), y.to(device), _reference(x, y, classes))
    return _DATA[key]


def _reference(x: torch.Tensor, y: torch.Tensor, classes: int) -> np.ndarray:
    """Σ x xᵀ per class in float64 NumPy, by GEMM (``gram_update_ref``'s row loop takes ~25 s
    at these shapes; same sum)."""
    x, y = x.double().numpy(), y.numpy()
    return np.stack([x[y == k].T @ x[y == k] for k in range(classes)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@pytest.mark.parametrize("device_name", ["cpu", "cuda"])
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_gram_forms(benchmark, shape, form, device_name, peak_memory, record):
    if device_name == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = torch.device(device_name)
    benchmark.group = f"gram_forms-{shape}-{device.type}"
    classes, dim, rows = SHAPES[shape]
    x, y, reference = _data(shape, device)
    update = FORMS[form]
    gram = torch.zeros((classes, dim, dim), dtype=torch.float64, device=device)
    update(gram, x[:1024], y[:1024])  # warm-up: thread pools, allocator, CUDA context
    _sync(device)

    def run(gram):
        update(gram, x, y)
        _sync(device)
        return gram

    def fresh():
        gram.zero_()  # outside the timed call
        _sync(device)
        return (gram,), {}

    # The one-hot form does K× the work: a single round at K=200 (35 s on the dev CPU).
    rounds = 1 if form == "onehot" and classes >= 100 and device.type == "cpu" else ROUNDS
    with peak_memory.measure():
        result = benchmark.pedantic(run, setup=fresh, rounds=rounds, iterations=1)
    # Checked on the timed call's output: re-running the one-hot form only to check it would
    # double its cost. Float32 GEMMs over <= 1024 rows per class: ~1e-7 of the largest entry.
    error = np.abs(result.cpu().numpy() - reference).max() / np.abs(reference).max()
    median = benchmark.stats.stats.median
    record(
        backend="torch",
        form=form,
        device_type=device.type,
        dtype="float32 rows, float64 Gram",
        shape=shape,
        max_relative_error=float(error),
        rate=f"{2 * rows * dim * dim / median / 1e9:.1f} GFLOP/s",
    )
    assert error <= 1e-5, f"{form} Gram differs from the float64 reference by {error:.2e}"
