"""End to end: fit class subspaces on N rows and predict a 10k-row test set.

Engine (GramAccumulator → fit → predict) against the reference path (scikit-learn PCA per
class on X_k ∪ −X_k, NumPy angles), on structured synthetic data (classes near low-rank
subspaces plus noise), at the shapes of issue 2. One group per shape; report.py turns the
JSON into bench/RESULTS.md with the ratio to the reference measured in the same run.

Rate: GFLOP/s of the engine's dominant work, 2·N·d² (Gram) + 2·n_test·d·R (scoring);
the eigensolver's share is small when r_k << d and is not counted.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from masc_fast import GramAccumulator
from masc_fast.backends import available
from masc_fast.reference import fit_subspaces_ref, predict_ref
from masc_fast.testing.synthetic import structured_classes

SHAPES = {
    "n60000-d784-k10": (60000, 784, 10),
    "n60000-d512-k10": (60000, 512, 10),
    "n50000-d4096-k10": (50000, 4096, 10),
}
N_TEST = 10000
if os.environ.get("MASC_FAST_BENCH_QUICK"):  # a seconds-long smoke run of the same code
    SHAPES, N_TEST = {"n3000-d96-k10": (3000, 96, 10)}, 500
BATCH = 1024
_DATA: dict = {}
_REFERENCE: dict = {}


def _data(shape: str):
    if shape not in _DATA:
        _DATA.clear()  # keep one shape's data in memory at a time
        n, dim, classes = SHAPES[shape]
        x, y = structured_classes(n + N_TEST, dim, classes, seed=7)
        _DATA[shape] = (x[:n], y[:n], x[n:], y[n:])
    return _DATA[shape]


def engine_fit_predict(x_train, y_train, x_test, num_classes, backend):
    accumulator = GramAccumulator(num_classes, x_train.shape[1], backend=backend)
    for start in range(0, x_train.shape[0], BATCH):
        accumulator.update(x_train[start : start + BATCH], y_train[start : start + BATCH])
    subspaces = accumulator.fit(0.99)
    return subspaces, subspaces.predict(x_test, backend=backend)


def reference_fit_predict(x_train, y_train, x_test, num_classes):
    bases = fit_subspaces_ref(x_train, y_train, num_classes, 0.99)
    return bases, predict_ref(x_test, bases)


def _reference_predictions(shape: str) -> np.ndarray:
    if shape not in _REFERENCE:
        x_train, y_train, x_test, _ = _data(shape)
        _REFERENCE[shape] = reference_fit_predict(x_train, y_train, x_test, SHAPES[shape][2])[1]
    return _REFERENCE[shape]


@pytest.mark.parametrize("backend", ["reference", "torch", "cpp"])
@pytest.mark.parametrize("shape", list(SHAPES))
def bench_end_to_end(benchmark, shape, backend, peak_memory, record):
    usable, reason = available()[backend]
    if not usable:
        pytest.skip(reason)
    benchmark.group = f"end_to_end-{shape}"
    n, dim, classes = SHAPES[shape]
    x_train, y_train, x_test, y_test = _data(shape)
    if backend == "reference":

        def run():
            return reference_fit_predict(x_train, y_train, x_test, classes)
    else:
        engine_fit_predict(x_train[:2048], y_train[:2048], x_test[:64], classes, backend)  # warm-up

        def run():
            return engine_fit_predict(x_train, y_train, x_test, classes, backend)

    rounds = 1 if backend == "reference" or dim >= 4096 else 3
    with peak_memory.measure():
        fitted, pred = benchmark.pedantic(run, rounds=rounds, iterations=1)
    pred = np.asarray(pred.numpy() if isinstance(pred, torch.Tensor) else pred)
    if backend == "reference":
        _REFERENCE[shape] = pred
        total_components = sum(b.shape[1] for b in fitted if b is not None)
    else:
        total_components = int(fitted.num_components.sum())
    agreement = float((pred == _reference_predictions(shape)).mean())
    median = benchmark.stats.stats.median
    flops = 2 * n * dim * dim + 2 * N_TEST * dim * total_components
    record(
        backend=backend,
        dtype="float32 in, float64 Gram",
        shape=shape,
        components=total_components,
        agreement_with_reference=agreement,
        test_accuracy=float((pred == y_test.numpy()).mean()),
        rate=f"{flops / median / 1e9:.1f} GFLOP/s",
    )
    assert agreement >= 0.999, f"{backend} agrees with the reference on only {agreement:.4%}"
