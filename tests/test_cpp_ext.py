"""Tests of the compiled extension ``masc_fast._C`` and its adapter ``backends.cpp_ops``.

The ops (fused scoring, class-bucketed Gram update) are checked against independent float64
NumPy computations written here, on random, low-rank and real (digits, MNIST-1D) data, at
awkward shapes and with 1 and 2 threads. The tests skip when the extension is not built, unless
``MASC_FAST_REQUIRE`` names ``cpp`` (CI), in which case they fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests._compare import assert_close_report, assert_labels_match

# Inputs are exactly representable in both paths (the reference upcasts the same arrays). In
# float32 the GEMM's products and sums are float32: each projection coefficient is off by about
# √d·u relative, squared and summed into a score, so ~1e-6 typical; 1e-5 / 1e-4 is ~10× that.
# In float64 the only difference is summation order.
_SCORE_TOLERANCE = {np.float32: (1e-5, 1e-4), np.float64: (1e-12, 1e-10)}
# Gram entries relative to the largest |entry|: float32 products over a bucket of <= 1024 rows
# lose ~√m·u ≈ 2e-6 of the entry scale; 2e-5 leaves headroom. float64: summation order only.
_GRAM_RELATIVE = {np.float32: 2e-5, np.float64: 1e-12}
# Labels may differ from the reference only at near-ties, at most this fraction of rows.
_MAX_EXCUSED = 0.01
_DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
_THREADS = [pytest.param(1, id="threads1"), pytest.param(2, id="threads2")]
HAS_MNIST1D = importlib.util.find_spec("mnist1d") is not None


def _cpp_required() -> bool:
    requested = os.environ.get("MASC_FAST_REQUIRE", "")
    return "cpp" in {part.strip() for part in requested.split(",")}


@pytest.fixture(scope="module", params=["scipy", "mkl"], ids=["gemm-scipy", "gemm-mkl"])
def ext(request):
    """The extension with its GEMMs from SciPy's BLAS, then from torch's MKL (skipped where
    torch has none): every op test runs on both (:mod:`masc_fast.backends.cpu_gemm`)."""
    from masc_fast.backends.cpu_gemm import choose_gemm, torch_mkl_gemm

    try:
        module = importlib.import_module("masc_fast._C")
    except ImportError as exc:
        reason = f"masc_fast._C is not built: {exc}"
        if _cpp_required():
            pytest.fail(f"MASC_FAST_REQUIRE includes 'cpp' but {reason}")
        pytest.skip(reason)
    if request.param == "mkl" and torch_mkl_gemm()[0] is None:
        pytest.skip(f"no MKL GEMM in torch: {torch_mkl_gemm()[1]}")
    choose_gemm(module, request.param)
    assert ("MKL" in module.blas_source()) == (request.param == "mkl")
    yield module
    choose_gemm(module)  # back to the default choice


@pytest.fixture
def one_blas_thread(ext):
    """The ops' contract: the BLAS pool runs one thread around each direct ``_C`` call."""
    from masc_fast.backends import cpp_ops

    with cpp_ops._single_threaded_blas():
        yield


# --- independent float64 references -----------------------------------------------------------


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _orthonormal_bases(rng, d, ranks):
    blocks = [np.linalg.qr(rng.standard_normal((d, r)))[0] for r in ranks]
    basis = np.concatenate(blocks, axis=1) if blocks else np.empty((d, 0))
    return basis, _offsets(ranks)


def _scores_np(x, basis, offsets):
    """cos² per class and the first best present class, in float64, loop per class."""
    x = np.asarray(x, dtype=np.float64)
    basis = np.asarray(basis, dtype=np.float64)
    sq_norms = np.sum(x**2, axis=1)
    k = len(offsets) - 1
    scores = np.zeros((x.shape[0], k))
    positive = sq_norms > 0
    for c in range(k):
        energy = np.sum((x @ basis[:, offsets[c] : offsets[c + 1]]) ** 2, axis=1)
        scores[positive, c] = np.minimum(energy[positive] / sq_norms[positive], 1.0)
    present = np.diff(offsets) > 0
    if not present.any():
        return scores, np.full(x.shape[0], -1, dtype=np.int64)
    return scores, np.argmax(np.where(present, scores, -np.inf), axis=1).astype(np.int64)


def _gram_np(x, labels, k):
    x = np.asarray(x, dtype=np.float64)
    return np.stack([x[labels == c].T @ x[labels == c] for c in range(k)])


def _low_rank_rows(rng, n, d, rank, dtype):
    """Rows near a rank-``rank`` subspace plus 1% noise: non-trivial spectra, never zeros."""
    factors = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d))
    return (factors + 0.01 * rng.standard_normal((n, d))).astype(dtype)


def _assert_scores(scores, pred, ref_scores, ref_pred, dtype, offsets=None):
    atol, rtol = _SCORE_TOLERANCE[dtype]
    assert scores.dtype == dtype and pred.dtype == np.int64
    assert_close_report(scores, ref_scores, atol, rtol, "scores")
    if (ref_pred < 0).any():  # no class present: nothing to excuse
        assert np.array_equal(pred, ref_pred)
        return
    present = None if offsets is None else np.diff(offsets) > 0
    assert_labels_match(pred, ref_pred, ref_scores, atol + rtol, _MAX_EXCUSED, present=present)


def _assert_gram(gram, x, labels, dtype):
    ref = _gram_np(x, labels, gram.shape[0])
    scale = max(1.0, float(np.abs(ref).max()))
    assert_close_report(gram, ref, _GRAM_RELATIVE[dtype] * scale, 0.0, "gram")
    assert np.array_equal(gram, np.swapaxes(gram, 1, 2)), "gram is not exactly symmetric"


# --- _C.subspace_scores ------------------------------------------------------------------------

# (n, d, ranks, block_rows): one row, d = 1, d prime, R not a multiple of the block, K = 1,
# K = 200, absent classes, n not a multiple of the block.
_SCORE_SHAPES = [
    pytest.param(1, 7, [2, 3, 1], 4, id="n1-d7-k3"),
    pytest.param(40, 1, [1, 0, 1], 16, id="n40-d1-k3"),
    pytest.param(61, 97, [13, 29, 5, 3], 16, id="n61-d97prime-R50-block16"),
    pytest.param(33, 12, [5], 8, id="n33-d12-k1"),
    pytest.param(300, 64, [1, 2, 3] * 66 + [2, 1], 64, id="n300-d64-k200"),
    pytest.param(52, 19, [4, 0, 1, 7, 3], 7, id="n52-d19-absent"),
    pytest.param(517, 40, [9, 11, 10], 128, id="n517-d40-block128"),
]


@pytest.mark.parametrize("threads", _THREADS)
@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(("n", "d", "ranks", "block_rows"), _SCORE_SHAPES)
def test_subspace_scores_matches_reference(
    ext, one_blas_thread, n, d, ranks, block_rows, dtype, threads
):
    rng = np.random.default_rng(n + d)
    basis, offsets = _orthonormal_bases(rng, d, ranks)
    x = rng.standard_normal((n, d)).astype(dtype)
    basis = basis.astype(dtype)
    scores, pred = ext.subspace_scores(x, basis, offsets, block_rows, threads)
    ref_scores, ref_pred = _scores_np(x, basis, offsets)
    _assert_scores(scores, pred, ref_scores, ref_pred, dtype, offsets)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_subspace_scores_low_rank_rows(ext, one_blas_thread, dtype):
    rng = np.random.default_rng(3)
    x = _low_rank_rows(rng, 400, 50, 8, dtype)
    basis, offsets = _orthonormal_bases(rng, 50, [6, 8, 4, 10])
    scores, pred = ext.subspace_scores(x, basis.astype(dtype), offsets, 32, 2)
    ref_scores, ref_pred = _scores_np(x, basis.astype(dtype), offsets)
    _assert_scores(scores, pred, ref_scores, ref_pred, dtype, offsets)


def test_subspace_scores_same_for_any_threads_and_block(ext, one_blas_thread):
    """Rows are independent: thread count and block size change nothing but the schedule."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((257, 31)).astype(np.float32)
    basis, offsets = _orthonormal_bases(rng, 31, [3, 5, 2])
    basis = basis.astype(np.float32)
    first = ext.subspace_scores(x, basis, offsets, 300, 1)
    for block_rows, threads in [(16, 2), (257, 2), (1, 1)]:
        scores, pred = ext.subspace_scores(x, basis, offsets, block_rows, threads)
        np.testing.assert_allclose(scores, first[0], rtol=2e-6, atol=1e-7)
        assert np.array_equal(pred, first[1])


@pytest.mark.parametrize("dtype", _DTYPES)
def test_subspace_scores_no_class_present(ext, one_blas_thread, dtype):
    x = np.random.default_rng(5).standard_normal((4, 3)).astype(dtype)
    scores, pred = ext.subspace_scores(
        x, np.empty((3, 0), dtype=dtype), np.zeros(3, np.int64), 8, 2
    )
    assert scores.shape == (4, 2) and np.all(scores == 0) and np.all(pred == -1)


def test_subspace_scores_zero_row_scores_zero(ext, one_blas_thread):
    rng = np.random.default_rng(6)
    basis, offsets = _orthonormal_bases(rng, 9, [0, 3, 2])
    x = rng.standard_normal((6, 9))
    x[2] = 0
    scores, pred = ext.subspace_scores(x, basis, offsets, 4, 2)
    assert np.all(scores[2] == 0) and not np.isnan(scores).any()
    assert pred[2] == 1  # lowest present class: class 0 is absent


def test_subspace_scores_row_inside_subspace_scores_one(ext, one_blas_thread):
    rng = np.random.default_rng(7)
    basis, offsets = _orthonormal_bases(rng, 12, [3, 4])
    x = (basis[:, :3] @ rng.standard_normal((3, 5))).T.copy()  # rows inside class 0's span
    scores, pred = ext.subspace_scores(x, basis, offsets, 2, 2)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-12)
    assert np.all(scores <= 1.0) and np.all(pred == 0)


def test_subspace_scores_ties_go_to_lowest_class(ext, one_blas_thread):
    rng = np.random.default_rng(8)
    d = 10
    basis = np.linalg.qr(rng.standard_normal((d, 3)))[0]
    stacked = np.concatenate([basis[:, :1], basis[:, 1:], basis[:, 1:]], axis=1)  # 1 and 2 equal
    x = 5 * basis[:, 1:] @ rng.standard_normal((2, 20)) + 0.1 * rng.standard_normal((d, 20))
    scores, pred = ext.subspace_scores(x.T.copy(), stacked, _offsets([1, 2, 2]), 8, 2)
    assert np.array_equal(scores[:, 1], scores[:, 2])
    assert np.all(pred == 1)


def test_subspace_scores_pred_is_argmax_of_returned_scores(ext, one_blas_thread):
    rng = np.random.default_rng(9)
    basis, offsets = _orthonormal_bases(rng, 20, [2, 5, 0, 1, 9])
    x = rng.standard_normal((200, 20)).astype(np.float32)
    scores, pred = ext.subspace_scores(x, basis.astype(np.float32), offsets, 64, 2)
    present = np.diff(offsets) > 0
    assert np.array_equal(pred, np.argmax(np.where(present, scores, -np.inf), axis=1))


# --- _C.gram_update ---------------------------------------------------------------------------

_GRAM_DTYPES = [
    pytest.param(np.float32, np.float64, id="float32-into-float64"),
    pytest.param(np.float64, np.float64, id="float64"),
    pytest.param(np.float32, np.float32, id="float32"),
]
# (n, d, k, bucket_rows, block_cols, panel_cols): one row, d = 1, d prime with several column
# blocks and buckets, K = 1, K = 200, block wider than d; GEMM sub-panels (panel_cols > 0)
# narrower than a block, not dividing it, of one column, and as wide as the block.
_GRAM_SHAPES = [
    pytest.param(1, 5, 3, 4, 2, 0, id="n1-d5-k3"),
    pytest.param(50, 1, 2, 8, 1, 0, id="n50-d1-k2"),
    pytest.param(301, 97, 4, 32, 40, 0, id="n301-d97prime-buckets-blocks"),
    pytest.param(120, 33, 1, 16, 64, 0, id="n120-d33-k1"),
    pytest.param(2000, 24, 200, 8, 7, 0, id="n2000-d24-k200"),
    pytest.param(301, 97, 4, 32, 40, 16, id="n301-d97prime-panels16"),
    pytest.param(500, 130, 3, 64, 512, 32, id="n500-d130-one-block-panels32"),
    pytest.param(90, 9, 2, 16, 9, 1, id="n90-d9-panels1"),
    pytest.param(90, 12, 2, 16, 6, 6, id="n90-d12-panel-is-block"),
]


@pytest.mark.parametrize("threads", _THREADS)
@pytest.mark.parametrize(("x_dtype", "gram_dtype"), _GRAM_DTYPES)
@pytest.mark.parametrize(("n", "d", "k", "bucket_rows", "block_cols", "panel_cols"), _GRAM_SHAPES)
def test_gram_update_matches_reference(
    ext, one_blas_thread, n, d, k, bucket_rows, block_cols, panel_cols, x_dtype, gram_dtype, threads
):
    rng = np.random.default_rng(n * 7 + d)
    x = rng.standard_normal((n, d)).astype(x_dtype)
    labels = rng.integers(0, k, n).astype(np.int64)
    gram = np.zeros((k, d, d), dtype=gram_dtype)
    ext.gram_update(gram, x, labels, bucket_rows, block_cols, threads, panel_cols)
    _assert_gram(gram, x, labels, x_dtype)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_gram_update_low_rank_and_accumulates(ext, one_blas_thread, dtype):
    """Two calls add up: the second batch lands on top of the first."""
    rng = np.random.default_rng(10)
    x = _low_rank_rows(rng, 600, 45, 5, dtype)
    labels = rng.integers(0, 3, 600).astype(np.int64)
    gram = np.zeros((3, 45, 45))
    ext.gram_update(gram, x[:250], labels[:250], 64, 16, 2)
    ext.gram_update(gram, x[250:], labels[250:], 64, 16, 2)
    _assert_gram(gram, x, labels, dtype)


def test_gram_update_independent_of_threads(ext, one_blas_thread):
    """Tasks do not depend on the thread count, so results are bitwise equal."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((500, 70)).astype(np.float32)
    labels = rng.integers(0, 6, 500).astype(np.int64)
    grams = []
    for threads in (1, 2):
        gram = np.zeros((6, 70, 70))
        ext.gram_update(gram, x, labels, 64, 32, threads)
        grams.append(gram)
    assert np.array_equal(grams[0], grams[1])


def test_gram_update_leaves_absent_classes_untouched(ext, one_blas_thread):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((30, 6))
    gram = np.full((4, 6, 6), 7.0)
    ext.gram_update(gram, x, np.full(30, 2, dtype=np.int64), 8, 4, 2)
    assert np.all(gram[[0, 1, 3]] == 7.0)
    np.testing.assert_allclose(gram[2], 7.0 + x.T @ x, rtol=1e-12)


# --- real data ---------------------------------------------------------------------------------


def _real_case(x, y, dtype, classes):
    from masc_fast.reference import fit_subspaces_ref

    x = np.asarray(x, dtype=np.float64)
    bases = fit_subspaces_ref(x, y, classes, 0.99)
    basis = np.concatenate([b for b in bases if b is not None], axis=1)
    offsets = _offsets([0 if b is None else b.shape[1] for b in bases])
    return x.astype(dtype), basis.astype(dtype), offsets


@pytest.mark.parametrize("threads", _THREADS)
@pytest.mark.parametrize("dtype", _DTYPES)
def test_real_digits_scores_and_gram(ext, one_blas_thread, digits, dtype, threads):
    x, y = digits
    x, basis, offsets = _real_case(x, y, dtype, 10)
    scores, pred = ext.subspace_scores(x, basis, offsets, 128, threads)
    ref_scores, ref_pred = _scores_np(x, basis, offsets)
    _assert_scores(scores, pred, ref_scores, ref_pred, dtype, offsets)
    gram = np.zeros((10, 64, 64))
    ext.gram_update(gram, x, y, 256, 32, threads)
    _assert_gram(gram, x, y, dtype)


@pytest.mark.skipif(not HAS_MNIST1D, reason="the optional 'mnist1d' package is not installed")
@pytest.mark.parametrize("dtype", _DTYPES)
def test_real_mnist1d_scores_and_gram(ext, one_blas_thread, dtype):
    from masc_fast.data.in_memory import load_mnist1d

    x_train, y_train, x_test, _ = load_mnist1d()
    x_train, y_train = np.asarray(x_train), np.asarray(y_train, dtype=np.int64)
    x, basis, offsets = _real_case(x_train, y_train, dtype, 10)
    x_test = np.asarray(x_test, dtype=dtype)
    scores, pred = ext.subspace_scores(x_test, basis, offsets, 128, 2)
    ref_scores, ref_pred = _scores_np(x_test, basis, offsets)
    _assert_scores(scores, pred, ref_scores, ref_pred, dtype, offsets)
    gram = np.zeros((10, x.shape[1], x.shape[1]))
    ext.gram_update(gram, x, y_train, 128, 16, 2)
    _assert_gram(gram, x, y_train, dtype)


# --- bad input at the boundary: named, never converted, never a crash -------------------------


def _scores_args(dtype=np.float64):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((5, 4)).astype(dtype)
    basis, offsets = _orthonormal_bases(rng, 4, [1, 2])
    return x, basis.astype(dtype), offsets


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        pytest.param({"x": np.ones((5, 4), np.int64)}, TypeError, "x must be float32", id="x-int"),
        pytest.param({"x": np.ones((5, 4), np.float16)}, TypeError, "x must be", id="x-half"),
        pytest.param(
            {"basis": np.ones((4, 3), np.float32)}, TypeError, "basis dtype", id="basis-dtype"
        ),
        pytest.param(
            {"offsets": np.array([0, 1, 3], np.int32)},
            TypeError,
            "offsets must be int64",
            id="offsets-int32",
        ),
        pytest.param(
            {"x": np.asfortranarray(np.ones((5, 4)))},
            ValueError,
            "x must be c-contiguous",
            id="x-fortran",
        ),
        pytest.param(
            {"basis": np.ones((4, 6))[:, ::2]},
            ValueError,
            "basis must be c-contiguous",
            id="basis-strided",
        ),
        pytest.param({"x": np.ones(4)}, ValueError, "x must be 2-D", id="x-1d"),
        pytest.param({"basis": np.ones((5, 3))}, ValueError, "basis must have", id="basis-rows"),
        pytest.param(
            {"offsets": np.array([1, 2, 3])}, ValueError, "offsets\\[0\\]", id="offsets-first"
        ),
        pytest.param(
            {"offsets": np.array([0, 1, 4])}, ValueError, "offsets\\[-1\\]", id="offsets-last"
        ),
        pytest.param(
            {"offsets": np.array([0, 2, 1, 3])}, ValueError, "non-decreasing", id="offsets-order"
        ),
        pytest.param({"block_rows": 0}, ValueError, "block_rows", id="block-rows-zero"),
        pytest.param({"threads": 0}, ValueError, "threads", id="threads-zero"),
    ],
)
def test_subspace_scores_bad_input_names_argument(ext, change, error, match):
    x, basis, offsets = _scores_args()
    args = {"x": x, "basis": basis, "offsets": offsets, "block_rows": 4, "threads": 1}
    args.update(change)
    with pytest.raises(error, match=match):
        ext.subspace_scores(**args)


def test_subspace_scores_refuses_tensors_instead_of_converting(ext):
    x, basis, offsets = _scores_args()
    with pytest.raises(TypeError):
        ext.subspace_scores(torch.from_numpy(x), basis, offsets, 4, 1)
    with pytest.raises(TypeError):
        ext.subspace_scores(x.tolist(), basis, offsets, 4, 1)


def _gram_args():
    rng = np.random.default_rng(14)
    return {
        "gram": np.zeros((3, 4, 4)),
        "x": rng.standard_normal((6, 4)),
        "labels": np.array([0, 1, 2, 0, 1, 2], np.int64),
        "bucket_rows": 4,
        "block_cols": 2,
        "threads": 1,
    }


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        pytest.param(
            {"gram": np.zeros((3, 4, 4), np.int64)}, TypeError, "gram must be float", id="gram-int"
        ),
        pytest.param(
            {"gram": np.zeros((3, 4, 4), np.float32)},
            TypeError,
            "x is float64",
            id="float64-x-into-float32-gram",
        ),
        pytest.param(
            {"labels": np.zeros(6, np.int32)}, TypeError, "labels must be int64", id="labels-int32"
        ),
        pytest.param({"x": np.ones((6, 4), np.int32)}, TypeError, "x must be float", id="x-int"),
        pytest.param(
            {"gram": np.zeros((3, 4, 5))},
            ValueError,
            "gram must be \\(k, d, d\\)",
            id="gram-not-square",
        ),
        pytest.param(
            {"x": np.ones((6, 5))}, ValueError, "x must have gram.shape\\[1\\] = 4", id="x-columns"
        ),
        pytest.param(
            {"labels": np.zeros(5, np.int64)}, ValueError, "labels must have", id="labels-length"
        ),
        pytest.param(
            {"labels": np.array([0, 1, 3, 0, 1, 2])},
            ValueError,
            "labels\\[2\\] = 3 is outside \\[0, 3\\)",
            id="label-too-large",
        ),
        pytest.param(
            {"labels": np.array([0, -1, 2, 0, 1, 2])},
            ValueError,
            "labels\\[1\\] = -1",
            id="label-negative",
        ),
        pytest.param(
            {"x": np.asfortranarray(np.ones((6, 4)))},
            ValueError,
            "x must be c-contiguous",
            id="x-fortran",
        ),
        pytest.param(
            {"gram": np.zeros((4, 4, 3)).transpose(2, 0, 1)},
            ValueError,
            "gram must be c-contiguous",
            id="gram-transposed",
        ),
        pytest.param({"bucket_rows": 0}, ValueError, "bucket_rows", id="bucket-zero"),
        pytest.param({"block_cols": 0}, ValueError, "block_cols", id="block-cols-zero"),
        pytest.param({"panel_cols": -1}, ValueError, "panel_cols", id="panel-cols-negative"),
        pytest.param({"threads": 0}, ValueError, "threads", id="threads-zero"),
    ],
)
def test_gram_update_bad_input_names_argument(ext, change, error, match):
    args = _gram_args()
    args.update(change)
    with pytest.raises(error, match=match):
        ext.gram_update(**args)


def test_gram_update_refuses_read_only_gram(ext):
    args = _gram_args()
    args["gram"].setflags(write=False)
    with pytest.raises(ValueError, match="gram must be writeable"):
        ext.gram_update(**args)


def test_gram_update_bad_label_leaves_gram_untouched(ext):
    args = _gram_args()
    args["labels"] = np.array([0, 1, 2, 0, 1, 9], np.int64)
    with pytest.raises(ValueError, match="labels\\[5\\] = 9"):
        ext.gram_update(**args)
    assert np.all(args["gram"] == 0)


def test_ext_version_and_build_facts(ext):
    text = (Path(__file__).parents[1] / "masc_fast" / "_version.py").read_text(encoding="utf-8")
    version = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text).group(1)
    assert ext.__version__ == version
    assert ext.blas_source().endswith("SYRK from scipy.linalg.cython_blas")
    assert isinstance(ext.has_openmp, bool)


# --- the adapter -------------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [None, 1, 2])
@pytest.mark.parametrize("dtype", _DTYPES)
def test_cpp_ops_subspace_scores_matches_reference(ext, dtype, threads):
    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(21)
    basis, offsets = _orthonormal_bases(rng, 19, [4, 0, 1, 7, 3])
    x = rng.standard_normal((52, 19)).astype(dtype)
    x[5] = 0  # defined score 0 below the validation boundary
    scores, pred = cpp_ops.subspace_scores(
        torch.from_numpy(x),
        torch.from_numpy(basis.astype(dtype)),
        torch.from_numpy(offsets),
        threads=threads,
    )
    ref_scores, ref_pred = _scores_np(x, basis.astype(dtype), offsets)
    _assert_scores(scores.numpy(), pred.numpy(), ref_scores, ref_pred, dtype)


def test_cpp_ops_makes_non_contiguous_input_contiguous(ext):
    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(22)
    basis, offsets = _orthonormal_bases(rng, 11, [2, 3])
    x = rng.standard_normal((11, 30))
    scores, pred = cpp_ops.subspace_scores(
        torch.from_numpy(x).T, torch.from_numpy(basis), torch.from_numpy(offsets), block_rows=4
    )
    ref_scores, ref_pred = _scores_np(x.T, basis, offsets)
    _assert_scores(scores.numpy(), pred.numpy(), ref_scores, ref_pred, np.float64)


@pytest.mark.parametrize(("x_dtype", "gram_dtype"), _GRAM_DTYPES)
def test_cpp_ops_gram_update_matches_torch_and_reference(ext, x_dtype, gram_dtype):
    from masc_fast.backends import cpp_ops, torch_ops

    rng = np.random.default_rng(23)
    x = torch.from_numpy(_low_rank_rows(rng, 700, 37, 6, x_dtype))
    y = torch.from_numpy(rng.integers(0, 5, 700).astype(np.int64))
    torch_dtype = torch.float64 if gram_dtype == np.float64 else torch.float32
    gram = torch.zeros(5, 37, 37, dtype=torch_dtype)
    cpp_ops.gram_update(gram, x, y)
    _assert_gram(gram.numpy(), x.numpy(), y.numpy(), x_dtype)
    expected = torch.zeros_like(gram)
    torch_ops.gram_update(expected, x, y)
    scale = float(expected.abs().max())
    assert_close_report(gram, expected, _GRAM_RELATIVE[x_dtype] * scale, 0.0, "gram vs torch")


def test_cpp_ops_gram_update_float64_rows_into_float32_gram(ext):
    from masc_fast.backends import cpp_ops

    rng = np.random.default_rng(24)
    x = torch.from_numpy(rng.standard_normal((90, 8)))
    y = torch.from_numpy(rng.integers(0, 2, 90).astype(np.int64))
    gram = torch.zeros(2, 8, 8, dtype=torch.float32)
    cpp_ops.gram_update(gram, x, y)
    _assert_gram(gram.numpy(), x.float().numpy(), y.numpy(), np.float32)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda ops: ops.gram_update(
                torch.zeros(3, 3, 2).permute(2, 0, 1),
                torch.ones(4, 3),
                torch.zeros(4, dtype=torch.int64),
            ),
            ValueError,
            "gram must be contiguous",
            id="gram-non-contiguous",
        ),
        pytest.param(
            lambda ops: ops.gram_update(
                torch.zeros(2, 3, 3), torch.ones(4, 3), torch.zeros(4, dtype=torch.int32)
            ),
            TypeError,
            "y must be int64",
            id="y-int32",
        ),
        pytest.param(
            lambda ops: ops.subspace_scores(
                torch.ones(4, 3), torch.ones(3, 2), torch.tensor([0, 2]), threads=0
            ),
            ValueError,
            "threads must be a positive integer",
            id="threads-zero",
        ),
        pytest.param(
            lambda ops: ops.subspace_scores(
                torch.ones(4, 3), torch.ones(3, 2), torch.tensor([0, 2]), precision="bf16"
            ),
            ValueError,
            "precision 'bf16' is a GPU mode",
            id="bf16",
        ),
    ],
)
def test_cpp_ops_bad_input(ext, call, error, match):
    from masc_fast.backends import cpp_ops

    with pytest.raises(error, match=match):
        call(cpp_ops)


def test_cpp_ops_default_threads_follow_env_then_torch(ext, monkeypatch):
    from masc_fast.backends import cpp_ops

    monkeypatch.delenv("MASC_FAST_NUM_THREADS", raising=False)
    assert cpp_ops.default_threads() == torch.get_num_threads()
    monkeypatch.setenv("MASC_FAST_NUM_THREADS", "3")
    assert cpp_ops.default_threads() == 3
    monkeypatch.setenv("MASC_FAST_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="MASC_FAST_NUM_THREADS"):
        cpp_ops.default_threads()


def test_cpp_ops_block_heuristics(ext):
    from masc_fast.backends import cpp_ops

    assert cpp_ops.scoring_block_rows(2000, 4) == 512
    assert cpp_ops.scoring_block_rows(10000, 4) == 419  # 16 MiB tile
    assert cpp_ops.scoring_block_rows(200000, 8) == 128  # floor
    assert cpp_ops.gram_blocks(200, 512, 4, 2) == (1024, 512)
    assert cpp_ops.gram_blocks(1, 784, 4, 2) == (1024, 98)  # 8 column blocks for 2 workers
    assert cpp_ops.gram_blocks(10, 16384, 4, 2) == (256, 512)  # 16 MiB bucket
    assert [cpp_ops.gram_panel_cols(d) for d in (1, 256, 257, 512, 513, 4096)] == [
        16,
        16,
        32,
        32,
        0,
        0,
    ]


def test_cpp_ops_is_available(ext):
    from masc_fast.backends import cpp_ops

    assert cpp_ops.is_available() == (True, "")
