"""Tests of the three torch Gram-update forms and of the per-shape form selector.

Every form must add ``Σ_{i: y_i = k} x_i x_iᵀ`` to ``gram[k]`` in place. The reference is a
float64 NumPy sum of outer products per class, written here and sharing no code with the
forms. Errors are compared on the scale of each entry: ``|G_ij − R_ij| / sqrt(R_ii R_jj)``
(<= 1 by Cauchy–Schwarz for any sum of products), against the tolerance table's ``atol`` for
the rows' dtype. A dot product of m terms is off by about √m·u of that scale (m·u at worst):
at most 3.3e-6 for float32 rows at the m <= 3000 rows per class used here, inside float32's
2e-5, and 6e-15 for float64 rows against 1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.backends import gram_forms, torch_ops
from masc_fast.backends.gram_forms import GRAM_FORMS, select_gram_form
from masc_fast.testing.synthetic import structured_classes

FORMS = list(GRAM_FORMS)


def _reference(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> np.ndarray:
    """Σ x xᵀ per class, float64 NumPy, one outer product at a time."""
    x = x.double().numpy()
    y = y.numpy()
    gram = np.zeros((num_classes, x.shape[1], x.shape[1]))
    for row, label in zip(x, y):
        gram[label] += np.outer(row, row)
    return gram


def _assert_grams_close(actual: torch.Tensor, expected: np.ndarray, atol: float, name: str):
    actual = actual.double().numpy()
    diagonal = np.sqrt(np.abs(np.diagonal(expected, axis1=1, axis2=2)))
    scale = diagonal[:, :, None] * diagonal[:, None, :]
    error = np.abs(actual - expected) / np.where(scale > 0, scale, 1.0)
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() <= atol, (
        f"{name}: max scaled error {error.max():.3e} > {atol:g} at {worst}: "
        f"got {actual[worst]!r}, expected {expected[worst]!r}; mean {error.mean():.3e}"
    )


def _random_batch(rows: int, dim: int, num_classes: int, dtype, seed: int, absent=()):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, dim, generator=generator, dtype=dtype)
    y = torch.randint(0, num_classes, (rows,), generator=generator)
    present = [label for label in range(num_classes) if label not in absent]
    for label in absent:  # hand the absent classes' rows to present ones
        y[y == label] = present[label % len(present)]
    return x, y


# name -> (rows, d, K, classes absent from the batch)
SHAPES = {
    "n500-d33-k7-absent": (500, 33, 7, (0, 3, 6)),
    "n300-d17-k1": (300, 17, 1, ()),
    "n3000-d20-k200": (3000, 20, 200, ()),
    "n1-d9-k5": (1, 9, 5, ()),
    "n2000-d129-k10": (2000, 129, 10, ()),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("form", FORMS)
def test_gram_form_matches_reference(form, dtype, shape, tolerances):
    rows, dim, num_classes, absent = SHAPES[shape]
    x, y = _random_batch(rows, dim, num_classes, dtype, seed=rows + dim, absent=absent)
    # Start from a non-zero Gram: the update adds in place, it does not overwrite.
    previous = torch.randn(num_classes, dim, dim, dtype=torch.float64)
    previous = previous @ previous.mT
    gram = previous.clone()
    GRAM_FORMS[form](gram, x, y)
    expected = _reference(x, y, num_classes)
    for label in absent:
        assert torch.equal(gram[label], previous[label]), f"absent class {label} changed"
    _assert_grams_close(gram - previous, expected, tolerances[dtype][0], f"{form} {dtype} {shape}")


@pytest.mark.parametrize("form", FORMS)
def test_gram_form_float32_gram(form, tolerances):
    x, y = _random_batch(400, 24, 6, torch.float32, seed=1, absent=(2,))
    gram = torch.zeros(6, 24, 24, dtype=torch.float32)
    GRAM_FORMS[form](gram, x, y)
    _assert_grams_close(gram, _reference(x, y, 6), tolerances[torch.float32][0], form)


@pytest.mark.parametrize("form", FORMS)
def test_gram_form_structured_low_rank_rows(form, tolerances):
    x, y = structured_classes(1200, 96, 4, rank=8, seed=2, dtype=torch.float32)
    gram = torch.zeros(4, 96, 96, dtype=torch.float64)
    GRAM_FORMS[form](gram, x, y)
    _assert_grams_close(gram, _reference(x, y, 4), tolerances[torch.float32][0], form)


@pytest.mark.parametrize("form", FORMS)
def test_gram_form_on_digits(form, digits, tolerances):
    x, y = digits
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    gram = torch.zeros(10, 64, 64, dtype=torch.float64)
    GRAM_FORMS[form](gram, x, y)
    _assert_grams_close(gram, _reference(x, y, 10), tolerances[torch.float64][0], form)


@pytest.mark.parametrize("classes_per_chunk", [1, 2, 4])
@pytest.mark.parametrize("form", ["bucketed", "onehot"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_gram_form_in_chunks(form, dtype, classes_per_chunk, monkeypatch, tolerances):
    # Present classes 0 2 3 6 7 8: chunks of 2 and 4 hold classes with gaps (the index_add_
    # path) and consecutive ones (the in-view path); chunks of 1 are what a tight memory
    # budget gives.
    monkeypatch.setattr(gram_forms, "_classes_per_chunk", lambda *args: classes_per_chunk)
    x, y = _random_batch(600, 11, 9, dtype, seed=3, absent=(1, 4, 5))
    gram = torch.zeros(9, 11, 11, dtype=torch.float64)
    GRAM_FORMS[form](gram, x, y)
    _assert_grams_close(gram, _reference(x, y, 9), tolerances[dtype][0], form)


def test_memory_budget_bounds_chunk_size(monkeypatch):
    monkeypatch.setattr(gram_forms, "_FORM_BYTES", 1024)
    x32, x64 = torch.zeros(600, 11), torch.zeros(600, 11, dtype=torch.float64)
    gram = torch.zeros(9, 11, 11, dtype=torch.float64)
    assert gram_forms._classes_per_chunk(gram, x64, 600) == 1  # never less than one class
    monkeypatch.setattr(gram_forms, "_FORM_BYTES", 10 * ((20 * 11 + 121) * 4 + 121 * 8))
    assert gram_forms._classes_per_chunk(gram, x32, 20) == 10  # rows + products + their cast


@pytest.mark.parametrize("form", ["bucketed", "onehot"])
def test_gram_form_equals_per_class_form_on_unbalanced_classes(form):
    # One class holds 90 % of the rows: the bucketed form pads the others to its length.
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(1000, 40, generator=generator, dtype=torch.float64)
    y = torch.where(
        torch.rand(1000, generator=generator) < 0.9,
        2,
        torch.randint(0, 5, (1000,), generator=generator),
    )
    expected = torch.zeros(5, 40, 40, dtype=torch.float64)
    torch_ops.gram_update(expected, x, y)
    gram = torch.zeros_like(expected)
    GRAM_FORMS[form](gram, x, y)
    scale = expected.diagonal(dim1=1, dim2=2).max()
    assert float((gram - expected).abs().max() / scale) <= 1e-13


# ---------------------------------------------------------------- select_gram_form


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((10, 784, 10240), "per_class"),  # bench/RESULTS.md: per_class 82.6 ms, next 301.5
        ((200, 512, 25600), "per_class"),  # per_class 155.1 ms, next 296.2
        ((10, 96, 2048), "per_class"),  # 0.98 vs 0.99 ms: a tie keeps the default
        ((50, 64, 3200), "bucketed"),  # bucketed 0.96 ms, per_class 7.00
    ],
)
def test_select_gram_form_cpu_returns_measured_winner(shape, expected):
    assert select_gram_form(*shape, "cpu") == expected
    assert select_gram_form(*shape, torch.device("cpu")) == expected


def test_select_gram_form_cpu_nearest_shape():
    assert select_gram_form(60, 48, 4000, "cpu") == "bucketed"
    assert select_gram_form(10, 4096, 10240, "cpu") == "per_class"


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "meta"])
def test_select_gram_form_unmeasured_device_is_per_class(device):
    # No GPU has run bench/bench_gram_forms.py yet: CUDA keeps the default form.
    for shape in [(10, 784, 10240), (50, 64, 3200), (1, 1, 1)]:
        assert select_gram_form(*shape, device) == "per_class"


def test_gram_forms_registry_is_the_torch_ops():
    assert GRAM_FORMS == {
        "per_class": torch_ops.gram_update_per_class,
        "bucketed": torch_ops.gram_update_bucketed,
        "onehot": torch_ops.gram_update_onehot,
    }
