"""Tests of GramAccumulator + ClassSubspaces against the scikit-learn reference, and properties.

The reference (``masc_fast.reference``) fits ``sklearn.decomposition.PCA`` on each class's rows
stacked with their negatives, the authors' recipe; it shares no code with the engine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match
from conftest import TOLERANCES

from masc_fast import ClassSubspaces, EmptyClassWarning, GramAccumulator
from masc_fast import reference as ref
from masc_fast.testing.synthetic import structured_classes

F64 = TOLERANCES[torch.float64]


def _fit(x, y, num_classes, variance=0.99, **kwargs) -> ClassSubspaces:
    accumulator = GramAccumulator(num_classes, x.shape[1])
    accumulator.update(x, y)
    return accumulator.fit(variance, **kwargs)


def _projectors(bases) -> list:
    return [None if b is None else np.asarray(b, dtype=np.float64) @ np.asarray(b).T for b in bases]


def _assert_same_subspaces(fitted: ClassSubspaces, ref_bases, tol=F64, name="") -> None:
    ranks = [0 if b is None else b.shape[1] for b in ref_bases]
    assert fitted.num_components.tolist() == ranks, f"{name} ranks"
    for label, (mine, theirs) in enumerate(zip(_projectors(fitted.bases), _projectors(ref_bases))):
        if theirs is None:
            assert mine is None
            continue
        assert_close_report(mine, theirs, *tol, f"{name} projector of class {label}")


def _low_rank(n=1200, dim=40, num_classes=4, rank=8, seed=0, dtype=torch.float64):
    return structured_classes(
        n, dim, num_classes, rank=rank, noise=0.02, decay=0.8, seed=seed, dtype=dtype
    )


# ---------------------------------------------------------------- against the reference


def test_fit_matches_reference_on_low_rank_data():
    x, y = _low_rank()
    fitted = _fit(x, y, 4)
    ref_bases = ref.fit_subspaces_ref(x, y, 4, 0.99)
    assert all(1 < b.shape[1] < 40 for b in ref_bases)  # non-trivial ranks
    _assert_same_subspaces(fitted, ref_bases, name="low-rank")


def test_fit_matches_reference_on_digits(digits):
    x, y = digits
    fitted = _fit(x, y, 10)
    ref_bases = ref.fit_subspaces_ref(x, y, 10, 0.99)
    _assert_same_subspaces(fitted, ref_bases, name="digits")
    scores = fitted.scores(x)
    ref_scores = ref.subspace_scores_ref(x, ref_bases)
    assert_close_report(scores, ref_scores, *F64, "digits scores")
    assert_labels_match(
        fitted.predict(x),
        ref.predict_ref(x, ref_bases),
        ref_scores,
        score_tol=F64[0],
        max_excused_fraction=0.001,
    )


@pytest.mark.parametrize("variance", [0.5, 0.9, 0.999])
def test_fit_matches_reference_at_other_thresholds(digits, variance):
    x, y = digits
    _assert_same_subspaces(
        _fit(x, y, 10, variance), ref.fit_subspaces_ref(x, y, 10, variance), name=f"t={variance}"
    )


@pytest.mark.parametrize("variance", [1, 3, 17])
def test_whole_number_variance_keeps_that_many_components(digits, variance):
    x, y = digits
    fitted = _fit(x, y, 10, variance)
    assert fitted.num_components.tolist() == [variance] * 10
    _assert_same_subspaces(fitted, ref.fit_subspaces_ref(x, y, 10, variance), name=f"t={variance}")


def test_whole_number_variance_is_capped_at_rank():
    x, y = _low_rank(n=60, dim=30, num_classes=3)  # 20 rows per class, rank <= 20
    fitted = _fit(x, y, 3, 25)
    assert fitted.num_components.tolist() == [20, 20, 20]
    _assert_same_subspaces(fitted, ref.fit_subspaces_ref(x, y, 3, 25), name="capped")


def test_bases_are_orthonormal(digits):
    x, y = digits
    for label, basis in enumerate(_fit(x, y, 10).bases):
        eye = torch.eye(basis.shape[1], dtype=torch.float64)
        assert_close_report(basis.T @ basis, eye, 1e-12, 0.0, f"UᵀU of class {label}")


def test_explained_variance_exceeds_threshold(digits):
    x, y = digits
    fitted = _fit(x, y, 10, 0.9)
    assert bool((fitted.explained_variance > 0.9).all())


# ---------------------------------------------------------------- streaming


def _grams(accumulator: GramAccumulator) -> torch.Tensor:
    accumulator.flush()
    return accumulator.gram.clone()


def test_streaming_any_split_equals_one_batch():
    x, y = _low_rank(n=1000)
    whole = GramAccumulator(4, 40)
    whole.update(x, y)
    pieces = GramAccumulator(4, 40)
    for lo, hi in [(0, 1), (1, 8), (8, 300), (300, 301), (301, 777), (777, 1000)]:
        pieces.update(x[lo:hi], y[lo:hi])
    reordered = GramAccumulator(4, 40)
    order = torch.randperm(1000)
    for chunk in order.split(97):
        reordered.update(x[chunk], y[chunk])
    first, second = GramAccumulator(4, 40), GramAccumulator(4, 40)
    first.update(x[:450], y[:450])
    second.update(x[450:], y[450:])
    merged = first.merge(second)
    expected = _grams(whole)
    for name, other in [("uneven", pieces), ("reordered", reordered), ("merged", merged)]:
        assert_close_report(_grams(other), expected, 1e-9, 1e-12, f"{name} Gram")
        assert other.counts.tolist() == whole.counts.tolist()
        _assert_same_subspaces(
            other.fit(0.99), [b.numpy() for b in whole.fit(0.99).bases], name=name
        )


def test_streaming_flushes_between_updates():
    # More rows than the staging threshold (1024 × K) so several flushes happen mid-stream.
    x, y = _low_rank(n=3000, num_classes=2, dim=12, rank=4)
    streamed = GramAccumulator(2, 12)
    for chunk in torch.arange(3000).split(700):
        streamed.update(x[chunk], y[chunk])
    expected = torch.stack([x[y == k].T @ x[y == k] for k in range(2)])
    assert_close_report(_grams(streamed), expected, 1e-9, 1e-12, "Gram")


def test_refitting_forgets_previous_data():
    x1, y1 = _low_rank(seed=1)
    x2, y2 = _low_rank(seed=2)
    first = _fit(x1, y1, 4)
    second = _fit(x2, y2, 4)
    _assert_same_subspaces(second, ref.fit_subspaces_ref(x2, y2, 4), name="second fit")
    _assert_same_subspaces(first, ref.fit_subspaces_ref(x1, y1, 4), name="first fit")


def test_fit_twice_from_one_accumulator_is_idempotent():
    x, y = _low_rank()
    accumulator = GramAccumulator(4, 40)
    accumulator.update(x, y)
    one, two = accumulator.fit(0.99), accumulator.fit(0.99)
    _assert_same_subspaces(two, [b.numpy() for b in one.bases], name="refit")


def test_merge_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="3 classes × 5 features into one of 2 × 5"):
        GramAccumulator(2, 5).merge(GramAccumulator(3, 5))


# ---------------------------------------------------------------- thresholds


def test_with_lower_variance_equals_fresh_fit(digits):
    x, y = digits
    high = _fit(x, y, 10, 0.99)
    for variance in (0.95, 0.8, 0.5, 2):
        lowered = high.with_variance(variance)
        fresh = _fit(x, y, 10, variance)
        assert lowered.num_components.tolist() == fresh.num_components.tolist()
        _assert_same_subspaces(lowered, [b.numpy() for b in fresh.bases], name=f"t={variance}")


def test_with_variance_needing_more_components_raises(digits):
    x, y = digits
    low = _fit(x, y, 10, 0.5)
    with pytest.raises(ValueError, match=r"class 0 needs \d+ components at variance 0.99"):
        low.with_variance(0.99)


# ---------------------------------------------------------------- scoring properties


def test_scores_invariant_to_scale_and_sign(digits):
    x, y = digits
    fitted = _fit(x, y, 10)
    base = fitted.scores(x)
    for factor in (1e-3, 7.5, -1.0, -250.0):
        assert_close_report(fitted.scores(factor * x), base, *F64, f"scores of {factor}·x")
    signs = np.where(np.arange(len(x)) % 2 == 0, 1.0, -1.0)[:, None]
    assert_close_report(fitted.scores(signs * x), base, *F64, "scores with row signs flipped")


def test_angles_are_arccos_of_root_scores(digits):
    x, y = digits
    fitted = _fit(x, y, 10)
    angles, scores = fitted.angles(x[:200]), fitted.scores(x[:200])
    assert_close_report(angles, np.degrees(np.arccos(np.sqrt(scores))), 1e-9, 0.0, "angles")
    assert_close_report(
        angles,
        ref.angles_ref(x[:200], ref.fit_subspaces_ref(x, y, 10)),
        1e-4,
        0.0,
        "angles vs reference",
    )  # arccos near 0: √ amplifies rounding


def test_scores_lie_in_unit_interval_and_training_rows_fit_their_class():
    x, y = _low_rank()
    scores = _fit(x, y, 4).scores(x)
    assert bool(((scores >= 0) & (scores <= 1)).all())
    own = scores[torch.arange(len(y)), y]
    assert float(own.mean()) > 0.9


def test_zero_row_scores_zero_and_predicts_lowest_class():
    x, y = _low_rank()
    fitted = _fit(x, y, 4)
    rows = torch.cat([torch.zeros(1, 40, dtype=torch.float64), x[:3]])
    scores = fitted.scores(rows)
    assert not bool(torch.isnan(scores).any())
    assert scores[0].tolist() == [0.0] * 4
    assert fitted.angles(rows)[0].tolist() == [90.0] * 4
    assert int(fitted.predict(rows)[0]) == 0


def test_zero_row_predicts_lowest_present_class():
    x, y = _low_rank()
    keep = y != 0
    with pytest.warns(EmptyClassWarning, match="class 0 has no training rows"):
        fitted = _fit(x[keep], y[keep], 4)
    zero = torch.zeros(2, 40, dtype=torch.float64)
    assert fitted.predict(zero).tolist() == [1, 1]
    assert not bool(torch.isnan(fitted.scores(zero)).any())


def test_exact_ties_go_to_the_lowest_class():
    # Classes 1 and 2 get identical rows, hence identical Grams, bases and (bitwise) scores.
    x, _ = _low_rank(n=300, num_classes=1)
    rows = torch.cat([x, x, x[:100] * -3.0])
    labels = torch.cat([torch.full((300,), 1), torch.full((300,), 2), torch.full((100,), 3)])
    with pytest.warns(EmptyClassWarning, match="class 0 has no training rows"):
        fitted = _fit(rows, labels, 4)
    scores = fitted.scores(x)
    assert torch.equal(scores[:, 1], scores[:, 2])
    pred = fitted.predict(x)
    assert bool((pred != 2).all())
    assert bool((pred[scores[:, 1] >= scores[:, 3]] == 1).all())


# ---------------------------------------------------------------- absent classes


def test_empty_class_is_left_out_with_warning():
    x, y = _low_rank()
    keep = y != 2
    with pytest.warns(EmptyClassWarning, match="class 2 has no training rows"):
        fitted = _fit(x[keep], y[keep], 4)
    assert fitted.num_components[2] == 0
    assert fitted.bases[2] is None
    assert fitted.present.tolist() == [True, True, False, True]
    assert not bool((fitted.predict(x) == 2).any())
    assert bool((fitted.scores(x)[:, 2] == 0).all())
    ref_bases = ref.fit_subspaces_ref(x[keep], y[keep], 4)
    assert_labels_match(
        fitted.predict(x),
        ref.predict_ref(x, ref_bases),
        ref.subspace_scores_ref(x, ref_bases),
        F64[0],
        0.001,
    )


def test_all_zero_class_rows_are_left_out_with_warning():
    x, y = _low_rank()
    x = x.clone()
    x[y == 1] = 0.0
    with pytest.warns(EmptyClassWarning, match=r"class 1 has only all-zero rows \(\d+\)"):
        fitted = _fit(x, y, 4)
    assert fitted.num_components[1] == 0
    assert not bool((fitted.predict(x) == 1).any())


def test_no_class_present_cannot_score():
    with pytest.warns(EmptyClassWarning):
        fitted = GramAccumulator(2, 3).fit()
    with pytest.raises(ValueError, match="no class has a subspace"):
        fitted.predict(torch.ones(1, 3, dtype=torch.float64))


# ---------------------------------------------------------------- storage and types


def test_save_load_roundtrip(tmp_path, digits):
    x, y = digits
    accumulator = GramAccumulator(11, 64, layer="fc1")
    accumulator.update(x, y)
    with pytest.warns(EmptyClassWarning):
        fitted = accumulator.fit(0.95)
    path = tmp_path / "subspaces.safetensors"
    fitted.save(path)
    assert os.listdir(tmp_path) == ["subspaces.safetensors"]  # no temporary file left
    loaded = ClassSubspaces.load(path)
    assert loaded.num_components.tolist() == fitted.num_components.tolist()
    assert loaded.layer == "fc1" and loaded.variance == 0.95 and loaded.dim == 64
    assert loaded.counts.tolist() == fitted.counts.tolist()
    assert np.array_equal(loaded.predict(x), fitted.predict(x))
    assert np.array_equal(loaded.scores(x), fitted.scores(x))
    lowered = loaded.with_variance(0.9)
    assert lowered.num_components.tolist() == fitted.with_variance(0.9).num_components.tolist()


def test_numpy_in_numpy_out_torch_in_torch_out(digits):
    x, y = digits
    fitted = _fit(x, y, 10)
    for method in ("scores", "predict", "angles"):
        from_numpy = getattr(fitted, method)(x[:5])
        from_torch = getattr(fitted, method)(torch.from_numpy(x[:5]))
        assert isinstance(from_numpy, np.ndarray), method
        assert isinstance(from_torch, torch.Tensor), method
        assert np.array_equal(from_numpy, from_torch.numpy())
    assert fitted.predict(x[:5]).dtype == np.int64


def test_float32_input_scores_in_float32(digits):
    x, y = digits
    fitted = _fit(x, y, 10)
    x32 = x.astype(np.float32)
    scores = fitted.scores(x32)
    assert scores.dtype == np.float32
    assert_close_report(scores, fitted.scores(x), *TOLERANCES[torch.float32], "float32 scores")


def test_class_with_fewer_rows_than_features():
    x, y = _low_rank(n=400, dim=40, num_classes=4)
    few = torch.cat([(y == 0).nonzero().flatten()[:7], (y != 0).nonzero().flatten()])
    x, y = x[few], y[few]
    fitted = _fit(x, y, 4)
    ref_bases = ref.fit_subspaces_ref(x, y, 4)
    assert fitted.num_components[0] <= 7
    _assert_same_subspaces(fitted, ref_bases, name="few rows")


def test_one_class():
    x, _ = _low_rank(n=200, num_classes=1)
    y = torch.zeros(200, dtype=torch.int64)
    fitted = _fit(x, y, 1)
    _assert_same_subspaces(fitted, ref.fit_subspaces_ref(x, y, 1), name="one class")
    assert fitted.predict(x).tolist() == [0] * 200


@pytest.mark.parametrize("dim", [7, 129])
def test_dim_not_power_of_two(dim):
    x, y = structured_classes(600, dim, 3, rank=5, noise=0.02, seed=dim, dtype=torch.float64)
    fitted = _fit(x, y, 3)
    ref_bases = ref.fit_subspaces_ref(x, y, 3)
    _assert_same_subspaces(fitted, ref_bases, name=f"d={dim}")
    ref_scores = ref.subspace_scores_ref(x, ref_bases)
    assert_close_report(fitted.scores(x), ref_scores, *F64, f"scores d={dim}")


def test_float32_accumulation_close_to_reference(digits):
    x, y = digits
    accumulator = GramAccumulator(10, 64, dtype=torch.float32)
    accumulator.update(x.astype(np.float32), y)
    fitted = accumulator.fit(0.9)
    ref_bases = ref.fit_subspaces_ref(x, y, 10, 0.9)
    ref_scores = ref.subspace_scores_ref(x, ref_bases)
    assert_labels_match(
        fitted.predict(x),
        ref.predict_ref(x, ref_bases),
        ref_scores,
        score_tol=1e-3,
        max_excused_fraction=0.005,
    )
