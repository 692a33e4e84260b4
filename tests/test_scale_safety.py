"""Scale safety (issue 17, deliverables 1-2): MASC does not change with the scale of a row
(scores) or of a class's rows (subspaces), so no finite input may be lost to overflow or
underflow. Rows of real data (scikit-learn's digits) scaled by 1e-30 … 1e30 in float32 must
give the same component counts and predictions as unscaled ones, on every backend; a Gram
that cannot be held (float64 rows past ~1e154) is an error naming the layer and class."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from masc_fast import GramAccumulator
from masc_fast._magnitude import PRODUCT_RANGE, out_of_range_exponents, rows_in_range
from masc_fast.scoring import score_rows

#: The ends of float32 too: digits' entries (integers up to 16) times 2^-140 are exact
#: subnormals, times 2^123 they reach 2^127, float32's largest power of two.
FLOAT32_ENDS = [2.0**-140, 2.0**123]
SCALES = [1e-30, 1e-20, 1e-12, 1e12, 1e19, 1e30, *FLOAT32_ENDS]
GRAM_BACKENDS = ["cpp", "torch", "reference"]


def _device(backend: str) -> torch.device:
    return torch.device("cuda" if backend == "triton" and torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def digits_fit():
    """Digits: 1400 float32 training rows fitted in float64 precision, 397 test rows."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.from_numpy(x.astype(np.float32))
    y = torch.from_numpy(y.astype(np.int64))
    accumulator = GramAccumulator(10, 64, backend="torch")
    accumulator.update(x[:1400], y[:1400])
    return x, y, accumulator.fit(0.99)


def test_out_of_range_exponents_are_the_binary_exponents():
    peaks = torch.tensor([0.0, 1.0, 3.0, 2.0**-41, 2.0**-40, 2.0**50, 2.0**51 * 1.5])
    assert out_of_range_exponents(peaks, torch.float32).tolist() == [0, 0, 0, -41, 0, 0, 51]
    assert PRODUCT_RANGE[torch.float64] == (-400, 400)


def test_out_of_range_exponents_are_capped_where_the_dtype_holds_the_factor():
    """2^149 (to lift float32's smallest subnormal to 1) is Inf in float32: the shift stops
    at 126, which still lands every subnormal inside the product range."""
    peaks = torch.tensor([2.0**-149, 2.0**-127, 2.0**127 * 1.5])
    assert out_of_range_exponents(peaks, torch.float32).tolist() == [-126, -126, 126]
    tiny = torch.tensor([2.0**-1074, 2.0**1023], dtype=torch.float64)
    assert out_of_range_exponents(tiny, torch.float64).tolist() == [-1022, 1022]
    rows = rows_in_range(torch.tensor([[2.0**-149, 0.0], [2.0**127, -(2.0**126)]]))
    assert torch.isfinite(rows).all()
    assert rows.tolist() == [[2.0**-23, 0.0], [2.0, -1.0]]


def test_rows_in_range_leaves_normal_rows_untouched_and_scales_by_powers_of_two():
    x = torch.tensor([[1.0, -2.0], [3e-30, 1e-30], [0.0, 0.0], [-5e25, 1e20]])
    scaled = rows_in_range(x)
    assert torch.equal(scaled[[0, 2]], x[[0, 2]])
    ratios = scaled[[1, 3]] / x[[1, 3]]
    exponents = torch.log2(ratios)
    assert torch.equal(exponents, exponents.round())  # exact powers of two
    peaks = scaled[[1, 3]].abs().amax(1)
    assert bool(((peaks >= 1) & (peaks < 2)).all())
    normal = x[:1]
    assert rows_in_range(normal) is normal  # no copy when nothing is out of range


@pytest.mark.parametrize("scale", SCALES)
def test_every_backend_scores_a_scaled_row_like_the_row(backend, digits_fit, scale):
    x, _, subspaces = digits_fit
    device = _device(backend)
    packed = subspaces.packed(torch.float32, device)
    rows = x[1400:].to(device)
    plain = score_rows(
        rows, packed.basis, packed.offsets, complement=packed.complement, backend=backend
    )
    scaled = score_rows(
        rows * scale, packed.basis, packed.offsets, complement=packed.complement, backend=backend
    )
    assert scaled.backend == backend
    difference = (scaled.scores - plain.scores).abs().max().item()
    assert difference < 1e-5, f"{backend} at scale {scale}: scores move by {difference}"
    assert torch.equal(scaled.pred, plain.pred)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_block_of_zero_tiny_huge_and_plain_rows(backend, digits_fit, dtype):
    """Rows at both ends of the dtype among plain and all-zero rows, in one scoring block: each
    scores as its plain row (the C++ scorer rescores the flagged rows of a block, no others),
    zero rows score 0."""
    x, _, subspaces = digits_fit
    device = _device(backend)
    packed = subspaces.packed(dtype, device)
    plain = x[1400:1440].to(device, dtype)
    ends = FLOAT32_ENDS if dtype == torch.float32 else [2.0**-1000, 2.0**1000]
    factors = torch.tensor([1.0, 0.0, ends[0], ends[1]], dtype=dtype, device=device)
    rows = plain * factors.repeat(10).unsqueeze(1)
    kwargs = {"complement": packed.complement, "backend": backend}
    expected = score_rows(plain, packed.basis, packed.offsets, **kwargs)
    scored = score_rows(rows, packed.basis, packed.offsets, **kwargs)
    zero = factors.repeat(10) == 0
    assert bool((scored.scores[zero] == 0).all())
    difference = (scored.scores[~zero] - expected.scores[~zero]).abs().max().item()
    assert difference < 1e-5, f"{backend}, {dtype}: scores move by {difference}"
    assert torch.equal(scored.pred[~zero], expected.pred[~zero])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_threshold_sweep_scores_scaled_rows_like_the_rows(digits_fit, dtype):
    """The probe's threshold sweep (one projection, every threshold) divides by ‖x‖² like the
    scorers: rows of 1e20 (‖x‖² Inf in float32) or 1e-30 (0) score as their unscaled rows."""
    from masc_fast.probing.threshold_scoring import ThresholdScorer

    x, _, subspaces = digits_fit
    scorer = ThresholdScorer(subspaces, (0.5, 0.9, 0.99, 1))
    rows = x[1400:].to(dtype)
    plain = scorer.score(rows, return_scores=True)
    scales = FLOAT32_ENDS + [1e-30, 1e20] if dtype == torch.float32 else [1e-300, 1e300]
    for scale in scales:
        scaled = scorer.score(rows * scale, return_scores=True)
        difference = (scaled.scores - plain.scores).abs().max().item()
        assert difference < 1e-5, f"{dtype} at scale {scale}: scores move by {difference}"
        assert torch.equal(scaled.pred, plain.pred), scale


@pytest.mark.parametrize("scale", [2.0**-1060, 1e-300, 1e-160, 1e160, 1e300])
def test_every_backend_scores_scaled_float64_rows_like_the_rows(backend, digits_fit, scale):
    """Float64 rows far outside 1e±154, whose squares leave float64: the C++ scorer rescores
    them from a power-of-two copy, the others scale such rows before scoring."""
    x, _, subspaces = digits_fit
    device = _device(backend)
    packed = subspaces.packed(torch.float64, device)
    rows = x[1400:].to(device, torch.float64)
    plain = score_rows(
        rows, packed.basis, packed.offsets, complement=packed.complement, backend=backend
    )
    scaled = score_rows(
        rows * scale, packed.basis, packed.offsets, complement=packed.complement, backend=backend
    )
    difference = (scaled.scores - plain.scores).abs().max().item()
    assert difference < 1e-9, f"{backend} at scale {scale}: scores move by {difference}"
    assert torch.equal(scaled.pred, plain.pred)


@pytest.mark.parametrize("gram_backend", GRAM_BACKENDS)
@pytest.mark.parametrize("scale", SCALES)
def test_gram_of_scaled_rows_keeps_counts_and_predictions(digits_fit, gram_backend, scale):
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    x, y, reference = digits_fit
    accumulator = GramAccumulator(10, 64, backend=gram_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no class may be left out
        accumulator.update(x[:1400] * scale, y[:1400])
        fitted = accumulator.fit(0.99)
    assert fitted.num_components.tolist() == reference.num_components.tolist()
    assert torch.equal(fitted.predict(x[1400:]), reference.predict(x[1400:]))


@pytest.mark.parametrize("gram_backend", ["cpp", "torch"])
def test_classes_of_very_different_magnitudes_in_one_batch(digits_fit, gram_backend):
    """Class 0's rows at 1e19 (squares past float32), class 1's at 1e-30 (squares below it),
    class 2's subnormal, class 3's up to float32's largest power of two, the rest as they are,
    all in one batch: every class keeps its own components."""
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    x, y, reference = digits_fit
    factors = torch.ones(10)
    factors[0], factors[1], factors[2], factors[3] = 1e19, 1e-30, *FLOAT32_ENDS
    rows = x[:1400] * factors[y[:1400]].unsqueeze(1)
    accumulator = GramAccumulator(10, 64, backend=gram_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accumulator.update(rows, y[:1400])
        fitted = accumulator.fit(0.99)
    assert fitted.num_components.tolist() == reference.num_components.tolist()
    assert torch.equal(fitted.predict(x[1400:]), reference.predict(x[1400:]))


@pytest.mark.parametrize("gram_backend", GRAM_BACKENDS)
@pytest.mark.parametrize(
    ("scale", "error", "what"),
    [
        (1e200, OverflowError, "overflowed"),
        (1e-300, FloatingPointError, "underflowed"),
        (1e-150, FloatingPointError, "underflowed"),
    ],
)
def test_float64_rows_a_float64_gram_cannot_hold_are_an_error_naming_the_class(
    gram_backend, scale, error, what
):
    """Squares past float64 (1e200), squares that vanish (1e-300) or keep only a few digits
    (1e-150: Gram entries of 1e-300, subnormal) are an error naming the class and magnitude,
    not a class "of all-zero rows" or a silently imprecise one; in a Gram class (the error
    names the flush's first batch) and in a class whose few rows are kept for the Gram trick."""
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    rows = torch.tensor([[1.0, 2.0], [3.0, -1.0], [1.0, 0.5], [2.0, 1.0]], dtype=torch.float64)
    rows[2:] *= scale
    peak = re.escape(f"{2 * scale:.0e}")
    accumulator = GramAccumulator(2, 2, layer="fc1", backend=gram_backend)
    with pytest.raises(
        error,
        match=rf"layer 'fc1': class 1's Gram {what} float64 \(rows up to {peak}\), flushed "
        "with batch 0: its squared activations",
    ):
        accumulator.update(rows, torch.tensor([0, 0, 1, 1]))
        accumulator.fit()
    small = GramAccumulator(2, 3, layer="fc1", backend=gram_backend)
    kept = rows[[0, 1, 3]]
    small.update(torch.cat([kept, kept[:, :1]], dim=1), torch.tensor([0, 0, 1]))
    with pytest.raises(
        error, match=rf"layer 'fc1': class 1's Gram {what} float64 \(rows up to {peak}\): its"
    ):
        small.fit()


@pytest.mark.parametrize("scale", [1e-300, 0.0])
def test_checks_deferred_to_fit_tell_vanished_squares_from_zero_rows(scale):
    """On CUDA the Grams are checked at fit(), with each class's largest entry kept on the
    device instead of the batch (no sync per flush); the same mode on the CPU here: rows of
    1e-300 are an underflow naming their magnitude, zero rows a class of all-zero rows. Also
    after merging another accumulator's rows, and after a checkpoint's state is restored."""
    from masc_fast.accumulator import EmptyClassWarning

    rows = torch.tensor([[1.0, 2.0], [3.0, -1.0], [1.0, 0.5], [2.0, 1.0]], dtype=torch.float64)
    rows[2:] *= scale
    labels = torch.tensor([0, 0, 1, 1])
    accumulator = GramAccumulator(2, 2, layer="fc1")
    accumulator._class_peaks = torch.zeros(2, dtype=torch.float64)  # the CUDA mode
    other = GramAccumulator(2, 2)
    other._class_peaks = torch.zeros(2, dtype=torch.float64)
    other.update(rows, labels)
    accumulator.update(rows[:2], labels[:2])  # no check at the flush: the fit finds it
    accumulator.merge(other)
    resumed = GramAccumulator(2, 2, layer="fc1")  # from a probe checkpoint of it
    resumed._class_peaks = torch.zeros(2, dtype=torch.float64)
    resumed.restore(accumulator.state())
    for fitted in (accumulator, resumed):
        if scale:
            with pytest.raises(
                FloatingPointError,
                match=r"class 1's Gram underflowed float64 \(rows up to 2e-300\)",
            ):
                fitted.fit()
        else:
            with pytest.warns(EmptyClassWarning, match=r"class 1 has only all-zero rows \(2\)"):
                fitted.fit()


def test_zero_rows_are_still_a_class_of_all_zero_rows():
    """The underflow check tells zero rows from tiny ones: a class of zero rows is left out
    with that reason, as before."""
    from masc_fast.accumulator import EmptyClassWarning

    rows = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    accumulator = GramAccumulator(2, 2, layer="fc1")
    accumulator.update(rows, torch.tensor([0, 0, 1, 1]))
    with pytest.warns(EmptyClassWarning, match=r"class 1 has only all-zero rows \(2\)"):
        fitted = accumulator.fit()
    assert fitted.num_components.tolist() == [2, 0]


@pytest.mark.parametrize("gram_backend", ["cpp", "torch"])
@pytest.mark.parametrize(
    ("scale", "error", "what"),
    [(1e30, OverflowError, "overflowed"), (1e-40, FloatingPointError, "underflowed")],
)
def test_a_float32_gram_names_its_dtype_and_the_way_out(gram_backend, scale, error, what):
    """Rows of 1e30 are fine for the default float64 Grams but not for float32 ones: the
    error says float32 and suggests float64 accumulation."""
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    rows = torch.tensor([[1.0, 2.0], [3.0, -1.0], [1.0, 0.5], [2.0, 1.0]]) * scale
    accumulator = GramAccumulator(2, 2, dtype=torch.float32, backend=gram_backend)
    with pytest.raises(
        error, match=rf"class 0's Gram {what} float32 .*rescale the activations or accumulate"
    ):
        accumulator.update(rows, torch.tensor([0, 0, 1, 1]))
        accumulator.fit()


def test_a_class_whose_gram_has_no_positive_eigenvalue_is_reported(monkeypatch, digits_fit):
    """The last way a class could vanish: an eigensolve that returns no positive eigenvalue.
    It is left out with its reason, never silently kept with an empty basis."""
    import masc_fast.accumulator as accumulator_module
    from masc_fast.accumulator import EmptyClassWarning
    from masc_fast.linalg.spectra import ClassEigen

    solve = accumulator_module.class_eighs

    def losing_class_1(grams, **kwargs):
        eigens = solve(grams, **kwargs)
        eigens[1] = ClassEigen(
            torch.zeros(3, dtype=torch.float64),
            torch.zeros(64, 0, dtype=torch.float64),
            0.0,
            0,
            "exact",
        )
        return eigens

    monkeypatch.setattr(accumulator_module, "class_eighs", losing_class_1)
    x, y, _ = digits_fit
    accumulator = GramAccumulator(10, 64, layer="fc2")
    accumulator.update(x[:1400], y[:1400])
    rows = int((y[:1400] == 1).sum())
    with pytest.warns(
        EmptyClassWarning,
        match=rf"layer 'fc2': class 1 has {rows} rows but its "
        "Gram has no positive eigenvalue; it is left out",
    ):
        fitted = accumulator.fit(0.99)
    assert fitted.num_components[1] == 0
    assert not bool((fitted.predict(x[1400:]) == 1).any())


@pytest.mark.parametrize("backend_name", ["torch", "triton"])
def test_cuda_backends_keep_scaled_rows_and_classes(digits_fit, backend_name):
    """The same checks on a GPU (run by ``bench/gpu_check.py``): the Gram on CUDA (torch forms)
    of classes at 1e19, 1e-30 and float32's ends, float64 rows whose squares vanish (an error
    from fit(), where CUDA Grams are checked), and scaled rows scored by the CUDA backends."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, y, reference = digits_fit
    cuda = torch.device("cuda")
    factors = torch.ones(10)
    factors[0], factors[1], factors[2], factors[3] = 1e19, 1e-30, *FLOAT32_ENDS
    accumulator = GramAccumulator(10, 64, device=cuda)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accumulator.update((x[:1400] * factors[y[:1400]].unsqueeze(1)).to(cuda), y[:1400].to(cuda))
        fitted = accumulator.fit(0.99)
    assert fitted.num_components.tolist() == reference.num_components.tolist()
    tiny = GramAccumulator(10, 64, device=cuda, layer="fc1")
    tiny.update(x[:1400].to(cuda, torch.float64) * 1e-300, y[:1400].to(cuda))
    with pytest.raises(FloatingPointError, match=r"layer 'fc1': class \d's Gram underflowed"):
        tiny.fit(0.99)
    packed = reference.packed(torch.float32, cuda)
    rows = x[1400:].to(cuda)
    plain = score_rows(
        rows, packed.basis, packed.offsets, complement=packed.complement, backend=backend_name
    )
    for scale in SCALES:
        scaled = score_rows(
            rows * scale,
            packed.basis,
            packed.offsets,
            complement=packed.complement,
            backend=backend_name,
        )
        assert torch.equal(scaled.pred, plain.pred), scale
        assert (scaled.scores - plain.scores).abs().max().item() < 1e-5, scale
