"""The float32 eigensolve with certified counts (``masc_fast.linalg.mixed_eigh``).

Counts must equal the float64 solver's at every threshold asked for, on random Grams, on real
activations (an MLP trained on scikit-learn's digits with 40 % shuffled labels, and the real
Fashion-MNIST pixels where installed) and on adversarial spectra whose cumulative ratio sits
exactly at, or a hair off, the threshold. The stated error model (every cumulative sum of the
float32 eigenvalues within ε of float64's) is itself measured here: the largest error seen must
stay under ε/2, so the model has a factor 2 of headroom on these Grams.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _real_data import MISSING, real_fashion_root

import masc_fast
from masc_fast.linalg.mixed_eigh import (
    MIXED_MIN_DIM,
    certified_class_eigen,
    count_is_certain,
    eigenvalue_error,
)
from masc_fast.linalg.spectra import components_for_variance, exact_class_eigen, exact_eigh
from masc_fast.probing.threshold_scoring import DEFAULT_THRESHOLDS

THRESHOLDS = tuple(t for t in DEFAULT_THRESHOLDS if t != 0.99)


def _counts(eigen, variances) -> list[int]:
    return [
        components_for_variance(eigen.values, eigen.total, v, eigen.rank_cap) for v in variances
    ]


def _random_grams(dim: int, count: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grams = []
    for index in range(count):
        decay = torch.logspace(0, -1 - index, dim, dtype=torch.float64)
        x = torch.randn(2 * dim, dim, dtype=torch.float64, generator=generator) * decay
        x += 0.3 * torch.randn(1, dim, dtype=torch.float64, generator=generator)  # a mean
        grams.append(x.T @ x)
    return grams


@pytest.fixture(scope="module")
def mlp_grams():
    """Class Grams of every layer of a digits MLP (256 and 512 wide) trained at p = 0.4."""
    from sklearn.datasets import load_digits

    from masc_fast.testing.noisy_mlp import noisy_mlp_activations

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    data = (x[:1400], y[:1400], x[1400:], y[1400:])
    acts = noisy_mlp_activations(data, 0.4, (256, 512), epochs=8)
    grams = []
    for layer, rows in acts.train.items():
        if rows.shape[1] < MIXED_MIN_DIM:
            continue
        accumulator = masc_fast.GramAccumulator(10, rows.shape[1])
        accumulator.update(rows, acts.corrupted)
        accumulator.flush()
        counts = accumulator.counts.tolist()
        grams += [(layer, gram, count) for gram, count in zip(accumulator.gram, counts)]
    return acts, grams


def _fashion_grams():
    from masc_fast.data import load_dataset

    root = real_fashion_root()
    if root is None:
        pytest.skip(MISSING)
    train, _ = load_dataset("fashion-mnist", root=root)
    x = train.data.reshape(len(train.data), -1).float() / 255.0
    accumulator = masc_fast.GramAccumulator(10, 784)
    accumulator.update(x, train.labels)
    accumulator.flush()
    return list(zip(accumulator.gram, accumulator.counts.tolist()))


@pytest.mark.parametrize("dim", [128, 300])
def test_counts_equal_float64_on_random_grams(dim):
    certified = 0
    for gram in _random_grams(dim, 4, seed=dim):
        mixed = certified_class_eigen(gram, variance=0.99, rank_bound=dim, thresholds=THRESHOLDS)
        exact = exact_class_eigen(gram, variance=0.99, rank_bound=dim)
        assert _counts(mixed, (0.99, *THRESHOLDS)) == _counts(exact, (0.99, *THRESHOLDS))
        certified += mixed.method == "exact_fp32"
    assert certified >= 1  # the float32 path is taken, not only its fallback


def test_counts_and_predictions_equal_float64_on_real_activations(mlp_grams):
    acts, grams = mlp_grams
    for layer, gram, count in grams:
        bound = min(count, gram.shape[0])
        mixed = certified_class_eigen(gram, variance=0.99, rank_bound=bound)
        exact = exact_class_eigen(gram, variance=0.99, rank_bound=bound)
        assert _counts(mixed, [0.99]) == _counts(exact, [0.99]), layer
        assert mixed.rank_cap <= exact.rank_cap
    for layer, rows in acts.train.items():
        if rows.shape[1] < MIXED_MIN_DIM:
            continue
        accumulator = masc_fast.GramAccumulator(10, rows.shape[1])
        accumulator.update(rows, acts.corrupted)
        mixed = accumulator.fit(0.99, method="fp32")
        exact = masc_fast.ClassSubspaces(
            [
                exact_class_eigen(g, variance=0.99, rank_bound=min(c, rows.shape[1]))
                for g, c in zip(accumulator.gram, accumulator.counts.tolist())
            ],
            dim=rows.shape[1],
            variance=0.99,
            counts=accumulator.counts,
        )
        assert torch.equal(mixed.num_components, exact.num_components), layer
        test_rows = acts.test[layer]
        agree = float((mixed.predict(test_rows) == exact.predict(test_rows)).float().mean())
        assert agree == 1.0, f"{layer}: {agree:.4f} of predictions equal float64's"


def test_counts_equal_float64_on_real_fashion_mnist_pixels():
    certified = 0
    for gram, count in _fashion_grams():
        mixed = certified_class_eigen(gram, variance=0.99, rank_bound=count)
        exact = exact_class_eigen(gram, variance=0.99, rank_bound=count)
        assert _counts(mixed, [0.99]) == _counts(exact, [0.99])
        certified += mixed.method == "exact_fp32"
    assert certified >= 5  # 8 of 10 on the dev machine: the shortcut pays on real data


def test_a_ratio_at_the_threshold_is_solved_in_float64():
    dim = 160
    q = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64)).Q
    values = torch.full((dim,), 1e-3, dtype=torch.float64)
    values[:10] = torch.linspace(10, 1, 10, dtype=torch.float64)
    # the ratio after 10 components is exactly t (up to float64 rounding) ...
    variance = float(values[:10].sum() / values.sum())
    gram = (q * values) @ q.T
    gram = (gram + gram.T) / 2
    mixed = certified_class_eigen(gram, variance=variance, rank_bound=dim)
    exact = exact_class_eigen(gram, variance=variance, rank_bound=dim)
    assert mixed.method == "exact" and _counts(mixed, [variance]) == _counts(exact, [variance])
    # ... and a hair (1e-9) on either side, far inside the float32 error: float64 decides
    for shifted in (variance - 1e-9, variance + 1e-9):
        mixed = certified_class_eigen(gram, variance=shifted, rank_bound=dim)
        assert mixed.method == "exact"
        assert _counts(mixed, [shifted]) == _counts(
            exact_class_eigen(gram, variance=shifted, rank_bound=dim), [shifted]
        )
    # far from every ratio the float32 solve is kept
    kept = certified_class_eigen(gram, variance=0.5, rank_bound=dim)
    assert kept.method == "exact_fp32"


def test_a_count_at_the_rank_goes_to_float64():
    dim = 200
    rows = torch.randn(50, dim, dtype=torch.float64)
    gram = rows.T @ rows  # rank 50: everything past it is round-off
    mixed = certified_class_eigen(gram, variance=60, rank_bound=dim)
    assert mixed.method == "exact"
    assert _counts(mixed, [60]) == [50]


def test_narrow_grams_stay_float64():
    gram = _random_grams(MIXED_MIN_DIM - 1, 1, seed=1)[0]
    assert certified_class_eigen(gram, variance=0.99, rank_bound=10**6).method == "exact"


def test_the_error_model_holds_with_room_on_real_and_random_grams(mlp_grams):
    """Every cumulative sum of the float32 eigenvalues within ε/2 of float64's."""
    grams = [gram for _, gram, _ in mlp_grams[1]] + _random_grams(256, 3, seed=7)
    worst = 0.0
    for gram in grams:
        scale = float(gram.diagonal().max())
        values32, vectors32 = torch.linalg.eigh((gram / scale).float())
        values = values32.double().flip(0).clamp_min(0) * scale
        vectors = vectors32.double().flip(1)
        error = eigenvalue_error(gram, values, vectors)
        exact = exact_eigh(gram)[0]
        gap = (torch.cumsum(values, 0) - torch.cumsum(exact, 0)).abs().max()
        worst = max(worst, float(gap) / error)
    assert worst < 0.5, f"a cumulative sum moved {worst:.2f} ε"


def test_count_is_certain_reads_both_sides_of_the_cut():
    values = torch.tensor([5.0, 3.0, 1.0, 1.0], dtype=torch.float64)
    assert count_is_certain(values, 10.0, 0.01, 0.75, 4)  # 0.5 <= t < 0.8: two components
    assert not count_is_certain(values, 10.0, 0.6, 0.75, 4)  # ±0.06 reaches across t
    assert not count_is_certain(values, 10.0, 0.01, 0.8, 4)  # ratio exactly at t
    assert np.isclose(float(values.sum()), 10.0)


def test_fit_certifies_every_threshold_of_a_sweep(mlp_grams):
    acts, _ = mlp_grams
    rows = acts.train["fc2"] if "fc2" in acts.train else next(iter(acts.train.values()))
    accumulator = masc_fast.GramAccumulator(10, rows.shape[1])
    accumulator.update(rows, acts.corrupted)
    swept = (0.5, 0.9, 0.95)
    mixed = accumulator.fit(0.99, method="fp32", thresholds=swept)
    exact = accumulator.fit(0.99, method="exact")
    for threshold in (0.99, *swept):
        assert torch.equal(
            mixed.with_variance(threshold).num_components,
            exact.with_variance(threshold).num_components,
        ), threshold
