"""Zhang et al.'s randomization tests: each mode's invariants, on both splits, NumPy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.data import RANDOMIZATIONS, randomize
from masc_fast.data.randomization import randomize_split

K = 10


def _images(n=64, channels=3, side=6, dtype=np.float32):
    """Images whose every value is distinct, so a permutation can be read back."""
    return np.arange(n * channels * side * side, dtype=dtype).reshape(n, channels, side, side)


def _labels(n=64, seed=0):
    return np.random.default_rng(seed).integers(0, K, n)


def _position_orders(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per image, the permutation of spatial positions that maps ``before`` to ``after``,
    checking that the channels of a position moved together."""
    n, channels = before.shape[:2]
    flat_before = before.reshape(n, channels, -1)
    flat_after = after.reshape(n, channels, -1)
    orders = []
    for image in range(n):
        index = {value: pos for pos, value in enumerate(flat_before[image, 0])}
        order = np.array([index[value] for value in flat_after[image, 0]])
        assert np.array_equal(flat_after[image], flat_before[image][:, order])
        orders.append(order)
    return np.array(orders)


def test_true_changes_nothing_on_either_split():
    x, y = _images(), _labels()
    for split in ("train", "test"):
        out_x, out_y = randomize(x, y, "true", seed=1, num_classes=K, split=split)
        assert out_x is x and out_y is y


@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
def test_partial_changes_about_p_minus_p_over_k_of_the_training_labels(p):
    """Each label redrawn with probability p (possibly to itself): changed fraction p − p/K
    (binomial, n = 20 000: five standard deviations); inputs and test labels untouched."""
    n = 20_000
    x, y = np.zeros((n, 4), np.float32), _labels(n)
    out_x, out_y = randomize(x, y, "partial", seed=3, num_classes=K, p=p)
    expected = p - p / K
    assert out_x is x
    assert abs((out_y != y).mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / n)
    assert out_y.min() >= 0 and out_y.max() < K and out_y.dtype == y.dtype
    test_x, test_y = randomize(x, y, "partial", seed=3, num_classes=K, p=p, split="test")
    assert test_x is x and test_y is y


def test_random_labels_are_uniform_and_independent_of_the_true_ones():
    n = 50_000
    y = _labels(n)
    _, out = randomize(np.zeros((n, 2)), y, "random-labels", seed=0, num_classes=K)
    counts = np.bincount(out, minlength=K) / n
    assert np.abs(counts - 1 / K).max() < 0.01
    assert abs((out == y).mean() - 1 / K) < 0.01  # agreement by chance only


def test_shuffled_pixels_use_one_permutation_for_every_image_and_both_splits():
    train, test = _images(40), _images(12) + 0.5
    y_train, y_test = _labels(40), _labels(12, seed=1)
    new_train, labels = randomize(train, y_train, "shuffled-pixels", seed=7, num_classes=K)
    new_test, _ = randomize(test, y_test, "shuffled-pixels", seed=7, num_classes=K, split="test")
    assert labels is y_train
    orders = _position_orders(train, new_train)
    assert (orders == orders[0]).all()  # one permutation for all images
    assert not np.array_equal(orders[0], np.arange(orders.shape[1]))
    assert (_position_orders(test, new_test) == orders[0]).all()  # the test split too
    other, _ = randomize(train, y_train, "shuffled-pixels", seed=8, num_classes=K)
    assert not np.array_equal(_position_orders(train, other)[0], orders[0])  # seed matters
    again, _ = randomize(train[:3], y_train[:3], "shuffled-pixels", seed=7, num_classes=K)
    assert np.array_equal(again, new_train[:3])  # depends on seed and shape only


def test_random_pixels_permute_each_image_on_its_own_and_leave_the_test_split():
    x, y = _images(50), _labels(50)
    out, labels = randomize(x, y, "random-pixels", seed=2, num_classes=K)
    assert labels is y
    orders = _position_orders(x, out)  # each image: a permutation of its own pixels
    assert len({tuple(order) for order in orders}) == len(orders)  # all different
    test_x, _ = randomize(x, y, "random-pixels", seed=2, num_classes=K, split="test")
    assert test_x is x


def test_random_pixels_of_vectors_permute_features():
    x = np.arange(30 * 40, dtype=np.float32).reshape(30, 40)
    out, _ = randomize(x, _labels(30), "random-pixels", seed=0, num_classes=K)
    assert np.array_equal(np.sort(out, axis=1), x)
    assert not np.array_equal(out, x)


def test_gaussian_matches_each_channels_mean_and_std():
    rng = np.random.default_rng(0)
    means, stds = np.array([0.2, -1.0, 3.0]), np.array([1.0, 0.5, 2.0])
    x = (rng.standard_normal((2000, 3, 8, 8)) * stds[:, None, None] + means[:, None, None]) ** 3
    x = x.astype(np.float32)
    y = _labels(2000)
    out, labels = randomize(x, y, "gaussian", seed=4, num_classes=K)
    assert labels is y and out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(
        out.mean(axis=(0, 2, 3)), x.mean(axis=(0, 2, 3)), atol=0.05 * x.std()
    )
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), x.std(axis=(0, 2, 3)), rtol=0.02)
    # Gaussian, not the data's own shape: the cube of a normal has kurtosis far above 3
    centred = (out - out.mean(axis=(0, 2, 3), keepdims=True)) / out.std(
        axis=(0, 2, 3), keepdims=True
    )
    assert abs(float((centred**4).mean()) - 3.0) < 0.1
    test_x, _ = randomize(x, y, "gaussian", seed=4, num_classes=K, split="test")
    assert test_x is x


def test_gaussian_uint8_images_stay_uint8_in_range():
    x = np.random.default_rng(1).integers(0, 256, (500, 1, 10, 10), dtype=np.uint8)
    out, _ = randomize(x, _labels(500), "gaussian", seed=0, num_classes=K)
    assert out.dtype == np.uint8
    assert abs(float(out.mean()) - float(x.mean())) < 2.0


@pytest.mark.parametrize("mode", RANDOMIZATIONS)
def test_torch_in_torch_out_and_the_same_values(mode):
    x, y = _images(20), _labels(20)
    p = 0.5 if mode == "partial" else None
    np_x, np_y = randomize(x, y, mode, seed=5, num_classes=K, p=p)
    t_x, t_y = randomize(torch.from_numpy(x), torch.from_numpy(y), mode, seed=5, num_classes=K, p=p)
    assert isinstance(t_x, torch.Tensor) and isinstance(t_y, torch.Tensor)
    assert np.array_equal(t_x.numpy(), np_x) and np.array_equal(t_y.numpy(), np_y)
    assert t_y.dtype == torch.from_numpy(y).dtype


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "noise"}, "randomization must be one of true, partial"),
        ({"mode": "partial"}, r"partial needs a corruption probability p in \(0, 1\]"),
        ({"mode": "partial", "p": 0.0}, r"partial needs a corruption probability"),
        ({"mode": "gaussian", "p": 0.3}, "p applies to the partial mode only"),
        ({"mode": "true", "split": "val"}, "split must be 'train' or 'test'"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        randomize(_images(4), _labels(4), seed=0, num_classes=K, **kwargs)


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="x has 4 samples but y has 3 labels"):
        randomize(_images(4), _labels(3), "random-pixels", seed=0, num_classes=K)


def test_randomize_split_keeps_the_split_type_and_labels():
    from masc_fast.data import load_dataset

    train, test = load_dataset("digits", progress=False)
    shuffled = randomize_split(train, "shuffled-pixels", seed=0)
    assert type(shuffled) is type(train) and torch.equal(shuffled.labels, train.labels)
    assert not torch.equal(shuffled.data, train.data)
    assert torch.equal(shuffled.data.sort(dim=1).values, train.data.sort(dim=1).values)
    assert randomize_split(test, "random-pixels", seed=0) is test
    assert randomize_split(train, "partial", seed=0) is train  # labels come from the run
