"""corrupt_labels against the authors' recipe, written out with NumPy's global generator."""

# The legacy global-generator calls are the point: they are what the authors' code ran.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.data.corruption import NOISE_RECIPES, corrupt_labels, noisy_labels

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


# ---------------------------------------------------------------- noisy_labels


def _seeded_recipe(labels: np.ndarray, p: float, num_classes: int, seed: int, strict=False):
    """The "seeded" recipe written out: default_rng(seed), uniforms, then replacements."""
    labels = np.array(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if strict and p == 0:
        return labels
    draws = rng.random(len(labels))
    mask = draws < p if strict else draws <= p
    labels[mask] = rng.integers(0, num_classes, size=mask.sum())
    return labels


def test_noise_recipes():
    assert NOISE_RECIPES == ("paper", "seeded")


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("p", PROBABILITIES)
def test_noisy_labels_paper_is_corrupt_labels_seed_42(p, strict):
    labels = _true_labels(4_000, 10)
    expected = corrupt_labels(labels, p, 10, seed=42, strict=strict)
    for seed in (0, 1, 42, 12345):  # the run seed is ignored by "paper"
        got = noisy_labels(labels, p, 10, recipe="paper", seed=seed, strict=strict)
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(noisy_labels(labels, p, 10), expected)  # the default recipe
    if not strict:
        np.testing.assert_array_equal(expected, _authors_corruption(labels, p, 10))


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("p", PROBABILITIES)
def test_noisy_labels_seeded_matches_written_out_recipe(p, strict):
    labels = _true_labels(3_000, 100)
    for seed in (0, 7):
        np.testing.assert_array_equal(
            noisy_labels(labels, p, 100, recipe="seeded", seed=seed, strict=strict),
            _seeded_recipe(labels, p, 100, seed, strict=strict),
        )


def test_noisy_labels_seeded_is_reproducible_per_seed_and_differs_between_seeds():
    labels = _true_labels(10_000, 10)
    runs = {seed: noisy_labels(labels, 0.4, 10, recipe="seeded", seed=seed) for seed in range(4)}
    for seed in runs:
        np.testing.assert_array_equal(
            runs[seed], noisy_labels(labels, 0.4, 10, recipe="seeded", seed=seed)
        )
    for a in runs:
        for b in runs:
            if a < b:
                changed_a, changed_b = runs[a] != labels, runs[b] != labels
                # independent masks: agreement is ~q^2 + (1-q)^2, far from 1
                assert np.mean(changed_a == changed_b) < 0.7
    assert not np.array_equal(runs[0], noisy_labels(labels, 0.4, 10))  # not the paper's vector


def test_noisy_labels_seeded_masks_are_nested_across_p():
    n = 20_000
    labels = _true_labels(n, 10)
    uniforms = np.random.default_rng(3).random(n)
    previous = np.zeros(n, dtype=bool)
    for p in PROBABILITIES:
        changed = noisy_labels(labels, p, 10, recipe="seeded", seed=3) != labels
        mask = uniforms <= p
        assert not np.any(changed & ~mask), f"p={p}: a label changed outside the mask"
        assert np.all(mask[previous])
        if mask.sum() > 2_000:  # and the mask is what changes: 1 - 1/K of it, here 0.9
            assert np.mean(changed[mask]) == pytest.approx(0.9, abs=0.03)
        previous = mask


@pytest.mark.parametrize("num_classes", [2, 10, 200])
@pytest.mark.parametrize("p", [0.2, 0.6, 1.0])
def test_noisy_labels_seeded_changed_fraction_is_p_minus_p_over_k(p, num_classes):
    n = 200_000
    labels = _true_labels(n, num_classes)
    q = p - p / num_classes
    sd = np.sqrt(q * (1 - q) / n)  # binomial standard deviation of the fraction
    changed = np.mean(noisy_labels(labels, p, num_classes, recipe="seeded", seed=11) != labels)
    assert abs(changed - q) < 5 * sd + 1e-12


def test_noisy_labels_strict_differs_only_at_u_equal_p():
    labels = _true_labels(5_000, 10)
    # p = 0 with strict draws nothing; non-strict still draws (u <= 0 has probability ~0)
    for recipe in NOISE_RECIPES:
        np.testing.assert_array_equal(
            noisy_labels(labels, 0.0, 10, recipe=recipe, strict=True), labels
        )
        np.testing.assert_array_equal(noisy_labels(labels, 0.0, 10, recipe=recipe), labels)
    # at a p equal to one of the uniforms, only strict leaves that sample alone
    u = np.random.default_rng(5).random(5_000)
    p = float(u[17])
    loose = noisy_labels(labels, p, 10, recipe="seeded", seed=5)
    strict = noisy_labels(labels, p, 10, recipe="seeded", seed=5, strict=True)
    expected_loose = _seeded_recipe(labels, p, 10, 5)
    expected_strict = _seeded_recipe(labels, p, 10, 5, strict=True)
    np.testing.assert_array_equal(loose, expected_loose)
    np.testing.assert_array_equal(strict, expected_strict)
    assert np.sum(u <= p) == np.sum(u < p) + 1
    assert not np.array_equal(loose, strict)


def test_noisy_labels_leaves_input_and_global_rng_alone():
    labels = _true_labels(1_000, 10)
    copy = labels.copy()
    np.random.seed(123)
    before = np.random.rand(3)
    np.random.seed(123)
    out = noisy_labels(labels, 1.0, 10, recipe="seeded", seed=1)
    np.testing.assert_array_equal(np.random.rand(3), before)
    np.testing.assert_array_equal(labels, copy)
    assert out.dtype == np.int64 and not np.shares_memory(out, labels)
    np.testing.assert_array_equal(
        noisy_labels(torch.from_numpy(labels), 0.3, 10, recipe="seeded", seed=2),
        noisy_labels(labels.tolist(), 0.3, 10, recipe="seeded", seed=2),
    )


def test_noisy_labels_rejects_unknown_recipe():
    with pytest.raises(
        ValueError, match=r"unknown noise recipe 'random'; expected one of \('paper', 'seeded'\)"
    ):
        noisy_labels(np.arange(5), 0.5, 10, recipe="random")


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"seed": -1}, ValueError, "seed must be non-negative, got -1"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got 1.5"),
        ({"p": 1.5}, ValueError, r"p must be in \[0, 1\], got 1.5"),
        ({"num_classes": 0}, ValueError, "num_classes must be at least 1, got 0"),
        ({"labels": np.array([0, 10])}, ValueError, "got 10 at index 1"),
    ],
)
def test_noisy_labels_seeded_rejects_bad_arguments(kwargs, error, pattern):
    arguments = {"labels": np.arange(5), "p": 0.5, "num_classes": 10, "recipe": "seeded", "seed": 0}
    arguments.update(kwargs)
    with pytest.raises(error, match=pattern):
        noisy_labels(**arguments)


def test_noisy_labels_paper_validates_too():
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        noisy_labels(np.arange(5), -0.5, 10)
