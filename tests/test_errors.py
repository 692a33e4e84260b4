"""Every error path of masc_fast._validation, reached through the public API.

Each test checks the exception type and that the message names what is wrong and where: the
layer, the batch, the offending value or shape (STYLE habit 6).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from masc_fast import GramAccumulator, MASCClassifier, probe


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def _batches(count=3, rows=6, *, nan_at=None, inf_at=None, y_true=False):
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index in range(count):
        x = torch.randn(rows, 5, generator=generator)
        y = torch.arange(rows) % 3
        if index == nan_at:
            x[2, 1] = float("nan")
        if index == inf_at:
            x[4, 0] = float("inf")
        batches.append((x, y, y.flip(0)) if y_true else (x, y))
    return batches


def _probe(train, evals=None, **kwargs):
    return probe(_model(), train, evals, progress=False, **kwargs)


@pytest.fixture
def fitted():
    accumulator = GramAccumulator(3, 4, layer="fc1")
    accumulator.update(torch.randn(60, 4, dtype=torch.float64), torch.arange(60) % 3)
    return accumulator.fit(0.9)


# ---------------------------------------------------------------- non-finite activations


def test_probe_nan_activation_names_layer_and_batch():
    with pytest.raises(
        ValueError,
        match=r"layer 'input', batch 1: activations contain NaN "
        r"values in 1 of 6 rows \(first bad row 2\)",
    ):
        _probe(_batches(nan_at=1))


def test_probe_nan_in_hidden_layer_names_that_layer():
    # NaN in the input propagates through Linear and ReLU to the probed layer '2'.
    with pytest.raises(ValueError, match=r"layer 'hidden', batch 1: activations contain NaN"):
        _probe(_batches(nan_at=1), layers={"hidden": "2"})


def test_probe_inf_activation_names_layer_and_batch():
    with pytest.raises(
        ValueError,
        match=r"layer 'input', batch 2: activations contain inf "
        r"values in 1 of 6 rows \(first bad row 4\)",
    ):
        _probe(_batches(inf_at=2))


def test_probe_nan_in_evaluation_split_names_layer_and_batch():
    with pytest.raises(ValueError, match=r"layer 'input', batch 2: activations contain NaN"):
        _probe(_batches(), {"test": _batches(nan_at=2)}, layers=["input"])


def test_accumulator_nan_names_layer_and_batch():
    accumulator = GramAccumulator(2, 3, layer="fc1")
    accumulator.update(torch.ones(2, 3), torch.tensor([0, 1]))
    bad = torch.ones(4, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(
        ValueError,
        match=r"layer 'fc1', batch 1: activations contain NaN values "
        r"in 1 of 4 rows \(first bad row 1\)",
    ):
        accumulator.update(bad, torch.tensor([0, 1, 0, 1]))


def _cpp_accumulator(**kwargs) -> GramAccumulator:
    from masc_fast.backends import cpp_ops

    available, reason = cpp_ops.is_available()
    if not available:
        pytest.skip(reason)
    return GramAccumulator(3, 4, backend="cpp", layer="fc1", **kwargs)


def _big_batch(rows: int, seed: int):
    """A batch flushed at once on its own: the C++ Gram pass is its finiteness check."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 4, generator=generator)
    return x, torch.arange(rows) % 3


def _raises_bad_row(*, batch: int, kind: str, rows: int, row: int):
    """The usual non-finite error for one bad row of layer 'fc1'."""
    return pytest.raises(
        ValueError,
        match=rf"layer 'fc1', batch {batch}: activations contain {kind} values in 1 of "
        rf"{rows} rows \(first bad row {row}\)",
    )


@pytest.mark.parametrize(
    ("value", "kind"), [(float("nan"), "NaN"), (float("inf"), "inf"), (-float("inf"), "inf")]
)
@pytest.mark.parametrize("rows_in", ["large class", "small kept class"])
def test_big_batch_checked_by_the_gram_pass_names_the_batch_and_changes_nothing(
    value, kind, rows_in
):
    """A batch large enough to flush alone skips the separate finiteness pass (the C++ Gram
    pass reads every entry); a NaN or Inf in it, in a class's Gram rows or in the rows a
    class with fewer than d rows keeps, still raises the usual error naming layer, batch and
    rows, and leaves the accumulator as it was before the batch."""
    accumulator = _cpp_accumulator()
    first, labels = _big_batch(accumulator._flush_rows, seed=0)
    accumulator.update(first, labels)
    before = (accumulator.gram.clone(), accumulator.counts.clone(), accumulator.batches)
    bad, bad_labels = _big_batch(accumulator._flush_rows, seed=1)
    assert accumulator._defers_finite_check(bad)  # the path under test
    if rows_in == "small kept class":  # class 2 gets 2 rows only: kept, not in its Gram yet
        fresh = _cpp_accumulator()
        bad_labels = torch.where(bad_labels == 2, 0, bad_labels)
        bad_labels[[5, 9]] = 2
        bad[9, 1] = value
        with _raises_bad_row(batch=0, kind=kind, rows=len(bad), row=9):
            fresh.update(bad, bad_labels)
        assert fresh.counts.tolist() == [0, 0, 0] and fresh.batches == 0
        return
    bad[7, 3] = value
    with _raises_bad_row(batch=1, kind=kind, rows=len(bad), row=7):
        accumulator.update(bad, bad_labels)
    assert torch.equal(accumulator.gram, before[0])
    assert torch.equal(accumulator.counts, before[1]) and accumulator.batches == before[2]
    # and it goes on as if the bad batch had never come
    good, good_labels = _big_batch(accumulator._flush_rows, seed=2)
    accumulator.update(good, good_labels)
    expected = _cpp_accumulator()
    expected.update(first, labels)
    expected.update(good, good_labels)
    assert torch.equal(accumulator.gram, expected.gram)
    assert accumulator.batches == expected.batches == 2


def test_big_batch_of_huge_finite_values_passes_the_gram_pass_check():
    accumulator = _cpp_accumulator()
    x, labels = _big_batch(accumulator._flush_rows, seed=3)
    accumulator.update(x * 3e37, labels)
    assert accumulator.counts.sum() == len(x)
    assert bool(torch.isfinite(accumulator.gram).all())


def test_huge_finite_activations_pass_and_opposite_infs_are_caught():
    # The finiteness check sums first: huge finite values overflow that sum and must still pass,
    # and +Inf with -Inf (whose sum is NaN) must still be reported as Inf.
    accumulator = GramAccumulator(2, 3)
    accumulator.update(torch.full((4, 3), 3e38), torch.tensor([0, 1, 0, 1]))
    assert accumulator.counts.tolist() == [2, 2]
    bad = torch.ones(4, 3)
    bad[0, 0], bad[3, 1] = float("inf"), float("-inf")
    with pytest.raises(ValueError, match=r"batch 1: activations contain inf values in 2 of 4 rows"):
        accumulator.update(bad, torch.tensor([0, 1, 0, 1]))


def test_score_inf_names_layer(fitted):
    x = torch.ones(3, 4, dtype=torch.float64)
    x[2, 0] = -math.inf
    with pytest.raises(
        ValueError,
        match=r"layer 'fc1': activations contain inf values in 1 of 3 "
        r"rows \(first bad row 2\)",
    ):
        fitted.predict(x)


# ---------------------------------------------------------------- labels


def test_probe_label_out_of_range_names_value_and_batch():
    batches = _batches()
    batches[1] = (batches[1][0], torch.tensor([0, 1, 2, 7, 0, 1]))
    with pytest.raises(
        ValueError, match=re.escape("batch 1: labels contain 7, outside [0, 3) (num_classes=3)")
    ):
        _probe(batches)


def test_probe_negative_true_label_names_value():
    batches = _batches(y_true=True)
    x, y, _ = batches[2]
    batches[2] = (x, y, torch.tensor([0, -1, 2, 1, 0, 1]))
    with pytest.raises(
        ValueError, match=re.escape("batch 2: true labels contain -1, outside [0, 3)")
    ):
        _probe(batches)


def test_probe_evaluation_label_out_of_range():
    test_batches = [(torch.randn(4, 5), torch.tensor([0, 3, 1, 2]))]
    with pytest.raises(ValueError, match=re.escape("batch 0: labels contain 3, outside [0, 3)")):
        _probe(_batches(), {"test": test_batches})


@pytest.mark.parametrize("bad", [5, -2])
def test_accumulator_label_out_of_range_names_value(bad):
    accumulator = GramAccumulator(5, 3, layer="conv")
    with pytest.raises(
        ValueError, match=re.escape(f"layer 'conv', batch 0: labels contain {bad}, outside [0, 5)")
    ):
        accumulator.update(torch.ones(3, 3), torch.tensor([0, bad, 1]))


def test_float_labels_raise_type_error():
    with pytest.raises(TypeError, match=r"batch 0: labels must be integers, got torch.float32"):
        GramAccumulator(2, 3).update(torch.ones(2, 3), torch.tensor([0.0, 1.0]))


def test_bool_labels_raise_type_error():
    with pytest.raises(TypeError, match=r"labels must be integers, got torch.bool"):
        GramAccumulator(2, 3).update(torch.ones(2, 3), torch.tensor([True, False]))


def test_two_dimensional_labels_raise():
    with pytest.raises(ValueError, match=r"labels must be 1-D, got shape \(2, 1\)"):
        GramAccumulator(2, 3).update(torch.ones(2, 3), torch.tensor([[0], [1]]))


def test_label_count_mismatch_names_both_counts():
    with pytest.raises(ValueError, match=r"labels have 3 entries but there are 2 rows"):
        GramAccumulator(2, 3).update(torch.ones(2, 3), torch.tensor([0, 1, 1]))


# ---------------------------------------------------------------- shapes and types


def test_wrong_feature_count_names_shape(fitted):
    with pytest.raises(
        ValueError,
        match=re.escape("layer 'fc1': activations have 5 features, expected 4 (shape (2, 5))"),
    ):
        fitted.scores(torch.ones(2, 5, dtype=torch.float64))


def test_accumulator_wrong_feature_count_names_batch():
    accumulator = GramAccumulator(2, 3, layer="fc1")
    accumulator.update(torch.ones(2, 3), torch.tensor([0, 1]))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "layer 'fc1', batch 1: activations have 4 features, expected 3 (shape (2, 4))"
        ),
    ):
        accumulator.update(torch.ones(2, 4), torch.tensor([0, 1]))


def test_three_dimensional_activations_to_accumulator():
    with pytest.raises(
        ValueError, match=re.escape("batch 0: activations must be 2-D (n, d), got shape (4, 2, 3)")
    ):
        GramAccumulator(2, 6).update(torch.ones(4, 2, 3), torch.tensor([0, 1, 0, 1]))


def test_integer_activations_raise_type_error():
    with pytest.raises(TypeError, match=r"activations must be floating point, got torch.int64"):
        GramAccumulator(2, 3).update(torch.ones(2, 3, dtype=torch.int64), torch.tensor([0, 1]))


def test_non_tensor_input_raises_type_error(fitted):
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor or numpy.ndarray, got list"):
        fitted.predict([[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(TypeError, match=r"y must be a torch.Tensor or numpy.ndarray, got list"):
        GramAccumulator(2, 3).update(torch.ones(2, 3), [0, 1])


def test_object_array_raises_type_error():
    with pytest.raises(TypeError, match=r"x must be a numeric array, got an object array"):
        GramAccumulator(2, 3).update(
            np.array([[1.0, 2.0, None]] * 2, dtype=object), np.array([0, 1])
        )


# ---------------------------------------------------------------- variance


@pytest.mark.parametrize(
    ("variance", "message"),
    [
        (0, "variance must be > 0, got 0.0"),
        (-0.5, "variance must be > 0, got -0.5"),
        (float("nan"), "variance must be > 0, got nan"),
        (float("inf"), "variance must be > 0, got inf"),
        (1.5, "variance >= 1 means a number of components per class and must be whole, got 1.5"),
    ],
)
def test_bad_variance_raises_value_error(variance, message, fitted):
    accumulator = GramAccumulator(2, 3)
    accumulator.update(torch.randn(10, 3), torch.arange(10) % 2)
    with pytest.raises(ValueError, match=re.escape(message)):
        accumulator.fit(variance)
    with pytest.raises(ValueError, match=re.escape(message)):
        fitted.with_variance(variance)
    with pytest.raises(ValueError, match=re.escape(message)):
        _probe(_batches(), variance=variance)
    with pytest.raises(ValueError, match=re.escape(message)):
        MASCClassifier(variance=variance).fit(
            np.random.default_rng(0).random((10, 3)), np.arange(10) % 2
        )


@pytest.mark.parametrize("variance", ["0.9", True, None])
def test_non_number_variance_raises_type_error(variance):
    with pytest.raises(TypeError, match=r"variance must be a number, got (str|bool|NoneType)"):
        GramAccumulator(2, 3).fit(variance)


# ---------------------------------------------------------------- probe inputs


def test_probe_unknown_layer_names_it():
    with pytest.raises(
        ValueError,
        match=r"layer 'fc9': the model has no module named 'fc9' "
        r"\(modules include: 0, 1, 2, 3",
    ):
        _probe(_batches(), layers=["input", "fc9"])


def test_probe_unknown_layer_in_display_mapping_names_both():
    with pytest.raises(ValueError, match=r"layer 'hidden': the model has no module named '7'"):
        _probe(_batches(), layers={"hidden": "7"})


def test_probe_one_tuple_batch_is_malformed():
    batches = _batches()
    batches[1] = (batches[1][0],)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "batch 1: expected a tuple (x, y) or (x, y, y_true), got tuple of length 1"
        ),
    ):
        _probe(batches)


def test_probe_bare_tensor_batch_is_malformed():
    with pytest.raises(
        ValueError,
        match=re.escape("batch 0: expected a tuple (x, y) or (x, y, y_true), got Tensor"),
    ):
        _probe([torch.randn(4, 5)])


def test_probe_malformed_evaluation_batch():
    with pytest.raises(
        ValueError, match=re.escape("batch 0: expected a tuple (x, y_true), got tuple of length 4")
    ):
        _probe(_batches(), {"test": [(torch.randn(2, 5),) * 4]})


def test_probe_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor or numpy.ndarray, got list"):
        _probe([([[0.0] * 5] * 2, torch.tensor([0, 1]))])


def test_probe_float_labels_raise_type_error():
    with pytest.raises(TypeError, match=r"batch 0: labels must be integers, got torch.float32"):
        _probe([(torch.randn(2, 5), torch.tensor([0.0, 1.0]))])


def test_probe_empty_loader_raises():
    with pytest.raises(ValueError, match="the training loader yielded no batches"):
        _probe([])


# ---------------------------------------------------------------- constructor checks


def test_accumulator_rejects_bad_sizes_and_dtype():
    with pytest.raises(ValueError, match="num_classes and dim must be >= 1, got 0 and 3"):
        GramAccumulator(0, 3)
    with pytest.raises(
        TypeError, match="accumulation dtype must be float32 or float64, got torch.float16"
    ):
        GramAccumulator(2, 3, dtype=torch.float16)


# ---------------------------------------------------------------- checks as on CUDA (deferred)


@pytest.fixture
def deferred_checks(monkeypatch):
    """The probe's batch checks as they run on CUDA: each verdict stays on the device and is
    read back at flushes, checkpoints and the end of each pass (here on the CPU)."""
    from functools import partial

    from masc_fast._validation import BatchChecks
    from masc_fast.probing import fit_pass, score_pass

    for module in (fit_pass, score_pass):
        monkeypatch.setattr(module, "BatchChecks", partial(BatchChecks, defer=True))


def _bad_label_batches(index, field, labels):
    batches = _batches(y_true=True)
    x, y, y_true = batches[index]
    batches[index] = (x, labels, y_true) if field == "labels" else (x, y, labels)
    return batches


_DEFERRED_CASES = {
    "nan": (
        lambda: (_batches(nan_at=1), None, {}),
        r"layer 'input', batch 1: activations contain NaN values in 1 of 6 rows "
        r"\(first bad row 2\)",
    ),
    "inf": (
        lambda: (_batches(inf_at=2), None, {}),
        r"layer 'input', batch 2: activations contain inf values in 1 of 6 rows "
        r"\(first bad row 4\)",
    ),
    "hidden layer": (
        lambda: (_batches(nan_at=1), None, {"layers": {"hidden": "2"}}),
        r"layer 'hidden', batch 1: activations contain NaN",
    ),
    "evaluation split": (
        lambda: (_batches(), {"test": _batches(nan_at=2)}, {"layers": ["input"]}),
        r"layer 'input', batch 2: activations contain NaN",
    ),
    "label": (
        lambda: (_bad_label_batches(1, "labels", torch.tensor([0, 1, 2, 7, 0, 1])), None, {}),
        re.escape("batch 1: labels contain 7, outside [0, 3) (num_classes=3)"),
    ),
    "true label": (
        lambda: (_bad_label_batches(2, "true", torch.tensor([0, -1, 2, 1, 0, 1])), None, {}),
        re.escape("batch 2: true labels contain -1, outside [0, 3)"),
    ),
    "stored layer label": (
        lambda: (
            _bad_label_batches(1, "labels", torch.tensor([0, 1, 2, 9, 0, 1])),
            None,
            {"strategy": "stored"},
        ),
        re.escape("batch 1: labels contain 9, outside [0, 3)"),
    ),
}


@pytest.mark.parametrize("case", list(_DEFERRED_CASES))
def test_deferred_batch_checks_raise_what_immediate_ones_do(case, deferred_checks):
    build, match = _DEFERRED_CASES[case]
    train, evals, options = build()
    with pytest.raises(ValueError, match=match):
        _probe(train, evals, **options)


def test_deferred_checks_wait_for_read_back_and_raise_the_first_failure():
    from masc_fast._validation import BatchChecks

    checks = BatchChecks(defer=True)
    good, bad = torch.ones(4, 3), torch.ones(4, 3)
    bad[3, 0] = float("nan")
    checks.activations(good, layer="fc1", batch=0, dim=3)
    checks.activations(bad, layer="fc1", batch=1, dim=3)  # nothing raised yet
    checks.labels(torch.tensor([0, 5, 1, 0]), 3, n=4, name="labels", batch=2)
    with pytest.raises(ValueError, match=r"layer 'fc1', batch 1: activations contain NaN values"):
        checks.raise_pending()
    checks.raise_pending()  # read back once: nothing left
    with pytest.raises(ValueError, match=r"layer 'fc1', batch 3: activations must be 2-D"):
        checks.activations(torch.ones(4), layer="fc1", batch=3)  # metadata: at once


def test_deferred_checks_read_back_by_themselves_past_max_pending():
    from masc_fast._validation import BatchChecks

    checks = BatchChecks(defer=True, max_pending=3)
    checks.labels(torch.tensor([0, 4]), 3, n=2, name="labels", batch=0)
    checks.labels(torch.tensor([0, 1]), 3, n=2, name="labels", batch=1)
    with pytest.raises(ValueError, match=re.escape("batch 0: labels contain 4, outside [0, 3)")):
        checks.labels(torch.tensor([1, 1]), 3, n=2, name="labels", batch=2)


def test_accumulator_reads_back_before_each_flush():
    calls = []
    accumulator = GramAccumulator(2, 3)
    accumulator.before_flush = lambda: calls.append(accumulator.counts.tolist())
    accumulator.add_checked(torch.ones(4, 3), torch.tensor([0, 1, 0, 1]))
    assert calls == [] and accumulator.counts.tolist() == [2, 2]  # staged, counted, not folded
    accumulator.flush()
    assert calls == [[2, 2]]
    accumulator.flush()  # nothing staged: no read-back
    assert calls == [[2, 2]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((3, 8.7), "dim must be an integer, got 8.7"),
        ((3.0, 8), "num_classes must be an integer, got 3.0"),
        ((True, 8), "num_classes must be an integer, got True"),
    ],
)
def test_accumulator_sizes_must_be_integers(args, message):
    from masc_fast import GramAccumulator

    with pytest.raises(TypeError, match=message):
        GramAccumulator(*args)


def test_accumulator_sizes_accept_numpy_integers():
    from masc_fast import GramAccumulator

    assert GramAccumulator(np.int64(3), np.int32(4)).gram.shape == (3, 4, 4)


@pytest.mark.parametrize("labels", [np.array(["cat", "dog"]), np.array([b"a", b"b"])])
def test_text_labels_into_the_accumulator_are_named(labels):
    from masc_fast import GramAccumulator

    accumulator = GramAccumulator(2, 3)
    with pytest.raises(
        TypeError,
        match=r"y must be a numeric array, got a .* \(text or bytes\) "
        "array; encode class labels as integers",
    ):
        accumulator.update(np.ones((2, 3), np.float32), labels)


def test_text_rows_into_the_accumulator_are_named_as_rows():
    """Text where the rows go: named as x, without the labels' hint."""
    from masc_fast import GramAccumulator

    with pytest.raises(
        TypeError,
        match=r"^x must be a numeric array, got a <U1 \(text or bytes\) array; activations "
        "must be numbers$",
    ):
        GramAccumulator(2, 3).update(np.array([["a"] * 3] * 2), np.array([0, 1]))
