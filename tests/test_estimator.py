"""MASCClassifier: scikit-learn's estimator checks, and agreement with the reference."""

from __future__ import annotations

import numpy as np
import pytest
from _compare import assert_labels_match
from conftest import TOLERANCES
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from masc_fast import MASCClassifier
from masc_fast import reference as ref

F64 = TOLERANCES[np.float64]


# Every scikit-learn check runs as its own test. The estimator declares poor_score (see
# estimator.py: 99 % subspaces of the checks' 2-feature blobs are the whole plane), which only
# relaxes the generic accuracy thresholds; no check is skipped.
@parametrize_with_checks([MASCClassifier()])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits_split():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return x[:1300], y[:1300], x[1300:], y[1300:]


def test_digits_matches_reference(digits_split):
    x_train, y_train, x_test, y_test = digits_split
    clf = MASCClassifier().fit(x_train, y_train)
    ref_bases = ref.fit_subspaces_ref(x_train, y_train, 10, 0.99)
    ref_scores = ref.subspace_scores_ref(x_test, ref_bases)
    ref_pred = ref.predict_ref(x_test, ref_bases)
    pred = clf.predict(x_test)
    agreement = float(np.mean(pred == ref_pred))
    assert agreement >= 0.999, agreement
    assert_labels_match(pred, ref_pred, ref_scores, score_tol=F64[0], max_excused_fraction=0.001)
    assert clf.ranks_.tolist() == [b.shape[1] for b in ref_bases]
    assert clf.score(x_test, y_test) == pytest.approx(float(np.mean(ref_pred == y_test)), abs=0.001)
    assert clf.score(x_test, y_test) > 0.9  # MASC on raw digits is a decent classifier


def test_learned_attributes(digits_split):
    x_train, y_train, _, _ = digits_split
    clf = MASCClassifier(variance=0.9).fit(x_train, y_train)
    assert clf.n_features_in_ == 64
    assert clf.classes_.tolist() == list(range(10))
    assert len(clf.bases_) == 10
    for rank, basis in zip(clf.ranks_, clf.bases_):
        assert basis.shape == (64, rank)
        np.testing.assert_allclose(basis.T @ basis, np.eye(rank), atol=1e-12)


def test_refit_forgets_previous_fit(digits_split):
    x_train, y_train, x_test, _ = digits_split
    clf = MASCClassifier().fit(x_train[:600], y_train[:600])
    clf.fit(x_train[600:], y_train[600:])
    fresh = MASCClassifier().fit(x_train[600:], y_train[600:])
    assert clf.ranks_.tolist() == fresh.ranks_.tolist()
    np.testing.assert_array_equal(clf.predict(x_test), fresh.predict(x_test))
    np.testing.assert_allclose(
        clf.decision_function(x_test), fresh.decision_function(x_test), atol=1e-12
    )


def test_string_labels(digits_split):
    x_train, y_train, x_test, y_test = digits_split
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    clf = MASCClassifier().fit(x_train, names[y_train])
    assert sorted(clf.classes_.tolist()) == sorted(names.tolist())
    pred = clf.predict(x_test)
    assert pred.dtype.kind in "UO"
    numeric = MASCClassifier().fit(x_train, y_train)
    # classes_ are sorted names, so class indices differ but the decisions must be the same.
    np.testing.assert_array_equal(pred, names[numeric.predict(x_test)])


def test_get_set_params_round_trip():
    clf = MASCClassifier(variance=0.95, backend="torch", eigensolver="exact")
    params = clf.get_params()
    assert params == {"variance": 0.95, "backend": "torch", "eigensolver": "exact"}
    other = MASCClassifier().set_params(**params)
    assert other.get_params() == params
    assert clone(clf).get_params() == params
    assert clf.set_params(variance=3) is clf and clf.variance == 3


def test_init_stores_invalid_params_unvalidated():
    clf = MASCClassifier(variance=-1, backend="nope", eigensolver="fast")
    assert clf.get_params() == {"variance": -1, "backend": "nope", "eigensolver": "fast"}


def test_binary_decision_function(digits_split):
    x_train, y_train, x_test, _ = digits_split
    train = np.isin(y_train, [3, 8])
    labels = np.where(y_train[train] == 3, "three", "eight")
    clf = MASCClassifier().fit(x_train[train], labels)
    assert clf.classes_.tolist() == ["eight", "three"]
    decision = clf.decision_function(x_test)
    assert decision.shape == (len(x_test),)
    # sklearn convention: decision > 0 means classes_[1]; a tie (0) goes to classes_[0].
    np.testing.assert_array_equal(clf.predict(x_test) == clf.classes_[1], decision > 0)
    scores = clf.subspaces_.scores(x_test)
    np.testing.assert_allclose(decision, scores[:, 1] - scores[:, 0], atol=1e-15)


def test_multiclass_decision_function_is_scores(digits_split):
    x_train, y_train, x_test, _ = digits_split
    clf = MASCClassifier().fit(x_train, y_train)
    decision = clf.decision_function(x_test)
    assert decision.shape == (len(x_test), 10)
    assert ((decision >= 0) & (decision <= 1)).all()
    np.testing.assert_array_equal(clf.classes_[decision.argmax(axis=1)], clf.predict(x_test))


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_explicit_backend_gives_the_same_predictions(digits_split, backend):
    x_train, y_train, x_test, _ = digits_split
    default = MASCClassifier().fit(x_train, y_train)
    chosen = MASCClassifier(backend=backend).fit(x_train, y_train)
    np.testing.assert_array_equal(default.predict(x_test), chosen.predict(x_test))


def test_float32_input(digits_split):
    x_train, y_train, x_test, _ = digits_split
    clf64 = MASCClassifier().fit(x_train, y_train)
    clf32 = MASCClassifier().fit(x_train.astype(np.float32), y_train)
    assert clf32.decision_function(x_test.astype(np.float32)).dtype == np.float32
    agreement = np.mean(clf32.predict(x_test.astype(np.float32)) == clf64.predict(x_test))
    assert agreement >= 0.99


@pytest.mark.parametrize(
    "labels",
    [
        np.array([3, 7, 3, 9, 9, 0], dtype=np.int64),  # gaps: the counting pass
        np.array([5, 5, 5], dtype=np.uint8),
        np.array([-2, 4, -2, 1]),  # negative: the sort
        np.array([10**9, 3, 10**9]),  # large values: the sort
        np.array(["cat", "dog", "cat"]),
        np.array([0.0, 2.0, 2.0]),
    ],
)
def test_label_encoding_equals_numpy_unique(labels):
    from masc_fast.estimator import _encode_labels

    classes, encoded = _encode_labels(labels)
    expected_classes, expected = np.unique(labels, return_inverse=True)
    assert np.array_equal(classes, expected_classes) and classes.dtype == expected_classes.dtype
    assert np.array_equal(encoded, expected) and encoded.dtype == np.int64


def test_continuous_targets_still_refused():
    from masc_fast.estimator import _encode_labels

    with pytest.raises(ValueError, match="Unknown label type"):
        _encode_labels(np.array([0.5, 1.25, 2.0]))
