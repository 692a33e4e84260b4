"""The threshold sweep: one fit, one scoring pass, every threshold; and per-layer times.

Every threshold's predictions are checked against a separate fit at that threshold (the engine
scoring its own subspaces) and against the float64 scikit-learn reference
(``reference.fit_subspaces_ref`` / ``predict_ref``), on overlapping low-rank classes and on
digits; labels may differ only at near-ties of the reference scores (STYLE habit 10).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _compare import assert_close_report, assert_labels_match, top_two_gap
from conftest import TOLERANCES
from torch import nn

import masc_fast
from masc_fast import reference as ref
from masc_fast.data.in_memory import load_digits_split
from masc_fast.probing.threshold_scoring import (
    DEFAULT_THRESHOLDS,
    ThresholdScorer,
    check_thresholds,
    fit_variance,
    threshold_scores,
)
from masc_fast.results import TABLE_COLUMNS
from masc_fast.testing.synthetic import structured_classes

F32_ATOL, F32_RTOL = TOLERANCES[torch.float32]
F64_ATOL, F64_RTOL = TOLERANCES[torch.float64]
SWEEP = tuple(float(t) for t in DEFAULT_THRESHOLDS)


# ---------------------------------------------------------------- validation


def test_check_thresholds_sorts_and_normalises():
    assert check_thresholds([0.99, 1, 0.5, 3]) == (0.5, 0.99, 1.0, 3.0)
    assert check_thresholds(np.array([0.25, 0.75])) == (0.25, 0.75)
    assert check_thresholds(DEFAULT_THRESHOLDS) == SWEEP


@pytest.mark.parametrize(
    ("thresholds", "error", "match"),
    [
        (0.99, TypeError, "thresholds must be a sequence of numbers, got float"),
        ("0.5", TypeError, "got str"),
        ([0.5, "x"], TypeError, r"thresholds\[1\] must be a number, got str"),
        ([True], TypeError, r"thresholds\[0\] must be a number, got bool"),
        ([], ValueError, "thresholds is empty"),
        ([0.5, 0.0], ValueError, r"thresholds\[1\] must be > 0, got 0.0"),
        ([-1], ValueError, r"thresholds\[0\] must be > 0"),
        ([float("nan")], ValueError, r"thresholds\[0\] must be > 0, got nan"),
        ([0.5, 1.5], ValueError, r"thresholds\[1\] >= 1 means .* must be whole, got 1.5"),
        ([0.5, 0.9, 0.5], ValueError, r"thresholds hold \[0.5\] more than once"),
    ],
)
def test_check_thresholds_rejects_with_named_errors(thresholds, error, match):
    with pytest.raises(error, match=match):
        check_thresholds(thresholds)


def test_fit_variance_is_the_largest_fraction_else_the_largest_count():
    assert fit_variance(DEFAULT_THRESHOLDS) == 0.999
    assert fit_variance((1, 0.5)) == 0.5
    assert fit_variance((1, 4, 2)) == 4.0


# ---------------------------------------------------------------- the op, by hand


def test_threshold_scores_equal_hand_computed_prefix_energies():
    """float64 rows against three classes (one absent), three cuts each, and a zero row."""
    generator = torch.Generator().manual_seed(3)
    basis = torch.linalg.qr(torch.randn(7, 5, generator=generator, dtype=torch.float64)).Q
    offsets = torch.tensor([0, 3, 3, 5])  # class 1 absent
    cuts = torch.tensor([[1, 0, 1], [3, 0, 2], [0, 0, 0]])
    x = torch.randn(6, 7, generator=generator, dtype=torch.float64)
    x[2] = 0.0
    scores, pred = threshold_scores(x, basis, offsets, cuts)
    b, xs = basis.numpy(), x.numpy()
    for t, row in enumerate(cuts.tolist()):
        bases = [b[:, 0 : row[0]], None, b[:, 3 : 3 + row[2]]]
        bases = [None if basis is None or basis.shape[1] == 0 else basis for basis in bases]
        if all(basis is None for basis in bases):
            assert (pred[t] == -1).all() and (scores[t] == 0).all()
            continue
        expected = ref.subspace_scores_ref(xs, bases)
        assert_close_report(scores[t], expected, F64_ATOL, F64_RTOL, name=f"threshold {t}")
        np.testing.assert_array_equal(pred[t].numpy(), ref.predict_ref(xs, bases))
    assert (pred[:2, 2] == 0).all() and (scores[:, 2] == 0).all()  # zero row: lowest present


def test_threshold_scores_exact_tie_goes_to_the_lowest_present_class():
    basis = torch.eye(5, 4)  # class 0: e0, e1; class 1 absent; class 2: e2, e3
    offsets, cuts = torch.tensor([0, 2, 2, 4]), torch.tensor([[1, 0, 1], [2, 0, 2]])
    x = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0, 0.0], [0.0, 1, 0, 1, 0]])
    scores, pred = threshold_scores(x, basis, offsets, cuts)
    assert pred.tolist() == [[0, 2, 0], [0, 0, 0]]  # row 2 ties at 0 at cut 1, at 1/2 at cut 2
    assert scores[:, 0, 0].tolist() == [0.5, 0.5] and scores[1, 2].tolist() == [0.5, 0.0, 0.5]


def test_threshold_scores_blocks_and_return_scores_do_not_change_predictions():
    # d = 32: the classes keep 28 of 32 components at t = 0.999, so scores do not all sit at 1
    # (at d = 12 every class filled the space and a quarter of the points tied exactly).
    x, y = structured_classes(300, 32, 3, rank=6, noise=0.02, seed=2)
    acc = masc_fast.GramAccumulator(3, 32)
    acc.update(x, y)
    scorer = ThresholdScorer(acc.fit(0.999), SWEEP)
    whole = scorer.score(x, return_scores=True)
    blocked = scorer.score(x, block_rows=7)
    assert blocked.scores is None
    # Row blocks change the float32 GEMM's blocking (and BLAS picks kernels by shape and thread
    # count), so a point whose top two scores are within rounding may flip; nothing else may
    # (STYLE habit 10: labels are compared through margins).
    top2 = whole.scores.topk(2, dim=-1).values
    near_tie = (top2[..., 0] - top2[..., 1]) <= 1e-5
    differ = whole.pred != blocked.pred
    assert not bool((differ & ~near_tie).any()), torch.nonzero(differ & ~near_tie)[:5]
    assert int(differ.sum()) <= 0.01 * differ.numel()
    assert whole.scores.shape == (len(SWEEP), 300, 3) and whole.scores.dtype == torch.float32
    assert bool(((whole.scores >= 0) & (whole.scores <= 1)).all())


def test_threshold_scores_check_shapes_and_precision():
    basis, offsets = torch.eye(4, 2, dtype=torch.float64), torch.tensor([0, 1, 2])
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"cuts \[\[2, 1\]\] exceed the classes' columns"):
        threshold_scores(x, basis, offsets, torch.tensor([[2, 1]]))
    with pytest.raises(ValueError, match=r"cuts must be \(T, 2\)"):
        threshold_scores(x, basis, offsets, torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="do not fit"):
        threshold_scores(x[:, :3], basis, offsets, torch.tensor([[1, 1]]))
    with pytest.raises(ValueError, match="precision 'bf16' needs float32"):
        threshold_scores(x, basis, offsets, torch.tensor([[1, 1]]), precision="bf16")


def test_scorer_names_the_threshold_the_fit_cannot_serve():
    x, y = structured_classes(400, 16, 2, rank=8, seed=1)
    acc = masc_fast.GramAccumulator(2, 16, layer="fc1")
    acc.update(x, y)
    fitted = acc.fit(0.25)
    assert int(fitted.num_components.max()) < 6
    with pytest.raises(ValueError, match=r"threshold 6 needs more components than the fit at"):
        ThresholdScorer(fitted, (0.25, 6))
    with pytest.raises(ValueError, match="threshold 0.5 needs more components"):
        ThresholdScorer(fitted, (0.25, 0.5))
    with pytest.raises(ValueError, match="layer 'fc1', batch 4: activations have 3 features"):
        ThresholdScorer(fitted, (0.25,)).score(torch.randn(2, 3), batch=4)


# ---------------------------------------------------------------- against separate fits and sklearn


def _overlapping_classes():
    """Five classes near overlapping 12-dimensional subspaces of R^24 with decaying spectra:
    a few components per class confuse them, all twelve separate them."""
    x, y = structured_classes(2000, 24, 5, rank=12, noise=0.0005, decay=0.8, seed=4)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def _digits():
    return load_digits_split()


@pytest.fixture(scope="module", params=["low_rank", "digits"])
def problem(request):
    x_train, y_train, x_test, y_test = (
        _overlapping_classes() if request.param == "low_rank" else _digits()
    )
    num_classes = int(y_train.max()) + 1
    acc = masc_fast.GramAccumulator(num_classes, x_train.shape[1])
    acc.update(x_train, y_train)
    return acc, x_train, y_train, x_test, y_test, num_classes


def test_sweep_equals_separate_fits_at_every_threshold(problem):
    acc, _, _, x_test, _, _ = problem
    scorer = ThresholdScorer(acc.fit(fit_variance(SWEEP)), SWEEP)
    swept = scorer.score(x_test, return_scores=True)
    for index, threshold in enumerate(SWEEP):
        separate = acc.fit(threshold)
        assert scorer.num_components[index].tolist() == separate.num_components.tolist()
        result = separate.score(x_test, backend="torch")
        assert_close_report(
            swept.scores[index], result.scores, F32_ATOL, F32_RTOL, name=f"t={threshold}"
        )
        assert_labels_match(
            swept.pred[index],
            result.pred,
            result.scores,
            score_tol=F32_ATOL,
            max_excused_fraction=0.002,
            name=f"t={threshold}",
        )


def test_sweep_matches_the_float64_reference_at_every_threshold(problem):
    acc, x_train, y_train, x_test, y_test, num_classes = problem
    scorer = ThresholdScorer(acc.fit(fit_variance(SWEEP)), SWEEP)
    swept = scorer.score(x_test)
    accuracies = []
    for index, threshold in enumerate(SWEEP):
        bases = ref.fit_subspaces_ref(x_train, y_train, num_classes, threshold)
        assert scorer.num_components[index].tolist() == [b.shape[1] for b in bases], threshold
        ref_scores = ref.subspace_scores_ref(x_test, bases)
        assert_labels_match(
            swept.pred[index],
            ref.predict_ref(x_test, bases),
            ref_scores,
            score_tol=F32_ATOL,
            max_excused_fraction=0.002,
            name=f"t={threshold}",
        )
        accuracies.append(float((swept.pred[index] == y_test).double().mean()))
    assert len(set(accuracies)) > 2  # the thresholds really score different subspaces


def test_sweep_on_each_device(device):
    x_train, y_train, x_test, _ = _overlapping_classes()
    acc = masc_fast.GramAccumulator(5, 24)
    acc.update(x_train, y_train)
    fitted = acc.fit(0.999)
    on_cpu = ThresholdScorer(fitted, SWEEP).score(x_test, return_scores=True)
    moved = masc_fast.GramAccumulator(5, 24, device=device)
    moved.update(x_train, y_train)
    there = ThresholdScorer(moved.fit(0.999), SWEEP).score(x_test.to(device), return_scores=True)
    assert there.pred.device.type == device.type
    assert_close_report(there.scores.cpu(), on_cpu.scores, F32_ATOL, F32_RTOL, name="scores")
    for index in range(len(SWEEP)):
        assert_labels_match(
            there.pred[index].cpu(),
            on_cpu.pred[index],
            on_cpu.scores[index],
            score_tol=F32_ATOL,
            max_excused_fraction=0.002,
        )


# ---------------------------------------------------------------- probe(thresholds=...)


NUM_CLASSES = 10
LAYERS = ["input", "2"]


@pytest.fixture(scope="module")
def digits_probe():
    """Digits through a small random MLP; the probe sees the input and the ReLU output."""
    x_train, y_train, x_test, y_test = _digits()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)
    ).eval()
    generator = np.random.default_rng(0)
    y_noisy = y_train.clone()
    flip = torch.from_numpy(generator.random(len(y_train)) < 0.2)
    y_noisy[flip] = torch.from_numpy(generator.integers(0, 10, int(flip.sum())))
    train = [
        (x_train[i : i + 256], y_noisy[i : i + 256], y_train[i : i + 256])
        for i in range(0, len(x_train), 256)
    ]
    test = [(x_test[i : i + 200], y_test[i : i + 200]) for i in range(0, len(x_test), 200)]
    with torch.no_grad():
        acts = {
            "input": (x_train.double().numpy(), x_test.double().numpy()),
            "2": (model[:3](x_train).double().numpy(), model[:3](x_test).double().numpy()),
        }
    labels = {"corrupted": y_noisy.numpy(), "true": y_train.numpy()}
    return model, train, test, acts, labels, y_test.numpy()


def _probe(digits_probe, **kwargs):
    model, train, test = digits_probe[:3]
    kwargs = {"layers": LAYERS, "num_classes": NUM_CLASSES, "progress": False, **kwargs}
    return masc_fast.probe(model, train, {"test": test}, **kwargs)


@pytest.fixture(scope="module")
def swept(digits_probe):
    return _probe(digits_probe, thresholds=DEFAULT_THRESHOLDS)


def _keyed(table, value):
    keys = ["layer", "subspaces", "split", "labels", "variance"]
    return table.set_index(keys)[value].to_dict()


def _near_ties(acts, bases) -> int:
    scores = ref.subspace_scores_ref(acts, bases)
    present = np.array([basis is not None for basis in bases])
    return int((top_two_gap(scores, present) < F32_ATOL).sum())


def test_probe_sweep_table_has_one_row_set_per_threshold(swept):
    table = swept.table
    assert list(table.columns) == TABLE_COLUMNS
    assert sorted(table["variance"].unique()) == list(SWEEP)
    assert swept.thresholds == SWEEP and swept.variance == 0.999
    per_threshold = table.groupby("variance").size()
    assert (per_threshold == 2 * 2 * 3).all()  # layers × subspaces × (split, labels)
    assert table.groupby(["layer", "subspaces", "split", "labels"]).size().eq(len(SWEEP)).all()
    assert set(swept.subspaces) == {(layer, s) for layer in LAYERS for s in ("corrupted", "true")}
    comps = swept.components
    assert comps.groupby(["layer", "subspaces", "variance"]).size().eq(NUM_CLASSES).all()
    one_pc = comps[comps["variance"] == 1.0]
    assert set(one_pc["components"]) == {1}
    totals = comps.groupby(["layer", "subspaces", "variance"])["components"].sum().to_dict()
    for row in table.itertuples():
        assert row.components == totals[(row.layer, row.subspaces, row.variance)]


def test_probe_sweep_equals_separate_probes_and_the_reference(swept, digits_probe):
    """Each threshold's accuracy equals a probe fitted at that threshold alone and the float64
    reference, up to the near-tie points of the reference scores; component counts equal."""
    _, _, _, acts, fit_labels, y_test = digits_probe
    accuracy, n_rows = _keyed(swept.table, "accuracy"), _keyed(swept.table, "n")
    for threshold in SWEEP:
        separate = _probe(digits_probe, variance=threshold)
        assert set(separate.table["variance"]) == {threshold}
        sep = separate.components.drop(columns="variance").reset_index(drop=True)
        cut = swept.components[swept.components["variance"] == threshold]
        sweep_counts = cut.drop(columns=["variance", "captured"]).reset_index(drop=True)
        assert sweep_counts.equals(sep.drop(columns="captured")), threshold
        np.testing.assert_allclose(cut["captured"], sep["captured"], rtol=1e-12)
        for layer in LAYERS:
            train_acts, test_acts = acts[layer]
            for subspaces, labels in fit_labels.items():
                bases = ref.fit_subspaces_ref(train_acts, labels, NUM_CLASSES, threshold)
                counts = cut[(cut["layer"] == layer) & (cut["subspaces"] == subspaces)]
                assert counts["components"].tolist() == [b.shape[1] for b in bases]
                scored = {
                    ("train", "corrupted"): (train_acts, fit_labels["corrupted"]),
                    ("train", "true"): (train_acts, fit_labels["true"]),
                    ("test", "true"): (test_acts, y_test),
                }
                for (split, against), (x, truth) in scored.items():
                    key = (layer, subspaces, split, against, threshold)
                    ties = _near_ties(x, bases)
                    expected = float((ref.predict_ref(x, bases) == truth).mean())
                    alone = separate.accuracy(
                        layer, split=split, subspaces=subspaces, labels=against
                    )
                    assert abs(accuracy[key] - expected) * n_rows[key] <= ties + 1e-9, key
                    assert abs(accuracy[key] - alone) * n_rows[key] <= ties + 1e-9, key


def test_probe_without_thresholds_keeps_todays_table_plus_a_variance_column(digits_probe):
    result = _probe(digits_probe)
    assert list(result.table.columns) == TABLE_COLUMNS
    assert TABLE_COLUMNS[:5] + TABLE_COLUMNS[6:] == [
        "layer", "dim", "subspaces", "split", "labels", "accuracy", "n", "components", "zero_rows",
    ]  # fmt: skip
    assert set(result.table["variance"]) == {0.99} and result.thresholds == (0.99,)
    assert set(result.components["variance"]) == {0.99}
    assert len(result.table) == 2 * 2 * 3  # one row per (layer, subspaces, split, labels)
    assert result.backend in ("cpp", "torch")
    for (layer, subspaces), fitted in result.subspaces.items():
        assert fitted.variance == 0.99
        rows = result.components[
            (result.components["layer"] == layer) & (result.components["subspaces"] == subspaces)
        ]
        assert rows["components"].tolist() == fitted.num_components.tolist()
    one = _probe(digits_probe, thresholds=(0.99,))
    pairs = zip(_keyed(one.table, "accuracy").items(), _keyed(result.table, "accuracy").items())
    for (key, got), (same, expected) in pairs:
        assert key == same and got == pytest.approx(expected, abs=2 / 1347)


def test_probe_sweep_selects_a_threshold_for_accuracy_best_layer_and_plot(swept, tmp_path):
    import matplotlib.pyplot as plt

    test = swept.table[(swept.table["split"] == "test") & (swept.table["subspaces"] == "true")]
    at_one = test[test["variance"] == 1.0].set_index("layer")["accuracy"]
    assert swept.accuracy("2", subspaces="true", variance=1) == at_one["2"]
    best = swept.best_layer(subspaces="true", variance=1)
    assert best["variance"] == 1.0 and best["accuracy"] == at_one.max()
    assert swept.best_layer(subspaces="true")["variance"] == 0.999  # the fitted threshold
    with pytest.raises(KeyError, match=r"no results at variance=0.3"):
        swept.accuracy("2", variance=0.3)
    figure = swept.plot(tmp_path / "sweep.png")
    plt.close(figure)
    assert (tmp_path / "sweep.png").stat().st_size > 1000


def test_probe_rejects_variance_with_thresholds_and_bad_thresholds(digits_probe):
    with pytest.raises(ValueError, match="pass variance=0.5 or thresholds=.*not both"):
        _probe(digits_probe, variance=0.5, thresholds=(0.9,))
    with pytest.raises(ValueError, match=r"thresholds\[0\] must be > 0"):
        _probe(digits_probe, thresholds=(0, 0.5))


def test_probe_counts_beyond_the_largest_fraction_fail_before_scoring(digits_probe):
    with pytest.raises(ValueError, match="threshold 40 needs more components than the fit at"):
        _probe(digits_probe, thresholds=(0.25, 40))


# ---------------------------------------------------------------- per-layer times


def _check_layer_seconds(result, splits):
    times = result.layer_seconds
    assert list(times.columns) == ["layer", "subspaces", "phase", "split", "seconds"]
    for layer, subspaces in result.subspaces:
        rows = times[(times["layer"] == layer) & (times["subspaces"] == subspaces)]
        build = rows[rows["phase"] == "build"]
        assert len(build) == 1 and build["split"].iloc[0] == "" and build["seconds"].iloc[0] > 0
        inference = rows[rows["phase"] == "inference"]
        assert sorted(inference["split"]) == sorted(splits)
        assert (inference["seconds"] > 0).all()
    assert len(times) == len(result.subspaces) * (1 + len(splits))
    assert times["seconds"].sum() <= result.fit_seconds + result.score_seconds
    assert times["layer"].unique().tolist() == result.layers  # in layer order


def test_layer_seconds_cover_every_layer_fit_and_split(swept, digits_probe):
    _check_layer_seconds(swept, ["train", "test"])
    _check_layer_seconds(_probe(digits_probe, layers=["2"]), ["train", "test"])


def test_layer_seconds_of_stored_layers(digits_probe):
    result = _probe(digits_probe, strategy="gram_trick", thresholds=(0.5, 0.99))
    assert set(result.strategies.values()) == {"gram_trick"}
    _check_layer_seconds(result, ["train", "test"])
    assert set(result.components["method"]) == {"gram_trick"}
