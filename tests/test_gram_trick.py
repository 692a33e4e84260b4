"""Classes with fewer rows than features are fitted by the Gram trick in the ``gram`` strategy.

The accumulator keeps such a class's rows and solves the n_k × n_k ``X XᵀX`` problem; its
counts and projectors must equal a float64 eigh of the d × d Gram (tolerance 1e-9 on projector
entries: both are float64, the Gram's own float32 products differ by ~1e-7 relative, so the
reference here is the float64 Gram of the same rows), on random rows and on real activations
(an MLP trained on scikit-learn's digits, 512 wide, ~140 rows per class).
"""

from __future__ import annotations

import pytest
import torch
from _compare import assert_close_report

import masc_fast
from masc_fast.linalg.spectra import components_for_variance, exact_class_eigen


def _projector(basis: torch.Tensor) -> torch.Tensor:
    basis = basis.to(torch.float64)
    return basis @ basis.T


def _exact(rows: torch.Tensor, variance: float) -> torch.Tensor:
    """The kept basis of a float64 eigh of the class's d × d Gram."""
    rows = rows.to(torch.float64)
    eigen = exact_class_eigen(rows.T @ rows, variance=variance, rank_bound=min(rows.shape))
    keep = components_for_variance(eigen.values, eigen.total, variance, eigen.rank_cap)
    return eigen.vectors[:, :keep]


@pytest.fixture(scope="module")
def mlp_rows():
    from sklearn.datasets import load_digits

    from masc_fast.testing.noisy_mlp import noisy_mlp_activations

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    acts = noisy_mlp_activations((x[:1400], y[:1400], x[1400:], y[1400:]), 0.4, (512,), epochs=5)
    return acts.train["fc1"], acts.corrupted, acts.test["fc1"]


def _fit(rows, labels, variance=0.99, **options):
    accumulator = masc_fast.GramAccumulator(10, rows.shape[1], **options)
    for start in range(0, len(rows), 100):
        accumulator.update(rows[start : start + 100], labels[start : start + 100])
    return accumulator, accumulator.fit(variance)


def test_small_classes_match_a_float64_eigh_on_real_activations(mlp_rows):
    rows, labels, test_rows = mlp_rows
    _, fitted = _fit(rows, labels)
    assert set(fitted.methods) == {"gram_trick"}  # 512 wide, ~140 rows a class
    for label in range(10):
        exact = _exact(rows[labels == label], 0.99)
        assert int(fitted.num_components[label]) == exact.shape[1]
        assert_close_report(
            _projector(fitted.bases[label]), _projector(exact), 1e-9, 0.0, f"class {label}"
        )
    _, plain = _fit(rows, labels, keep_small_classes=False)
    assert "gram_trick" not in plain.methods
    assert torch.equal(fitted.num_components, plain.num_components)
    agree = (fitted.predict(test_rows) == plain.predict(test_rows)).float().mean()
    assert float(agree) == 1.0


def test_a_class_reaching_d_rows_uses_its_gram():
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(300, 40, generator=generator)
    labels = torch.cat([torch.zeros(60), torch.ones(30), torch.full((210,), 2)]).long()
    labels = labels[torch.randperm(300, generator=generator)]
    accumulator = masc_fast.GramAccumulator(3, 40)
    for start in range(0, 300, 25):
        accumulator.update(rows[start : start + 25], labels[start : start + 25])
    fitted = accumulator.fit(0.9)
    assert fitted.methods[1] == "gram_trick" and fitted.methods[0] != "gram_trick"
    for label in range(3):
        exact = _exact(rows[labels == label], 0.9)
        assert_close_report(
            _projector(fitted.bases[label]), _projector(exact), 1e-5, 0.0, str(label)
        )


def test_the_kept_rows_survive_a_checkpoint_and_a_merge(mlp_rows):
    rows, labels, _ = mlp_rows
    first, _ = _fit(rows[:700], labels[:700])
    second, _ = _fit(rows[700:], labels[700:])
    whole, expected = _fit(rows, labels)
    restored = masc_fast.GramAccumulator(10, rows.shape[1])
    restored.restore(first.state())
    restored.merge(second)
    merged = restored.fit(0.99)
    assert merged.methods == expected.methods
    assert torch.equal(merged.num_components, expected.num_components)
    for got, want in zip(merged.bases, expected.bases):
        assert_close_report(_projector(got), _projector(want), 1e-9, 0.0, "merged")
    # A checkpoint without kept rows (written before they were kept) falls back to the Grams.
    # (every class's Gram, no gram_labels, no rows: the format before rows were kept)
    old = {"gram": whole.gram.clone(), "counts": whole.counts}
    fallback = masc_fast.GramAccumulator(10, rows.shape[1])
    fallback.restore(old)
    refit = fallback.fit(0.99)
    assert "gram_trick" not in refit.methods
    assert torch.equal(refit.num_components, expected.num_components)


def test_small_classes_keep_rows_not_grams_and_a_checkpoint_is_rows_sized(mlp_rows):
    """Classes with fewer rows than d accumulate no Gram (their rows are the state): a
    checkpoint of 1400 rows × 512 holds the rows, 2.9 MB, not 10 float64 Grams, 21 MB; the
    ``gram`` property still reads Σ x xᵀ for every class."""
    rows, labels, _ = mlp_rows
    accumulator, _ = _fit(rows, labels)
    state = accumulator.state()
    assert tuple(state["gram"].shape) == (0, 512, 512)
    assert state["small_rows"].shape == rows.shape
    size = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    assert size < rows.numel() * 4 * 1.1 < 10 * 512 * 512 * 8 / 5
    expected = torch.stack(
        [rows[labels == k].double().T @ rows[labels == k].double() for k in range(10)]
    )
    scale = float(expected.abs().max())
    assert_close_report(accumulator.gram, expected, 1e-6 * scale, 0.0, "gram property")


def test_a_class_reaching_d_rows_gets_its_gram_from_all_of_them(mlp_rows):
    """Rows arrive 100 at a time; class 0 of 64-wide rows passes d during the stream: its Gram
    (and the others') equals the float64 Gram of all its rows, and it is fitted from the Gram."""
    rows, labels, _ = mlp_rows
    narrow = rows[:, :64].contiguous()
    accumulator, fitted = _fit(narrow, labels)
    assert set(fitted.methods) == {"exact"}  # every class has > 64 rows: all from Grams
    assert tuple(accumulator.state()["gram"].shape) == (10, 64, 64)
    expected = torch.stack(
        [narrow[labels == k].double().T @ narrow[labels == k].double() for k in range(10)]
    )
    scale = float(expected.abs().max())
    assert_close_report(accumulator.gram, expected, 1e-6 * scale, 0.0, "reached d")
