"""corrupt_labels against the authors' recipe, written out with NumPy's global generator."""

# The legacy global-generator calls are the point: they are what the authors' code ran.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.corruption import corrupt_labels

PROBABILITIES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]


def _authors_corruption(labels: np.ndarray, p: float, num_classes: int) -> np.ndarray:
    """The authors' dataset-constructor code (SPEC §2.1), global RNG and all."""
    labels = np.array(labels)
    np.random.seed(42)
    mask = np.random.rand(len(labels)) <= p
    rnd_labels = np.random.choice(num_classes, mask.sum())
    labels[mask] = rnd_labels
    return labels


def _authors_corruption_tiny_imagenet(labels: np.ndarray, p: float, num_classes: int):
    """TinyImagenetCorrupted: strict ``<`` and no draws at all when p == 0."""
    labels = np.array(labels)
    np.random.seed(42)
    if p > 0:
        mask = np.random.rand(len(labels)) < p
        rnd_labels = np.random.choice(num_classes, mask.sum())
        labels[mask] = rnd_labels
    return labels


def _true_labels(n: int, num_classes: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, num_classes, size=n)


@pytest.mark.parametrize("num_classes", [2, 10, 100, 200])
@pytest.mark.parametrize("p", PROBABILITIES)
def test_corrupt_labels_matches_authors_recipe(p, num_classes):
    labels = _true_labels(5_000, num_classes)
    expected = _authors_corruption(labels, p, num_classes)
    got = corrupt_labels(labels, p, num_classes)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("num_classes", [10, 200])
@pytest.mark.parametrize("p", PROBABILITIES)
def test_corrupt_labels_strict_matches_tiny_imagenet_recipe(p, num_classes):
    labels = _true_labels(3_000, num_classes)
    expected = _authors_corruption_tiny_imagenet(labels, p, num_classes)
    np.testing.assert_array_equal(corrupt_labels(labels, p, num_classes, strict=True), expected)


def test_corrupt_labels_leaves_global_rng_alone():
    np.random.seed(123)
    before = np.random.rand(3)
    np.random.seed(123)
    corrupt_labels(_true_labels(100, 10), 0.5, 10)
    np.testing.assert_array_equal(np.random.rand(3), before)


def test_corrupt_labels_does_not_mutate_input():
    labels = _true_labels(1_000, 10)
    copy = labels.copy()
    out = corrupt_labels(labels, 1.0, 10)
    np.testing.assert_array_equal(labels, copy)
    assert not np.shares_memory(out, labels)


def test_corrupt_labels_accepts_tensors_and_lists():
    labels = _true_labels(500, 10)
    expected = corrupt_labels(labels, 0.4, 10)
    np.testing.assert_array_equal(corrupt_labels(torch.from_numpy(labels), 0.4, 10), expected)
    np.testing.assert_array_equal(corrupt_labels(labels.tolist(), 0.4, 10), expected)
    np.testing.assert_array_equal(corrupt_labels(labels.astype(np.uint8), 0.4, 10), expected)


def test_corrupt_labels_masks_are_nested_across_p():
    n = 20_000
    uniforms = np.random.RandomState(42).rand(n)
    previous = np.zeros(n, dtype=bool)
    for p in PROBABILITIES:
        mask = uniforms <= p
        assert np.all(mask[previous]), f"mask for p={p} does not contain the smaller ones"
        previous = mask
    # and every changed label lies inside its p's mask
    labels = _true_labels(n, 10)
    for p in PROBABILITIES:
        changed = corrupt_labels(labels, p, 10) != labels
        assert not np.any(changed & ~(uniforms <= p))


def test_corrupt_labels_p0_is_identity():
    labels = _true_labels(10_000, 10)
    np.testing.assert_array_equal(corrupt_labels(labels, 0.0, 10), labels)
    np.testing.assert_array_equal(corrupt_labels(labels, 0.0, 10, strict=True), labels)


def test_corrupt_labels_p1_redraws_every_label():
    n, num_classes = 10_000, 10
    labels = _true_labels(n, num_classes)
    expected = np.random.RandomState(42)
    expected.rand(n)
    np.testing.assert_array_equal(
        corrupt_labels(labels, 1.0, num_classes), expected.choice(num_classes, n)
    )


@pytest.mark.parametrize("num_classes", [2, 10, 100])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8, 1.0])
def test_corrupt_labels_changed_fraction_is_p_minus_p_over_k(p, num_classes):
    # The changed count is Binomial(n, q), q = p - p/K; five standard deviations on n = 200,000
    # is at most 0.0056, so a 0.006 tolerance fails by chance with probability < 1e-6.
    n = 200_000
    labels = _true_labels(n, num_classes)
    changed = np.mean(corrupt_labels(labels, p, num_classes) != labels)
    assert changed == pytest.approx(p - p / num_classes, abs=0.006)


def test_corrupt_labels_seed_changes_the_draw():
    labels = _true_labels(1_000, 10)
    assert not np.array_equal(
        corrupt_labels(labels, 0.5, 10, seed=42), corrupt_labels(labels, 0.5, 10, seed=43)
    )


def test_corrupt_labels_empty_input():
    out = corrupt_labels(np.array([], dtype=np.int64), 0.5, 10)
    assert out.shape == (0,) and out.dtype == np.int64


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_corrupt_labels_rejects_bad_p(p):
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\], got"):
        corrupt_labels(np.arange(5), p, 10)


def test_corrupt_labels_rejects_non_numeric_p():
    with pytest.raises(TypeError, match="p must be a real number"):
        corrupt_labels(np.arange(5), "0.5", 10)


def test_corrupt_labels_rejects_label_out_of_range():
    with pytest.raises(ValueError, match=r"got 10 at index 3"):
        corrupt_labels(np.array([0, 1, 2, 10, 4]), 0.5, 10)
    with pytest.raises(ValueError, match=r"got -1 at index 0"):
        corrupt_labels(np.array([-1, 1]), 0.5, 10)


def test_corrupt_labels_rejects_2d_labels():
    with pytest.raises(ValueError, match=r"1-D, got shape \(2, 3\)"):
        corrupt_labels(np.zeros((2, 3), dtype=np.int64), 0.5, 10)


def test_corrupt_labels_rejects_float_labels():
    with pytest.raises(TypeError, match="integer dtype, got float64"):
        corrupt_labels(np.array([0.0, 1.0]), 0.5, 10)


@pytest.mark.parametrize("num_classes", [0, -3])
def test_corrupt_labels_rejects_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be at least 1, got {num_classes}"):
        corrupt_labels(np.array([0]), 0.5, num_classes)
