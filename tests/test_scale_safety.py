"""Scale safety (issue 17, deliverables 1-2): MASC does not change with the scale of a row
(scores) or of a class's rows (subspaces), so no finite input may be lost to overflow or
underflow. Rows of real data (scikit-learn's digits) scaled by 1e-30 … 1e30 in float32 must
give the same component counts and predictions as unscaled ones, on every backend; a Gram
that cannot be held (float64 rows past ~1e154) is an error naming the layer and class."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from masc_fast import GramAccumulator
from masc_fast._magnitude import PRODUCT_RANGE, out_of_range_exponents, rows_in_range
from masc_fast.scoring import score_rows

SCALES = [1e-30, 1e-20, 1e-12, 1e12, 1e19, 1e30]
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
    the rest as they are, all in one batch: every class keeps its own components."""
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    x, y, reference = digits_fit
    factors = torch.ones(10)
    factors[0], factors[1] = 1e19, 1e-30
    rows = x[:1400] * factors[y[:1400]].unsqueeze(1)
    accumulator = GramAccumulator(10, 64, backend=gram_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accumulator.update(rows, y[:1400])
        fitted = accumulator.fit(0.99)
    assert fitted.num_components.tolist() == reference.num_components.tolist()
    assert torch.equal(fitted.predict(x[1400:]), reference.predict(x[1400:]))


@pytest.mark.parametrize("gram_backend", ["cpp", "torch"])
def test_float64_rows_past_the_float64_range_are_an_error_naming_the_class(gram_backend):
    """In a class with d rows or more (its Gram is accumulated: the error names the flush's
    first batch) and in a class with fewer (its rows are kept for the Gram trick)."""
    from conftest import backend_status, skip_or_fail

    usable, reason = backend_status()[gram_backend]
    if not usable:
        skip_or_fail(gram_backend, reason)
    rows = torch.tensor([[1.0, 2.0], [3.0, -1.0], [1e200, 0.0], [2.0, 1e199]], dtype=torch.float64)
    accumulator = GramAccumulator(2, 2, layer="fc1", backend=gram_backend)
    with pytest.raises(
        OverflowError,
        match=r"layer 'fc1': class 1's Gram overflowed float64 "
        r"\(rows up to 1e\+200\), flushed with batch 0: its squared",
    ):
        accumulator.update(rows, torch.tensor([0, 0, 1, 1]))
        accumulator.fit()
    small = GramAccumulator(2, 3, layer="fc1", backend=gram_backend)
    small.update(rows[:3, :2].repeat(1, 2)[:, :3], torch.tensor([0, 0, 1]))
    with pytest.raises(
        OverflowError,
        match=r"layer 'fc1': class 1's Gram overflowed float64 "
        r"\(rows up to 1e\+200\): its squared",
    ):
        small.fit()


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
    of classes at 1e19 and 1e-30, and scaled rows scored by the CUDA backends."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    x, y, reference = digits_fit
    cuda = torch.device("cuda")
    factors = torch.ones(10)
    factors[0], factors[1] = 1e19, 1e-30
    accumulator = GramAccumulator(10, 64, device=cuda)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accumulator.update((x[:1400] * factors[y[:1400]].unsqueeze(1)).to(cuda), y[:1400].to(cuda))
        fitted = accumulator.fit(0.99)
    assert fitted.num_components.tolist() == reference.num_components.tolist()
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
