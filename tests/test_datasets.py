"""Offline datasets and the labelled loader."""

# The MNIST-1D test drives NumPy's legacy global generator on purpose (mnist1d reseeds it).
# ruff: noqa: NPY002

from __future__ import annotations

import importlib.util
import random

import numpy as np
import pytest
import torch

from masc_fast.data.in_memory import labelled_loader, load_digits_split, load_mnist1d

HAS_MNIST1D = importlib.util.find_spec("mnist1d") is not None


def test_load_digits_split_shapes_and_dtypes():
    x_train, y_train, x_test, y_test = load_digits_split()
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert y_train.shape == (1347,) and y_test.shape == (450,)
    assert x_train.dtype == x_test.dtype == torch.float32
    assert y_train.dtype == y_test.dtype == torch.int64


def test_load_digits_split_range_is_minus_one_to_one():
    x_train, y_train, x_test, y_test = load_digits_split()
    x = torch.cat([x_train, x_test])
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    # pixels are multiples of 1/8 after v / 8 - 1
    assert torch.equal(torch.round((x + 1) * 8), (x + 1) * 8)
    assert set(torch.cat([y_train, y_test]).tolist()) == set(range(10))


def test_load_digits_split_is_stratified():
    _, y_train, _, y_test = load_digits_split()
    train_counts = torch.bincount(y_train, minlength=10).double()
    test_counts = torch.bincount(y_test, minlength=10).double()
    ratio = test_counts / (train_counts + test_counts)
    assert torch.all((ratio - 0.25).abs() < 0.01)


def test_load_digits_split_is_deterministic_and_seeded():
    first, second = load_digits_split(seed=3), load_digits_split(seed=3)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    other = load_digits_split(seed=4)
    assert not torch.equal(first[1], other[1])


def test_load_digits_split_test_size():
    x_train, _, x_test, _ = load_digits_split(test_size=0.5)
    assert x_train.shape[0] + x_test.shape[0] == 1797
    assert abs(x_test.shape[0] - 1797 / 2) <= 1


@pytest.mark.skipif(not HAS_MNIST1D, reason="the optional 'mnist1d' package is not installed")
def test_load_mnist1d_shapes_determinism_and_global_rng():
    np.random.seed(5)
    random.seed(5)
    expected_numpy, expected_python = np.random.rand(), random.random()
    np.random.seed(5)
    random.seed(5)
    x_train, y_train, x_test, y_test = load_mnist1d(seed=0)
    # mnist1d reseeds the global generators; load_mnist1d must put them back
    assert np.random.rand() == expected_numpy and random.random() == expected_python

    assert x_train.shape == (4000, 40) and x_test.shape == (1000, 40)
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert set(y_train.tolist()) == set(range(10))
    x = torch.cat([x_train, x_test]).double()
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3

    again = load_mnist1d(seed=0)
    assert torch.equal(again[0], x_train) and torch.equal(again[3], y_test)


def test_labelled_loader_yields_pairs_in_order():
    x = torch.arange(20, dtype=torch.float32).reshape(10, 2)
    y = torch.arange(10) % 3
    batches = list(labelled_loader(x, y, batch_size=4))
    assert [len(batch) for batch in batches] == [2, 2, 2]
    assert [batch[0].shape[0] for batch in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_labelled_loader_with_true_labels_and_numpy_inputs():
    x = np.random.default_rng(0).standard_normal((7, 3))
    y = np.array([0, 1, 2, 0, 1, 2, 0])
    y_true = np.array([0, 1, 2, 2, 1, 0, 0])
    x_batch, y_batch, y_true_batch = next(iter(labelled_loader(x, y, y_true, batch_size=7)))
    assert x_batch.dtype == torch.float32 and y_batch.dtype == torch.int64
    assert y_true_batch.tolist() == y_true.tolist()


def test_labelled_loader_shuffle_is_seeded_and_reshuffles():
    x = torch.arange(50, dtype=torch.float32)[:, None]
    y = torch.arange(50)

    def orders(seed):
        loader = labelled_loader(x, y, batch_size=50, shuffle=True, seed=seed)
        return [next(iter(loader))[1].tolist() for _ in range(2)]

    first = orders(0)
    assert first == orders(0)
    assert first[0] != first[1], "a shuffling loader should reshuffle every epoch"
    assert sorted(first[0]) == list(range(50))
    assert first != orders(1)


def test_labelled_loader_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        labelled_loader(torch.zeros(5, 2), torch.zeros(4, dtype=torch.int64), batch_size=2)
    with pytest.raises(ValueError, match="same length"):
        labelled_loader(
            torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64), torch.zeros(3), batch_size=2
        )


def test_labelled_loader_rejects_bad_batch_size_and_label_shape():
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        labelled_loader(torch.zeros(5, 2), torch.zeros(5), batch_size=0)
    with pytest.raises(ValueError, match=r"y must be 1-D, got shape \(5, 1\)"):
        labelled_loader(torch.zeros(5, 2), torch.zeros(5, 1), batch_size=2)
