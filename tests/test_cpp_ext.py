"""Tests of the compiled extension ``masc_fast._C`` and its adapter ``backends.cpp_ops``.

Everything is checked against an independent float64 NumPy computation written here.
The tests skip when the extension is not built, unless ``MASC_FAST_REQUIRE`` names ``cpp``
(CI), in which case they fail.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import numpy as np
import pytest

# Inputs to _C are exactly representable in both paths (the reference upcasts the same float32
# arrays), so the only differences are the final rounding to the dtype and summation order.
_C_TOLERANCE = {np.float32: (1e-6, 1e-5), np.float64: (1e-12, 1e-10)}
# cpp_ops also runs the GEMM in the input dtype: float32 loses ~d·eps relative in the projection.
_OPS_TOLERANCE = {np.float32: (1e-5, 1e-4), np.float64: (1e-12, 1e-10)}
_DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def _cpp_required() -> bool:
    requested = os.environ.get("MASC_FAST_REQUIRE", "")
    return "cpp" in {part.strip() for part in requested.split(",")}


@pytest.fixture(scope="module")
def ext():
    try:
        return importlib.import_module("masc_fast._C")
    except ImportError as exc:
        reason = f"masc_fast._C is not built: {exc}"
        if _cpp_required():
            pytest.fail(f"MASC_FAST_REQUIRE includes 'cpp' but {reason}")
        pytest.skip(reason)


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _projection_scores_np(proj, offsets, sq_norms):
    """Float64 reference of the _C.projection_scores contract."""
    proj = np.asarray(proj, dtype=np.float64)
    sq_norms = np.asarray(sq_norms, dtype=np.float64)
    n, k = proj.shape[0], len(offsets) - 1
    scores = np.zeros((n, k))
    positive = sq_norms > 0
    for c in range(k):
        energy = np.sum(proj[:, offsets[c] : offsets[c + 1]] ** 2, axis=1)
        scores[positive, c] = np.minimum(energy[positive] / sq_norms[positive], 1.0)
    present = np.diff(offsets) > 0
    if not present.any():
        return scores, np.full(n, -1, dtype=np.int64)
    masked = np.where(present, scores, -np.inf)
    return scores, np.argmax(masked, axis=1).astype(np.int64)


def _random_case(rng, n, lengths, dtype):
    offsets = _offsets(lengths)
    proj = rng.standard_normal((n, offsets[-1])).astype(dtype)
    energy = np.sum(proj.astype(np.float64) ** 2, axis=1)
    # ‖x‖² exceeds the captured energy, as for orthonormal bases, so scores stay below 1.
    sq_norms = (energy + rng.uniform(0.5, 3.0, n)).astype(dtype)
    return proj, offsets, sq_norms


def _assert_matches(scores, pred, ref_scores, ref_pred, dtype, tolerance):
    atol, rtol = tolerance[dtype]
    assert scores.dtype == dtype and pred.dtype == np.int64
    assert scores.shape == ref_scores.shape and pred.shape == ref_pred.shape
    np.testing.assert_allclose(scores, ref_scores, atol=atol, rtol=rtol)
    # Labels may differ only where the reference's top two scores are within tolerance.
    differ = pred != ref_pred
    if differ.any():
        top2 = np.sort(ref_scores[differ], axis=1)[:, -2:]
        gaps = top2[:, 1] - top2[:, 0]
        assert np.all(gaps <= atol + rtol), f"{differ.sum()} labels differ beyond near-ties"


_SHAPES = [
    pytest.param(1, [5], id="n1-k1-r5"),
    pytest.param(23, [1], id="n23-k1-r1"),
    pytest.param(37, [3, 1, 7, 1, 2], id="n37-k5-r14"),
    pytest.param(64, [1, 1, 1, 1, 1, 1], id="n64-k6-seg1"),
    pytest.param(101, [13, 29, 5, 17], id="n101-k4-r64"),
    pytest.param(9, [4, 0, 3], id="n9-k3-absent-middle"),
    pytest.param(9, [0, 3, 2], id="n9-k3-absent-first"),
]


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(("n", "lengths"), _SHAPES)
def test_projection_scores_matches_reference(ext, n, lengths, dtype):
    rng = np.random.default_rng(1234)
    proj, offsets, sq_norms = _random_case(rng, n, lengths, dtype)
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    ref_scores, ref_pred = _projection_scores_np(proj, offsets, sq_norms)
    _assert_matches(scores, pred, ref_scores, ref_pred, dtype, _C_TOLERANCE)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_absent_class_never_predicted(ext, dtype):
    rng = np.random.default_rng(7)
    proj, offsets, sq_norms = _random_case(rng, 50, [0, 2, 0, 3, 0], dtype)
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    assert np.all(scores[:, [0, 2, 4]] == 0)
    assert set(np.unique(pred)) <= {1, 3}


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_no_class_present(ext, dtype):
    rng = np.random.default_rng(8)
    proj = np.empty((4, 0), dtype=dtype)
    sq_norms = rng.uniform(0.5, 2.0, 4).astype(dtype)
    scores, pred = ext.projection_scores(proj, np.zeros(3, dtype=np.int64), sq_norms)
    assert scores.shape == (4, 2) and np.all(scores == 0)
    assert np.all(pred == -1)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_zero_row(ext, dtype):
    rng = np.random.default_rng(9)
    proj, offsets, sq_norms = _random_case(rng, 6, [0, 3, 2, 4], dtype)
    proj[2] = 0
    sq_norms[2] = 0
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    assert np.all(scores[2] == 0) and not np.isnan(scores).any()
    assert pred[2] == 1  # lowest present class: class 0 is absent


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_zero_norm_nonzero_projection(ext, dtype):
    rng = np.random.default_rng(10)
    proj, offsets, sq_norms = _random_case(rng, 5, [2, 3], dtype)
    sq_norms[:] = 0
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    assert np.all(scores == 0) and np.all(pred == 0)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_clamped_to_one(ext, dtype):
    rng = np.random.default_rng(11)
    proj, offsets, _ = _random_case(rng, 8, [3, 4], dtype)
    # Rounding can make the captured energy exceed ‖x‖²; the score must still be <= 1.
    sq_norms = (0.5 * np.sum(proj[:, :3].astype(np.float64) ** 2, axis=1)).astype(dtype)
    scores, _ = ext.projection_scores(proj, offsets, sq_norms)
    assert np.all(scores[:, 0] == 1)
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_ties_go_to_lowest_class(ext, dtype):
    rng = np.random.default_rng(12)
    offsets = _offsets([3, 2, 3, 3])
    proj = rng.standard_normal((10, offsets[-1])).astype(dtype)
    # Classes 2 and 3 get the same values in the same order, so their energies tie exactly,
    # and they are scaled up to beat classes 0 and 1.
    proj[:, 5:8] = 10 * rng.standard_normal((10, 3)).astype(dtype)
    proj[:, 8:11] = proj[:, 5:8]
    sq_norms = (np.sum(proj.astype(np.float64) ** 2, axis=1) + 1).astype(dtype)
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    assert np.array_equal(scores[:, 2], scores[:, 3])
    assert np.all(pred == 2)


def test_projection_scores_pred_is_argmax_of_returned_scores(ext):
    rng = np.random.default_rng(13)
    proj, offsets, sq_norms = _random_case(rng, 200, [2, 5, 0, 1, 9], np.float32)
    scores, pred = ext.projection_scores(proj, offsets, sq_norms)
    present = np.diff(offsets) > 0
    assert np.array_equal(pred, np.argmax(np.where(present, scores, -np.inf), axis=1))


@pytest.mark.parametrize(
    ("proj_dtype", "offsets_dtype", "sq_dtype"),
    [
        pytest.param(np.float32, np.int64, np.float64, id="mixed-float"),
        pytest.param(np.float64, np.int32, np.float64, id="int32-offsets"),
        pytest.param(np.int64, np.int64, np.int64, id="integer-proj"),
        pytest.param(np.float16, np.int64, np.float16, id="float16"),
    ],
)
def test_projection_scores_wrong_dtype_raises_type_error(ext, proj_dtype, offsets_dtype, sq_dtype):
    proj = np.ones((3, 4), dtype=proj_dtype)
    offsets = np.array([0, 1, 4], dtype=offsets_dtype)
    with pytest.raises(TypeError):
        ext.projection_scores(proj, offsets, np.ones(3, dtype=sq_dtype))


def test_projection_scores_non_contiguous_raises_type_error(ext):
    proj = np.asfortranarray(np.random.default_rng(14).standard_normal((3, 4)))
    with pytest.raises(TypeError):
        ext.projection_scores(proj, np.array([0, 1, 4]), np.ones(3))


@pytest.mark.parametrize(
    "offsets",
    [
        pytest.param([1, 2, 4], id="first-not-zero"),
        pytest.param([0, 2, 5], id="last-not-r"),
        pytest.param([0, 3, 1, 4], id="decreasing"),
        pytest.param([], id="empty"),
        pytest.param([[0, 2, 4]], id="2d"),
    ],
)
def test_projection_scores_bad_offsets_raise_value_error(ext, offsets):
    proj = np.random.default_rng(15).standard_normal((3, 4))
    with pytest.raises(ValueError, match="offsets"):
        ext.projection_scores(proj, np.array(offsets, dtype=np.int64), np.ones(3))


def test_projection_scores_bad_proj_shape_raises_value_error(ext):
    with pytest.raises(ValueError, match="proj"):
        ext.projection_scores(np.ones(4), np.array([0, 4], dtype=np.int64), np.ones(1))


def test_projection_scores_bad_sq_norms_length_raises_value_error(ext):
    proj = np.random.default_rng(16).standard_normal((3, 4))
    with pytest.raises(ValueError, match="sq_norms"):
        ext.projection_scores(proj, np.array([0, 4], dtype=np.int64), np.ones(2))


def test_ext_version_matches_package(ext):
    text = (Path(__file__).parents[1] / "masc_fast" / "_version.py").read_text(encoding="utf-8")
    version = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text).group(1)
    assert ext.__version__ == version


# --- the adapter -----------------------------------------------------------------------------


def _orthonormal_bases(rng, d, ranks):
    blocks = [np.linalg.qr(rng.standard_normal((d, r)))[0] for r in ranks]
    basis = np.concatenate(blocks, axis=1) if blocks else np.empty((d, 0))
    return basis, _offsets(ranks)


def _subspace_scores_np(x, basis, offsets):
    x = np.asarray(x, dtype=np.float64)
    proj = x @ np.asarray(basis, dtype=np.float64)
    return _projection_scores_np(proj, offsets, np.sum(x**2, axis=1))


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(
    "block_rows", [pytest.param(7, id="block7"), pytest.param(None, id="default")]
)
def test_cpp_ops_subspace_scores_matches_reference(ext, dtype, block_rows):
    import torch

    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(21)
    n, d = 52, 19
    basis, offsets = _orthonormal_bases(rng, d, [4, 0, 1, 7, 3])
    x = rng.standard_normal((n, d)).astype(dtype)
    x[5] = 0  # defined score 0 below the validation boundary
    scores, pred = cpp_ops.subspace_scores(
        torch.from_numpy(x),
        torch.from_numpy(basis.astype(dtype)),
        torch.from_numpy(offsets),
        block_rows=block_rows,
    )
    ref_scores, ref_pred = _subspace_scores_np(x, basis.astype(dtype), offsets)
    assert scores.dtype == torch.from_numpy(x).dtype and pred.dtype == torch.int64
    _assert_matches(scores.numpy(), pred.numpy(), ref_scores, ref_pred, dtype, _OPS_TOLERANCE)


def test_cpp_ops_subspace_scores_non_contiguous_input(ext):
    import torch

    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(22)
    basis, offsets = _orthonormal_bases(rng, 11, [2, 3])
    x = rng.standard_normal((11, 30))
    scores, pred = cpp_ops.subspace_scores(
        torch.from_numpy(x).T, torch.from_numpy(basis), torch.from_numpy(offsets), block_rows=4
    )
    ref_scores, ref_pred = _subspace_scores_np(x.T, basis, offsets)
    _assert_matches(scores.numpy(), pred.numpy(), ref_scores, ref_pred, np.float64, _OPS_TOLERANCE)


def test_cpp_ops_is_available(ext):
    from masc_fast.backends import cpp_ops

    assert cpp_ops.is_available() == (True, "")
