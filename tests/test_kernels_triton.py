"""Tests of the Triton kernels ``masc_fast.kernels`` and their adapter ``backends.triton_ops``.

Everything is checked against an independent float64 NumPy computation written here. Without
a CUDA device the kernels run under Triton's interpreter on CPU tensors. ``@triton.jit`` reads
``TRITON_INTERPRET`` (``triton.knobs.runtime.interpret``) when it decorates, and triton's own
library functions (``tl.zeros``, ``tl.sum``) are decorated when ``triton.language`` is first
imported, so the variable must be set before triton is imported anywhere in the process:
``tests/conftest.py`` does it, and this file repeats it for a run without that conftest. If
triton was nevertheless imported earlier without it, the tests skip with that reason. They also
skip when triton is not importable, unless ``MASC_FAST_REQUIRE`` names ``triton`` (CI), in
which case they fail.
"""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Scores are in [0, 1], so absolute tolerances are meaningful. float64: the kernel and the
# reference both sum in float64 and differ only in summation order. float32: the kernel's
# inputs are the reference's inputs and it also sums in float64, so it differs by the final
# rounding (<= 6e-8); through triton_ops the float32 GEMM adds ~2·d·eps relative to the energy
# (<= 4e-6 for d <= 32 here), so 1e-5 absolute plus 1e-5 relative covers both with margin.
_TOLERANCE = {np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-10)}
_DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def _triton_required() -> bool:
    requested = os.environ.get("MASC_FAST_REQUIRE", "")
    return "triton" in {part.strip() for part in requested.split(",")}


def _unavailable(reason: str) -> None:
    if _triton_required():
        pytest.fail(f"MASC_FAST_REQUIRE includes 'triton' but {reason}")
    pytest.skip(reason)


def _is_interpreted(module) -> bool:
    """The kernel and triton's own jit functions were both decorated for the interpreter."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(module._projection_scores_kernel, InterpretedFunction) and isinstance(
        tl.zeros, InterpretedFunction
    )


@pytest.fixture(scope="module")
def kernels():
    """The module ``masc_fast.kernels.projection_scores``, runnable on this machine."""
    try:
        module = importlib.import_module("masc_fast.kernels.projection_scores")
    except ImportError as exc:
        _unavailable(f"triton or masc_fast.kernels is not importable: {exc}")
    if not torch.cuda.is_available() and not _is_interpreted(module):
        interpret = os.environ.get("TRITON_INTERPRET")
        if interpret != "1":
            _unavailable(f"no CUDA device and TRITON_INTERPRET is {interpret!r}, not '1'")
        _unavailable(
            "no CUDA device and triton is not running its interpreter: triton was imported in "
            "this process before TRITON_INTERPRET=1 was set; set it before the first import "
            "of triton (tests/conftest.py does)"
        )
    return module


@pytest.fixture(scope="module")
def kernel_device() -> torch.device:
    """CUDA when present (compiled kernels), else CPU (interpreted kernels)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def triton_ops(kernels):
    from masc_fast.backends import triton_ops

    usable, reason = triton_ops.is_available()
    if not usable:
        _unavailable(f"triton_ops is unavailable: {reason}")
    return triton_ops


# --- the float64 NumPy reference -------------------------------------------------------------


def _offsets(lengths) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _projection_scores_np(proj, offsets, sq_norms):
    """Float64 reference of the projection_scores contract (csrc/projection_scores.h)."""
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


def _subspace_scores_np(x, basis, offsets):
    x = np.asarray(x, dtype=np.float64)
    proj = x @ np.asarray(basis, dtype=np.float64)
    return _projection_scores_np(proj, offsets, np.sum(x**2, axis=1))


def _random_case(rng, n, lengths, dtype):
    offsets = _offsets(lengths)
    proj = rng.standard_normal((n, offsets[-1])).astype(dtype)
    energy = np.sum(proj.astype(np.float64) ** 2, axis=1)
    # ‖x‖² exceeds the captured energy, as for orthonormal bases, so scores stay below 1.
    sq_norms = (energy + rng.uniform(0.5, 3.0, n)).astype(dtype)
    return proj, offsets, sq_norms


def _low_rank_case(rng, n, lengths, dtype, rank=3):
    offsets = _offsets(lengths)
    proj = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, offsets[-1]))
    proj = (proj + 1e-3 * rng.standard_normal(proj.shape)).astype(dtype)
    energy = np.sum(proj.astype(np.float64) ** 2, axis=1)
    sq_norms = (energy * rng.uniform(1.0, 1.5, n)).astype(dtype)
    return proj, offsets, sq_norms


def _launch(kernels, device, proj, offsets, sq_norms):
    scores, pred = kernels.projection_scores(
        torch.from_numpy(proj).to(device),
        torch.from_numpy(offsets).to(device),
        torch.from_numpy(sq_norms).to(device),
    )
    return scores.cpu().numpy(), pred.cpu().numpy()


def _assert_matches(scores, pred, ref_scores, ref_pred, dtype, offsets):
    atol, rtol = _TOLERANCE[dtype]
    assert scores.dtype == dtype and pred.dtype == np.int64
    assert pred.shape == ref_pred.shape
    assert_close_report(scores, ref_scores, atol, rtol, name="scores")
    # Labels may differ only at near-ties (none expected on these cases: allow 2 %).
    present = np.diff(offsets) > 0
    assert_labels_match(pred, ref_pred, ref_scores, atol + rtol, 0.02, present=present)


# --- the launcher ----------------------------------------------------------------------------

# Block sizes (kernels/_utils.py): BLOCK_R = next power of two of the longest segment in
# [4, 32], BLOCK_N = 512 // BLOCK_R. The shapes below cover one row, K = 1, r_k = 1, R not a
# multiple of BLOCK_R, a segment spanning three chunks, several programs with a partial last
# one, K = 200 with small segments, and absent classes.
_SHAPES = [
    pytest.param(1, [5], id="n1-k1-r5"),
    pytest.param(23, [1], id="n23-k1-r1"),
    pytest.param(37, [3, 1, 7, 1, 2], id="n37-k5-r14"),
    pytest.param(64, [1, 1, 1, 1, 1, 1], id="n64-k6-seg1"),
    pytest.param(101, [13, 29, 5, 17], id="n101-k4-r64"),
    pytest.param(9, [70, 7], id="n9-k2-r77-three-chunks"),
    pytest.param(300, [5, 2, 7], id="n300-k3-five-programs"),
    pytest.param(20, np.random.default_rng(5).integers(0, 4, 200).tolist(), id="n20-k200"),
    pytest.param(9, [4, 0, 3], id="n9-k3-absent-middle"),
    pytest.param(9, [0, 3, 2], id="n9-k3-absent-first"),
]


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(("n", "lengths"), _SHAPES)
def test_projection_scores_matches_reference(kernels, kernel_device, n, lengths, dtype):
    proj, offsets, sq_norms = _random_case(np.random.default_rng(1234), n, lengths, dtype)
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    ref_scores, ref_pred = _projection_scores_np(proj, offsets, sq_norms)
    _assert_matches(scores, pred, ref_scores, ref_pred, dtype, offsets)


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(
    ("n", "lengths"),
    [pytest.param(45, [6, 2, 0, 9], id="n45-k4"), pytest.param(130, [33, 1], id="n130-k2")],
)
def test_projection_scores_low_rank_matches_reference(kernels, kernel_device, n, lengths, dtype):
    proj, offsets, sq_norms = _low_rank_case(np.random.default_rng(4321), n, lengths, dtype)
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    ref_scores, ref_pred = _projection_scores_np(proj, offsets, sq_norms)
    _assert_matches(scores, pred, ref_scores, ref_pred, dtype, offsets)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_strided_proj(kernels, kernel_device, dtype):
    rng = np.random.default_rng(6)
    proj, offsets, sq_norms = _random_case(rng, 40, [3, 5, 2], dtype)
    wide = torch.from_numpy(np.repeat(proj, 2, axis=1)).to(kernel_device)
    strided = wide[:, ::2]  # column stride 2, row stride 2R
    assert not strided.is_contiguous()
    scores, pred = kernels.projection_scores(
        strided,
        torch.from_numpy(offsets).to(kernel_device),
        torch.from_numpy(sq_norms).to(kernel_device),
    )
    ref_scores, ref_pred = _projection_scores_np(proj, offsets, sq_norms)
    _assert_matches(scores.cpu().numpy(), pred.cpu().numpy(), ref_scores, ref_pred, dtype, offsets)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_absent_class_never_predicted(kernels, kernel_device, dtype):
    rng = np.random.default_rng(7)
    proj, offsets, sq_norms = _random_case(rng, 50, [0, 2, 0, 3, 0], dtype)
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    assert np.all(scores[:, [0, 2, 4]] == 0)
    assert set(np.unique(pred)) <= {1, 3}


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_no_class_present(kernels, kernel_device, dtype):
    rng = np.random.default_rng(8)
    proj = np.empty((4, 0), dtype=dtype)
    sq_norms = rng.uniform(0.5, 2.0, 4).astype(dtype)
    scores, pred = _launch(kernels, kernel_device, proj, np.zeros(3, dtype=np.int64), sq_norms)
    assert scores.shape == (4, 2) and np.all(scores == 0)
    assert np.all(pred == -1)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_zero_row(kernels, kernel_device, dtype):
    rng = np.random.default_rng(9)
    proj, offsets, sq_norms = _random_case(rng, 6, [0, 3, 2, 4], dtype)
    proj[2] = 0
    sq_norms[2] = 0
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    assert np.all(scores[2] == 0) and not np.isnan(scores).any()
    assert pred[2] == 1  # lowest present class: class 0 is absent


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_zero_norm_nonzero_projection(kernels, kernel_device, dtype):
    rng = np.random.default_rng(10)
    proj, offsets, sq_norms = _random_case(rng, 5, [2, 3], dtype)
    sq_norms[:] = 0
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    assert np.all(scores == 0) and np.all(pred == 0)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_clamped_to_one(kernels, kernel_device, dtype):
    rng = np.random.default_rng(11)
    proj, offsets, _ = _random_case(rng, 8, [3, 4], dtype)
    # Rounding can make the captured energy exceed ‖x‖²; the score must still be <= 1.
    sq_norms = (0.5 * np.sum(proj[:, :3].astype(np.float64) ** 2, axis=1)).astype(dtype)
    scores, _ = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    assert np.all(scores[:, 0] == 1)
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("dtype", _DTYPES)
def test_projection_scores_ties_go_to_lowest_class(kernels, kernel_device, dtype):
    rng = np.random.default_rng(12)
    offsets = _offsets([3, 2, 3, 3])
    proj = rng.standard_normal((10, offsets[-1])).astype(dtype)
    # Classes 2 and 3 get the same values in the same order, so their energies tie exactly,
    # and they are scaled up to beat classes 0 and 1.
    proj[:, 5:8] = 10 * rng.standard_normal((10, 3)).astype(dtype)
    proj[:, 8:11] = proj[:, 5:8]
    sq_norms = (np.sum(proj.astype(np.float64) ** 2, axis=1) + 1).astype(dtype)
    scores, pred = _launch(kernels, kernel_device, proj, offsets, sq_norms)
    assert np.array_equal(scores[:, 2], scores[:, 3])
    assert np.all(pred == 2)


@pytest.mark.parametrize(("dtype", "expected"), [(np.float32, 0), (np.float64, 1)])
def test_projection_scores_pred_is_argmax_of_stored_scores(kernels, kernel_device, dtype, expected):
    # Class 1 captures 1e-10 more energy: visible in float64, below half an ulp of 0.25 in
    # float32, where both scores round to 0.25 and the tie goes to class 0.
    proj = np.array([[1.0, 0.0, 1.0, 1e-5]], dtype=dtype)
    offsets = _offsets([2, 2])
    scores, pred = _launch(kernels, kernel_device, proj, offsets, np.array([4.0], dtype=dtype))
    assert (scores[0, 0] == scores[0, 1]) == (dtype == np.float32)
    assert pred[0] == expected


def test_projection_scores_empty_batch(kernels, kernel_device):
    proj = torch.empty((0, 5), dtype=torch.float32, device=kernel_device)
    offsets = torch.tensor([0, 2, 5], device=kernel_device)
    scores, pred = kernels.projection_scores(proj, offsets, proj.new_empty(0))
    assert scores.shape == (0, 2) and pred.shape == (0,)


@pytest.mark.parametrize(
    ("proj_dtype", "offsets_dtype", "sq_dtype"),
    [
        pytest.param(torch.float32, torch.int64, torch.float64, id="mixed-float"),
        pytest.param(torch.float64, torch.int32, torch.float64, id="int32-offsets"),
        pytest.param(torch.int64, torch.int64, torch.int64, id="integer-proj"),
        pytest.param(torch.float16, torch.int64, torch.float16, id="float16"),
    ],
)
def test_projection_scores_wrong_dtype_raises_type_error(
    kernels, kernel_device, proj_dtype, offsets_dtype, sq_dtype
):
    proj = torch.ones((3, 4), dtype=proj_dtype, device=kernel_device)
    offsets = torch.tensor([0, 1, 4], dtype=offsets_dtype, device=kernel_device)
    with pytest.raises(TypeError):
        kernels.projection_scores(
            proj, offsets, torch.ones(3, dtype=sq_dtype, device=kernel_device)
        )


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
def test_projection_scores_bad_offsets_raise_value_error(kernels, kernel_device, offsets):
    proj = torch.ones((3, 4), dtype=torch.float64, device=kernel_device)
    offsets = torch.tensor(offsets, dtype=torch.int64, device=kernel_device)
    with pytest.raises(ValueError, match="offsets"):
        kernels.projection_scores(
            proj, offsets, torch.ones(3, dtype=torch.float64, device=kernel_device)
        )


def test_projection_scores_bad_sq_norms_length_raises_value_error(kernels, kernel_device):
    proj = torch.ones((3, 4), dtype=torch.float64, device=kernel_device)
    offsets = torch.tensor([0, 4], device=kernel_device)
    with pytest.raises(ValueError, match="sq_norms"):
        kernels.projection_scores(
            proj, offsets, torch.ones(2, dtype=torch.float64, device=kernel_device)
        )


# --- the adapter -----------------------------------------------------------------------------


def _orthonormal_bases(rng, d, ranks):
    blocks = [np.linalg.qr(rng.standard_normal((d, r)))[0] for r in ranks]
    return np.concatenate(blocks, axis=1), _offsets(ranks)


def _low_rank_rows(rng, n, d, rank=4):
    return rng.standard_normal((n, rank)) @ rng.standard_normal((rank, d)) + 0.1 * (
        rng.standard_normal((n, d))
    )


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize(
    "block_rows", [pytest.param(7, id="block7"), pytest.param(None, id="default")]
)
def test_triton_ops_subspace_scores_matches_reference(triton_ops, kernel_device, dtype, block_rows):
    rng = np.random.default_rng(21)
    n, d = 52, 19
    basis, offsets = _orthonormal_bases(rng, d, [4, 0, 1, 7, 3])
    basis = basis.astype(dtype)
    x = _low_rank_rows(rng, n, d).astype(dtype)
    x[5] = 0  # defined score 0 below the validation boundary
    scores, pred = triton_ops.subspace_scores(
        torch.from_numpy(x).to(kernel_device),
        torch.from_numpy(basis).to(kernel_device),
        torch.from_numpy(offsets),  # on the CPU: the adapter moves it to x's device
        block_rows=block_rows,
    )
    assert scores.device == kernel_device and pred.device == kernel_device
    ref_scores, ref_pred = _subspace_scores_np(x, basis, offsets)
    _assert_matches(scores.cpu().numpy(), pred.cpu().numpy(), ref_scores, ref_pred, dtype, offsets)


@pytest.mark.parametrize("dtype", _DTYPES)
def test_triton_ops_subspace_scores_scale_and_sign_invariant(triton_ops, kernel_device, dtype):
    rng = np.random.default_rng(22)
    basis, offsets = _orthonormal_bases(rng, 13, [3, 2, 5])
    basis = torch.from_numpy(basis.astype(dtype)).to(kernel_device)
    x = torch.from_numpy(rng.standard_normal((30, 13)).astype(dtype)).to(kernel_device)
    offsets = torch.from_numpy(offsets)
    scores, pred = triton_ops.subspace_scores(x, basis, offsets, block_rows=11)
    scaled, scaled_pred = triton_ops.subspace_scores(-8.0 * x, basis, offsets, block_rows=11)
    atol, rtol = _TOLERANCE[dtype]
    torch.testing.assert_close(scaled, scores, atol=atol, rtol=rtol)
    assert torch.equal(scaled_pred, pred)


def test_triton_ops_is_available(triton_ops):
    assert triton_ops.is_available() == (True, "")


def test_triton_ops_unavailable_without_device_names_reason(triton_ops, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    usable, reason = triton_ops.is_available()
    assert not usable
    assert "CUDA" in reason and "TRITON_INTERPRET" in reason


def test_triton_ops_gram_update_matches_torch(triton_ops, kernel_device):
    from masc_fast.backends import torch_ops

    rng = np.random.default_rng(23)
    x = torch.from_numpy(rng.standard_normal((25, 6))).to(kernel_device)
    y = torch.from_numpy(rng.integers(0, 3, 25)).to(kernel_device)
    gram = torch.zeros((3, 6, 6), dtype=torch.float64, device=kernel_device)
    expected = gram.clone()
    triton_ops.gram_update(gram, x, y)
    torch_ops.gram_update(expected, x, y)
    torch.testing.assert_close(gram, expected, atol=0, rtol=0)
