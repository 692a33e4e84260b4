"""The engine against the scikit-learn reference on real activations (issue 2, deliverable 4).

Networks trained with label noise on two offline datasets — the paper's MLP shape on digits
(p = 0.4) and a smaller MLP on MNIST-1D (p = 0.2) — are probed layer by layer, with
corrupted-label and true-label subspaces. At every layer, for every usable backend, the
engine's predictions must agree with the reference (sklearn ``PCA(t, svd_solver="full")`` per
class on X_k ∪ −X_k, float64) on >= 99.9 % of points, and every accuracy must match within
0.1 percentage points. Both bars come from the issue; component counts must match exactly
(an independent eigensolver may move a borderline class by one, which would show here).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import skip_or_fail

from masc_fast import GramAccumulator
from masc_fast.backends import available
from masc_fast.data.in_memory import load_digits_split, load_mnist1d
from masc_fast.reference import fit_subspaces_ref, predict_ref
from masc_fast.testing.noisy_mlp import noisy_mlp_activations

AGREEMENT = 0.999
ACCURACY_POINTS = 0.1


def _trained_activations(data, p: float, hidden, epochs: int):
    noisy = noisy_mlp_activations(data, p, hidden, epochs=epochs)
    labels = {"corrupted": noisy.corrupted, "true": noisy.y_train}
    return noisy.train, noisy.test, labels, noisy.y_train, noisy.y_test


@pytest.fixture(scope="module")
def digits_activations():
    return _trained_activations(load_digits_split(), 0.4, (128, 512, 2048, 2048), epochs=15)


@pytest.fixture(scope="module")
def mnist1d_activations():
    pytest.importorskip("mnist1d", reason="mnist1d is a test extra")
    return _trained_activations(load_mnist1d(), 0.2, (256, 512), epochs=10)


def _check_against_reference(activations, backend: str) -> list[str]:
    usable, reason = available()[backend]
    if not usable:
        skip_or_fail(backend, reason)
    train_acts, test_acts, label_sets, y_train, y_test = activations
    checked = []
    for layer, train in train_acts.items():
        for fitted_on, labels in label_sets.items():
            accumulator = GramAccumulator(10, train.shape[1], backend=backend, layer=layer)
            for start in range(0, train.shape[0], 256):
                accumulator.update(train[start : start + 256], labels[start : start + 256])
            subspaces = accumulator.fit(0.99)
            reference = fit_subspaces_ref(train, labels, 10, 0.99)
            ref_ranks = [b.shape[1] if b is not None else 0 for b in reference]
            where = f"layer {layer}, {fitted_on} subspaces, backend {backend}"
            assert subspaces.num_components.tolist() == ref_ranks, where
            for split, x, truth in (("train", train, y_train), ("test", test_acts[layer], y_test)):
                pred = subspaces.predict(x, backend=backend).numpy()
                ref_pred = predict_ref(x, reference)
                agreement = float((pred == ref_pred).mean())
                assert agreement >= AGREEMENT, f"{where}, {split}: agreement {agreement:.4%}"
                gap = 100 * abs((pred == truth.numpy()).mean() - (ref_pred == truth.numpy()).mean())
                assert gap <= ACCURACY_POINTS, (
                    f"{where}, {split}: accuracy differs by {gap:.3f} points"
                )
            checked.append(f"{layer}/{fitted_on}")
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_engine_matches_reference_on_digits_mlp(digits_activations, backend):
    checked = _check_against_reference(digits_activations, backend)
    assert len(checked) == 10  # input + fc1..fc4, two label sets


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_engine_matches_reference_on_mnist1d_mlp(mnist1d_activations, backend):
    checked = _check_against_reference(mnist1d_activations, backend)
    assert len(checked) == 6  # input + fc1, fc2, two label sets


def test_digits_network_really_memorised_noise(digits_activations):
    """Guard against a vacuous comparison: the network must differ from its input layer."""
    train_acts, _, _, _, _ = digits_activations
    assert not np.allclose(train_acts["fc1"].numpy()[:, :64], train_acts["input"].numpy())
    assert float((train_acts["fc4"] == 0).float().mean()) < 0.99  # ReLU layer is not dead
