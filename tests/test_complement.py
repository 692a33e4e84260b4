"""Complement scoring: a class keeping r_k > d/2 components is scored as 1 − ‖W_kᵀx‖²/‖x‖².

Checked against float64 projections on the class's own basis ``U_k`` (never through the
complement), on random subspaces where the score is near 1 (x almost inside the subspace) and
near 0 (almost orthogonal, where ‖x‖² − ‖W_kᵀx‖² cancels), and on real data (scikit-learn's
digits, whose classes keep 35–41 of 64 components at t = 0.999).

Tolerances (float32 rows): 2e-6 absolute on scores in [0, 1]. The complement's energy carries
the float32 products' relative error ~√d·u ≈ 3e-7 (d = 24…64), and the subtraction turns it
into the same absolute error of the score; 2e-6 is about 6× that and still 1000× below the
score gaps that decide labels here. float64 rows: 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match

import masc_fast
from masc_fast import ClassSubspaces
from masc_fast.backends import get_backend
from masc_fast.linalg.spectra import ClassEigen
from masc_fast.probing.threshold_scoring import DEFAULT_THRESHOLDS, ThresholdScorer, fit_variance
from masc_fast.reference import fit_subspaces_ref, subspace_scores_ref

ATOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _orthonormal(dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64, generator=generator)).Q


def _fit(dim: int, ranks: list[int], seed: int = 0, variance: float = 0.99) -> ClassSubspaces:
    """Classes with orthonormal eigenvectors, all d kept, and spectra giving r_k at t = 0.99
    (a rank of 0 gives the spectrum 0.7^j instead: r = 13 at 0.99, 20 at 0.999)."""
    eigens = []
    for label, rank in enumerate(ranks):
        vectors = _orthonormal(dim, seed + label)
        values = (
            torch.cat([torch.ones(rank, dtype=torch.float64), torch.full((dim - rank,), 1e-6)])
            if rank
            else 0.7 ** torch.arange(dim, dtype=torch.float64)
        )
        eigens.append(ClassEigen(values, vectors, float(values.sum()), dim, "exact"))
    counts = torch.full((len(ranks),), 100)
    return ClassSubspaces(eigens, dim=dim, variance=variance, counts=counts)


def _same_labels(pred, scores: np.ndarray, name: str) -> None:
    """Labels equal the float64 argmax except at near-ties (gap < 1e-5), at most 1 %."""
    assert_labels_match(pred, scores.argmax(axis=1), scores, 1e-5, 0.01, name=name)


def _direct_scores(x: torch.Tensor, fitted: ClassSubspaces) -> np.ndarray:
    """float64 ‖U_kᵀx‖²/‖x‖² on every class's own kept basis."""
    return subspace_scores_ref(x.double(), [basis.numpy() for basis in fitted.bases])


def _rows_near(fitted: ClassSubspaces, label: int, inside: float, seed: int) -> torch.Tensor:
    """Rows with a fraction ``inside`` of their energy in class ``label``'s subspace."""
    generator = torch.Generator().manual_seed(seed)
    basis = fitted.bases[label]
    vectors = fitted.eigenvectors[label]
    outside = vectors[:, basis.shape[1] :]
    a = torch.randn(200, basis.shape[1], dtype=torch.float64, generator=generator)
    b = torch.randn(200, outside.shape[1], dtype=torch.float64, generator=generator)
    a = a / a.norm(dim=1, keepdim=True) * inside**0.5
    b = b / b.norm(dim=1, keepdim=True) * (1 - inside) ** 0.5
    return (a @ basis.T + b @ outside.T) * 3.7


def test_classes_keeping_more_than_half_are_flagged_and_packed_narrow():
    fitted = _fit(24, [20, 5, 13, 12])
    assert fitted.num_components.tolist() == [20, 5, 13, 12]
    assert fitted.complement.tolist() == [True, False, True, False]  # 12 = d/2 stays direct
    basis, offsets, complement = fitted.packed(torch.float32, "cpu")
    assert torch.diff(offsets).tolist() == [4, 5, 11, 12]
    assert basis.shape == (24, 32)
    assert torch.equal(complement, fitted.complement)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("inside", [1 - 1e-5, 0.5, 1e-5], ids=["near-1", "middle", "near-0"])
def test_every_backend_matches_float64_projections(backend, dtype, inside):
    fitted = _fit(24, [20, 5, 13, 12], seed=3)
    x = torch.cat([_rows_near(fitted, label, inside, seed=label) for label in range(4)]).to(dtype)
    expected = _direct_scores(x, fitted)
    basis, offsets, complement = fitted.packed(dtype, "cpu")
    ops = get_backend(backend)
    scores, pred = ops.subspace_scores(x, basis, offsets, complement=complement)
    assert_close_report(scores, expected, ATOL[dtype], 0.0, f"{backend} {dtype} scores")
    assert float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    _same_labels(pred, expected, f"{backend} predictions")


def test_a_class_keeping_every_dimension_scores_one(backend):
    fitted = _fit(8, [8, 2])
    basis, offsets, complement = fitted.packed(torch.float64, "cpu")
    assert torch.diff(offsets).tolist() == [0, 2] and complement.tolist() == [True, False]
    x = torch.randn(5, 8, dtype=torch.float64)
    x[0] = 0.0
    scores, pred = get_backend(backend).subspace_scores(x, basis, offsets, complement=complement)
    assert scores[1:, 0].tolist() == [1.0] * 4 and scores[0].tolist() == [0.0, 0.0]
    assert pred.tolist() == [0] * 5  # present although its segment is empty


def test_digits_at_0999_are_scored_through_the_complement_like_the_reference(digits):
    x, y = digits
    x = torch.from_numpy(x).float()
    y = torch.from_numpy(y)
    accumulator = masc_fast.GramAccumulator(10, 64)
    accumulator.update(x[:1400], y[:1400])
    fitted = accumulator.fit(0.999)
    assert bool(fitted.complement.all())  # 35-41 components of 64
    assert int(torch.diff(fitted.packed(torch.float32, "cpu").offsets).sum()) < 640 - 320
    bases = fit_subspaces_ref(x[:1400].double(), y[:1400], 10, 0.999)
    assert [b.shape[1] for b in bases] == fitted.num_components.tolist()
    expected = subspace_scores_ref(x[1400:].double(), bases)
    result = fitted.score(x[1400:])
    assert_close_report(result.scores, expected, 2e-6, 0.0, "digits scores")
    _same_labels(result.pred, expected, "digits predictions")


def test_the_choice_survives_save_and_load_and_rethresholding(tmp_path, digits):
    x, y = digits
    accumulator = masc_fast.GramAccumulator(10, 64)
    accumulator.update(torch.from_numpy(x), torch.from_numpy(y))
    fitted = accumulator.fit(0.999)
    fitted.save(tmp_path / "fit.safetensors")
    loaded = ClassSubspaces.load(tmp_path / "fit.safetensors")
    assert torch.equal(loaded.complement, fitted.complement)
    assert np.array_equal(loaded.predict(x), fitted.predict(x))
    lower = fitted.with_variance(0.9)
    assert not bool(lower.complement.any())  # ≤ 32 components: scored directly
    assert np.array_equal(lower.predict(x), accumulator.fit(0.9).predict(x))


def test_threshold_sweep_reads_large_cuts_as_suffix_sums():
    fitted = _fit(24, [0, 0, 3], seed=5, variance=fit_variance(DEFAULT_THRESHOLDS))
    scorer = ThresholdScorer(fitted, DEFAULT_THRESHOLDS)
    assert scorer.num_components[:, 0].tolist() == [1, 2, 4, 7, 9, 13, 19, 1]
    # Class 0: prefix V[:, :13] for t <= 0.99, suffix V[:, 19:] for t = 0.999: 18 columns
    # against 19; class 2 (3 components) stays a prefix.
    assert torch.diff(scorer.layout.offsets).tolist() == [18, 18, 3]
    assert scorer.layout.complement[:, 0].tolist() == [False] * 6 + [True, False]
    x = torch.cat([_rows_near(fitted, label, 0.9, seed=label) for label in range(3)]).float()
    result = scorer.score(x, return_scores=True)
    for index, threshold in enumerate(scorer.thresholds):
        expected = _direct_scores(x, scorer.subspaces_at[threshold])
        assert_close_report(result.scores[index], expected, 2e-6, 0.0, f"t={threshold}")
        _same_labels(result.pred[index], expected, f"t={threshold}")


def test_cpp_binding_names_a_bad_complement():
    ext = pytest.importorskip("masc_fast._C")
    x, basis = np.ones((2, 3)), np.eye(3)[:, :2].copy()
    offsets = np.array([0, 1, 2])
    with pytest.raises(TypeError, match="complement must be uint8 or bool"):
        ext.subspace_scores(x, basis, offsets, 4, 1, np.zeros(2, np.int32))
    with pytest.raises(ValueError, match=r"complement must have one entry per class \(2\)"):
        ext.subspace_scores(x, basis, offsets, 4, 1, np.zeros(3, np.uint8))
