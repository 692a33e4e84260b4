"""The SPEC §7.2 baseline probes against scikit-learn / NumPy, their activation files, and
``run_baselines`` / ``masc-fast baselines`` on a real (tiny) digits training run."""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _compare import assert_close_report
from sklearn.discriminant_analysis import (
    LinearDiscriminantAnalysis,
    QuadraticDiscriminantAnalysis,
)
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

import masc_fast.pipeline.experiments.baselines.run as baselines_run
from masc_fast.cli.baselines import register
from masc_fast.data import load_dataset
from masc_fast.data.in_memory import load_digits_split
from masc_fast.models import MLP, build_model
from masc_fast.pipeline.experiments.baselines import (
    EXTRA_COLUMNS,
    PROBE_NAMES,
    KNeighborsProbe,
    LDAProbe,
    LogisticRegressionProbe,
    NearestClassMeanProbe,
    QDAProbe,
    make_probe,
    run_baselines,
    split_activations,
)
from masc_fast.pipeline.results_table import RESULT_COLUMNS
from masc_fast.pipeline.runs.checkpoints import load_model_weights
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.loading import load_run
from masc_fast.pipeline.runs.train import train_run

# Cosine similarities of float32 rows are exact to a few float32 ulps (≈ 1e-7 at |s| ≤ 1);
# labels may differ from the float64 reference only where the deciding gap is below this.
TIE_GAP = 1e-5
# Most of the test rows a near-tie may excuse (digits pixels are small integers, so exact
# cosine ties between training rows do occur).
MAX_TIE_FRACTION = 0.02


# ---------------------------------------------------------------- data


def _random_features(n_train=600, n_test=300, d=40, seed=0):
    """Low-rank-plus-noise rows through a ReLU (zero entries, a dead unit and zero rows, like
    activations) with non-contiguous labels."""
    generator = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    classes = torch.tensor([2, 5, 7, 11])
    y = classes[torch.randint(0, 4, (n,), generator=generator)]
    centres = torch.randn(4, d, generator=generator) * 1.5
    basis = torch.randn(6, d, generator=generator)
    x = centres[torch.searchsorted(classes, y)] + torch.randn(n, 6, generator=generator) @ basis
    x = torch.relu(x + 0.3 * torch.randn(n, d, generator=generator))
    x[:, 3] = 0.0  # a dead unit
    x[[5, n_train + 7]] = 0.0  # a zero training row and a zero test row
    return x[:n_train].contiguous(), y[:n_train], x[n_train:].contiguous(), y[n_train:]


def _digits_features():
    return load_digits_split()


DATA = {"random": _random_features, "digits": _digits_features}


@pytest.fixture(params=sorted(DATA))
def features(request):
    return request.param, DATA[request.param]()


def _normalise(a: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norms == 0, 1.0, norms)


def _assert_labels_match_through_margins(predicted, expected, gaps, what):
    """Labels equal the reference except where the reference's deciding gap is a near-tie."""
    predicted, expected, gaps = map(np.asarray, (predicted, expected, gaps))
    differ = predicted != expected
    unexcused = differ & (gaps > TIE_GAP)
    excused_rows = np.flatnonzero(differ & ~unexcused)
    excused = len(excused_rows)
    assert not unexcused.any(), (
        f"{what}: {int(unexcused.sum())} labels differ away from ties; rows "
        f"{np.flatnonzero(unexcused)[:5]} gaps {gaps[unexcused][:5]}"
    )
    assert excused <= MAX_TIE_FRACTION * len(expected), (
        f"{what}: {excused} of {len(expected)} labels differ at near-ties (> "
        f"{MAX_TIE_FRACTION:.0%})"
    )
    return excused_rows


# ---------------------------------------------------------------- NCM


def _ncm_reference(x_train, y_train, x_test):
    """float64 NumPy nearest class mean by cosine: (classes, similarities)."""
    x_train, x_test = (np.asarray(a, dtype=np.float64) for a in (x_train, x_test))
    y_train = np.asarray(y_train)
    classes = np.unique(y_train)
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in classes])
    return classes, _normalise(x_test) @ _normalise(means).T


def test_ncm_matches_numpy_reference(features, tolerances):
    name, (x_train, y_train, x_test, _) = features
    probe = NearestClassMeanProbe().fit(x_train, y_train)
    classes, expected = _ncm_reference(x_train, y_train, x_test)
    assert probe.classes_.tolist() == classes.tolist()
    assert_close_report(
        probe.decision_function(x_test), expected, *tolerances[torch.float32], f"{name} NCM"
    )
    ordered = np.sort(expected, axis=1)
    _assert_labels_match_through_margins(
        probe.predict(x_test).numpy(),
        classes[expected.argmax(axis=1)],
        ordered[:, -1] - ordered[:, -2],
        f"{name} NCM",
    )


def test_ncm_chunking_does_not_change_scores():
    x_train, y_train, x_test, _ = _random_features()
    whole = NearestClassMeanProbe().fit(x_train, y_train)
    chunked = NearestClassMeanProbe(chunk_elements=7 * x_train.shape[1]).fit(x_train, y_train)
    assert_close_report(chunked.means_, whole.means_, 1e-12, 0, "means")
    assert torch.equal(chunked.predict(x_test), whole.predict(x_test))


# ---------------------------------------------------------------- k-NN


def test_knn_matches_sklearn_except_at_distance_ties(features):
    name, (x_train, y_train, x_test, _) = features
    probe = KNeighborsProbe(5).fit(x_train, y_train)
    reference = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute")
    reference.fit(x_train.double().numpy(), y_train.numpy())
    expected = reference.predict(x_test.double().numpy())
    # The deciding gap: between the 5th and 6th most similar training rows (float64).
    similarities = _normalise(x_test.double().numpy()) @ _normalise(x_train.double().numpy()).T
    ordered = -np.sort(-similarities, axis=1)
    excused = _assert_labels_match_through_margins(
        probe.predict(x_test).numpy(), expected, ordered[:, 4] - ordered[:, 5], f"{name} k-NN"
    )
    if name == "random":
        # Continuous data: the only tie is the zero test row, equally far from every row.
        assert set(excused.tolist()) <= {7}, excused
    found, _ = probe.kneighbors(x_test)
    assert_close_report(found, ordered[:, :5], 2e-6, 0, f"{name} neighbour similarities")


def test_knn_vote_tie_goes_to_the_smallest_label():
    # Five neighbours of the query vote 2 × label 9, 2 × label 4, 1 × label 6: labels 4 and 9
    # tie and 4, the smaller, wins (scipy's mode in scikit-learn); far rows have other labels.
    angles = torch.tensor([0.00, 0.01, 0.02, 0.03, 0.04, 1.4, 1.45, 1.5], dtype=torch.float64)
    x_train = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    y_train = torch.tensor([9, 4, 9, 4, 6, 1, 1, 1])
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    reference = KNeighborsClassifier(5, metric="cosine", algorithm="brute")
    expected = reference.fit(x_train.numpy(), y_train.numpy()).predict(query.numpy())
    assert expected.tolist() == [4]
    assert KNeighborsProbe(5).fit(x_train, y_train).predict(query).tolist() == [4]


def test_knn_chunking_and_zero_rows():
    x_train, y_train, x_test, _ = _random_features()
    whole = KNeighborsProbe().fit(x_train, y_train).predict(x_test)
    # One query row per chunk.
    tiny = KNeighborsProbe(chunk_elements=len(x_train)).fit(x_train, y_train).predict(x_test)
    assert torch.equal(whole, tiny)
    found, _ = KNeighborsProbe().fit(x_train, y_train).kneighbors(x_test[7:8])  # zero query
    assert torch.equal(found, torch.zeros_like(found))


def test_knn_needs_enough_training_rows():
    with pytest.raises(ValueError, match="n_neighbors = 5 but only 3 training rows"):
        KNeighborsProbe().fit(torch.randn(3, 2), torch.tensor([0, 1, 0]))


# ---------------------------------------------------------------- logistic regression


def _reference_training(x, codes, k, epochs):
    """The recipe written out with the stock torch pieces: seed, Linear, shuffled DataLoader."""
    torch.manual_seed(42)
    linear = nn.Linear(x.shape[1], k)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, codes), batch_size=128, shuffle=True
    )
    optimizer = torch.optim.Adam(linear.parameters(), lr=1e-3)
    for _ in range(epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(linear(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return linear


def test_logistic_regression_is_the_recipe_exactly():
    x_train, y_train, _, _ = _random_features()
    probe = LogisticRegressionProbe(epochs=3).fit(x_train, y_train)
    codes = torch.searchsorted(torch.tensor([2, 5, 7, 11]), y_train)
    reference = _reference_training(x_train, codes, 4, epochs=3)
    assert torch.equal(probe.linear_.weight, reference.weight.detach())
    assert torch.equal(probe.linear_.bias, reference.bias.detach())
    assert probe.classes_.tolist() == [2, 5, 7, 11]  # K = distinct training labels
    assert set(probe.predict(x_train).tolist()) <= {2, 5, 7, 11}


def test_logistic_regression_is_deterministic_and_leaves_the_global_rng_alone():
    x_train, y_train, x_test, _ = _digits_features()
    state = torch.get_rng_state()
    first = LogisticRegressionProbe().fit(x_train, y_train)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(3)  # a different global state must not matter
    second = LogisticRegressionProbe().fit(x_train, y_train)
    assert torch.equal(first.linear_.weight, second.linear_.weight)
    assert first.loss_curve_ == second.loss_curve_
    assert first.loss_curve_[-1] < first.loss_curve_[0]
    assert torch.equal(first.predict(x_test), second.predict(x_test))


def test_logistic_regression_reaches_sklearn_accuracy_on_digits():
    x_train, y_train, x_test, y_test = _digits_features()
    reference = LogisticRegression(max_iter=5000).fit(x_train.numpy(), y_train.numpy())
    expected = reference.score(x_test.numpy(), y_test.numpy())
    # The SPEC's 20 epochs are 220 Adam steps on digits' 1,347 rows (vs 9,380 on MNIST): still
    # far from the optimum (≈ 0.90). Enough epochs show the optimiser reaches the same model
    # quality; the recipe itself is checked step for step above.
    probe = LogisticRegressionProbe(epochs=300).fit(x_train, y_train)
    accuracy = float((probe.predict(x_test) == y_test).double().mean())
    assert accuracy >= expected - 0.03, (accuracy, expected)
    spec = LogisticRegressionProbe().fit(x_train, y_train)
    assert 0.8 < float((spec.predict(x_test) == y_test).double().mean()) < accuracy


# ---------------------------------------------------------------- LDA / QDA


def _pca_digits(components=20):
    """Digits projected on their top principal directions: full-rank class covariances."""
    x_train, y_train, x_test, _ = _digits_features()
    train, test = x_train.double().numpy(), x_test.double().numpy()
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    return (train - mean) @ vt[:components].T, y_train.numpy(), (test - mean) @ vt[:components].T


@pytest.mark.parametrize(
    "probe_class, estimator_class",
    [(LDAProbe, LinearDiscriminantAnalysis), (QDAProbe, QuadraticDiscriminantAnalysis)],
    ids=["lda", "qda"],
)
@pytest.mark.parametrize("data", ["random", "digits"])
def test_discriminant_wrappers_equal_sklearn(probe_class, estimator_class, data):
    if data == "random":
        generator = np.random.default_rng(3)
        x_train, x_test = generator.normal(size=(400, 6)), generator.normal(size=(150, 6))
        y_train = (x_train[:, 0] + x_train[:, 1] ** 2 > 1).astype(int) + 3
    else:
        x_train, y_train, x_test = _pca_digits()
    expected = estimator_class().fit(x_train, y_train).predict(x_test)
    probe = probe_class().fit(torch.from_numpy(x_train).float(), torch.from_numpy(y_train))
    reference32 = estimator_class().fit(x_train.astype(np.float32).astype(np.float64), y_train)
    # float32 tensors are copied to float64: same as sklearn on the same float32 values.
    assert np.array_equal(probe.predict(torch.from_numpy(x_test).float()), reference32.predict(
        x_test.astype(np.float32).astype(np.float64)))  # fmt: skip
    assert np.array_equal(probe_class().fit(x_train, y_train).predict(x_test), expected)
    assert probe.n_features_in_ == x_train.shape[1]


def test_qda_passes_on_sklearns_singular_covariance_error():
    x_train, y_train, _ = _pca_digits()
    x_train = np.hstack([x_train, np.zeros((len(x_train), 1))])  # a dead unit
    with pytest.raises(np.linalg.LinAlgError, match="not full rank"):
        QDAProbe().fit(x_train, y_train)


# ---------------------------------------------------------------- probe errors


@pytest.mark.parametrize("name", ["logistic_regression", "ncm", "knn"])
def test_torch_probe_input_errors_name_the_problem(name):
    x, y = torch.randn(20, 4), torch.arange(20) % 2
    probe = make_probe(name)
    with pytest.raises(RuntimeError, match="not fitted"):
        probe.predict(x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        probe.fit(x.numpy(), y)
    with pytest.raises(ValueError, match="20 rows but y has 19"):
        probe.fit(x, y[:19])
    bad = x.clone()
    bad[4, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf .first in row 4"):
        probe.fit(bad, y)
    probe.fit(x, y)
    with pytest.raises(ValueError, match="x has 3 features but the probe was fitted on 4"):
        probe.predict(x[:, :3])


def test_make_probe_names():
    assert [type(make_probe(name)).__name__ for name in PROBE_NAMES] == [
        "LogisticRegressionProbe",
        "NearestClassMeanProbe",
        "KNeighborsProbe",
        "LDAProbe",
        "QDAProbe",
    ]
    with pytest.raises(ValueError, match="unknown probe 'svm'"):
        make_probe("svm")


# ---------------------------------------------------------------- activation files


@pytest.fixture
def small_model():
    torch.manual_seed(0)
    return MLP(64, 10, hidden=(16, 32)).eval()


@pytest.fixture(scope="module")
def digits_splits():
    return load_dataset("digits", progress=False)


def test_activation_files_equal_a_direct_forward_pass_and_are_reused(
    small_model, digits_splits, tmp_path, tolerances
):
    _, test = digits_splits
    layers = {"fc1": "relu1", "fc2": "relu2"}
    stored = split_activations(small_model, test, layers, tmp_path, batch_size=100, progress=False)
    with torch.no_grad():
        fc1 = torch.relu(small_model.fc1(test.inputs(slice(None))))
        fc2 = torch.relu(small_model.fc2(fc1))
    assert list(stored) == ["fc1", "fc2"]
    assert_close_report(stored["fc1"], fc1, *tolerances[torch.float32], "fc1")
    assert_close_report(stored["fc2"], fc2, *tolerances[torch.float32], "fc2")
    assert sorted(os.listdir(tmp_path)) == ["fc1.npy", "fc2.npy"]  # no temporary files left
    assert np.load(tmp_path / "fc2.npy").shape == (len(test), 32)

    def refuse(*args, **kwargs):
        raise AssertionError("the stored activations should have been reused")

    small_model.forward = refuse
    again = split_activations(small_model, test, layers, tmp_path, progress=False)
    assert all(np.array_equal(again[name], stored[name]) for name in layers)
    again["fc1"][0, 0] = 123.0  # copy-on-write: the file does not change
    assert np.load(tmp_path / "fc1.npy")[0, 0] == stored["fc1"][0, 0] != 123.0


def test_an_interrupted_pass_leaves_no_file(small_model, digits_splits, tmp_path):
    _, test = digits_splits
    calls = []
    forward = small_model.forward

    def fail_on_second_batch(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise RuntimeError("killed mid-pass")
        return forward(x)

    small_model.forward = fail_on_second_batch
    small_model.train()
    with pytest.raises(RuntimeError, match="killed mid-pass"):
        split_activations(small_model, test, {"fc1": "relu1"}, tmp_path, batch_size=100, progress=False)  # fmt: skip
    assert os.listdir(tmp_path) == []
    assert small_model.training  # the training flag is restored


def test_a_stale_file_is_recomputed_and_leftovers_removed(small_model, digits_splits, tmp_path):
    _, test = digits_splits
    np.save(tmp_path / "fc1.npy", np.zeros((3, 16), dtype=np.float32))
    (tmp_path / ".fc1.k1ll3d.npy").write_bytes(b"partial")  # left by a killed pass
    (tmp_path / ".fc10.other.npy").write_bytes(b"another layer's")
    stored = split_activations(small_model, test, {"fc1": "relu1"}, tmp_path, progress=False)
    assert stored["fc1"].shape == (len(test), 16) and np.abs(stored["fc1"]).sum() > 0
    assert sorted(os.listdir(tmp_path)) == [".fc10.other.npy", "fc1.npy"]


def test_activation_layer_names_must_be_file_names(small_model, digits_splits, tmp_path):
    with pytest.raises(ValueError, match="'../fc1' cannot be used as a file name"):
        split_activations(small_model, digits_splits[1], {"../fc1": "relu1"}, tmp_path)


# ---------------------------------------------------------------- run_baselines


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("baselines") / "run"
    train_run(RunConfig("mlp", "digits", p=0.4, seed=0, max_epochs=2), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def all_rows(tiny_run):
    return run_baselines(tiny_run, device="cpu", progress=False)


def _recomputed(run_dir, layer):
    """(train, test) activations of ``layer`` from the final checkpoint, by a hook."""
    train, test = load_dataset("digits", progress=False)
    model = build_model("mlp", input_shape=train.info.input_shape, num_classes=10)
    load_model_weights(run_dir / "checkpoints" / "final.safetensors", model)
    model.eval()
    captured = []
    module = dict(model.named_modules())[model.masc_layers[layer]]
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.flatten(1)))
    with torch.no_grad():
        model(train.inputs(slice(None)))
        model(test.inputs(slice(None)))
    handle.remove()
    return captured[0], captured[1]


@pytest.mark.slow
def test_run_baselines_rows_follow_the_schema(all_rows, tiny_run):
    rows = all_rows
    assert list(rows.columns) == list(RESULT_COLUMNS) + list(EXTRA_COLUMNS)
    assert set(rows["experiment"]) == {"baselines"} and set(rows["split"]) == {"test"}
    assert set(rows["layer"]) == {"fc1", "fc2", "fc3", "fc4"}  # never the input
    assert (rows[["model", "dataset", "p", "seed"]].drop_duplicates().values.tolist()) == [
        ["mlp", "digits", 0.4, 0]
    ]
    counts = rows.groupby(["layer", "subspaces", "probe", "metric"]).size()
    assert len(counts) == 4 * 2 * 5 * 3 and (counts == 1).all()
    accuracy = rows[rows["metric"] == "accuracy"]
    assert set(accuracy["labels"]) == {"true"} and (accuracy["n"] == 450).all()
    assert set(rows.loc[rows["metric"] != "accuracy", "labels"]) == {""}
    ok = accuracy[accuracy["error"] == ""]
    assert ok["value"].between(0, 1).all() and set(ok["probe"]) == set(PROBE_NAMES) - {"qda"}
    seconds = rows[(rows["metric"] != "accuracy") & (rows["error"] == "")]["value"]
    assert (seconds >= 0).all() and seconds.notna().all()
    assert (rows["epoch"] == 2).all() and set(rows["checkpoint"]) == {"final"}


@pytest.mark.slow
def test_run_baselines_values_match_independent_references(all_rows, tiny_run):
    recorded = np.load(tiny_run / "labels.npz")
    _, test = load_dataset("digits", progress=False)
    truth = test.labels.numpy()
    for layer in ("fc1", "fc3"):
        train_x, test_x = (a.double().numpy() for a in _recomputed(tiny_run, layer))
        for subspaces in ("corrupted", "true"):
            labels = recorded[subspaces]
            classes, similarities = _ncm_reference(train_x, labels, test_x)
            ncm = np.mean(classes[similarities.argmax(axis=1)] == truth)
            lda = LinearDiscriminantAnalysis().fit(train_x, labels).score(test_x, truth)
            where = (all_rows["layer"] == layer) & (all_rows["subspaces"] == subspaces)
            got = all_rows[where & (all_rows["metric"] == "accuracy")].set_index("probe")["value"]
            # Ties excused as in the probe tests: at most a near-tie's worth of rows.
            assert abs(got["ncm"] - ncm) <= MAX_TIE_FRACTION, (layer, subspaces, got["ncm"], ncm)
            assert abs(got["lda"] - lda) <= 2 / len(truth), (layer, subspaces, got["lda"], lda)
    assert all_rows.query("probe == 'knn' and metric == 'accuracy'")["value"].min() > 0.5


@pytest.mark.slow
def test_run_baselines_records_the_qda_failure(all_rows):
    qda = all_rows[all_rows["probe"] == "qda"]
    wide = qda[qda["layer"].isin(["fc2", "fc3", "fc4"])]  # ≤ 150 rows per class, ≥ 512 features
    assert wide["value"].isna().all()
    assert wide["error"].str.startswith("LinAlgError: The covariance matrix of class").all()
    others = all_rows[all_rows["probe"] != "qda"]
    assert (others["error"] == "").all() and others["value"].notna().all()


def test_run_baselines_layer_and_probe_selection_reuses_activations(tiny_run, tmp_path):
    rows = run_baselines(
        tiny_run, probes=["ncm"], layers=["fc2"], device="cpu", work_dir=tmp_path, progress=False
    )
    assert set(rows["layer"]) == {"fc2"} and set(rows["probe"]) == {"ncm"} and len(rows) == 6
    assert sorted(os.listdir(tmp_path / "train")) == ["fc2.npy"]
    expected = _recomputed(tiny_run, "fc2")[1].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "test" / "fc2.npy"), expected, atol=2e-5)
    again = run_baselines(
        tiny_run, probes="ncm", layers="fc2", device="cpu", work_dir=tmp_path, progress=False
    )
    pd.testing.assert_series_equal(
        again.loc[again["metric"] == "accuracy", "value"],
        rows.loc[rows["metric"] == "accuracy", "value"],
    )


def test_load_run_returns_the_runs_pieces(tiny_run):
    config, model, train, test, true_labels, corrupted = load_run(tiny_run, "final", "cpu")
    recorded = np.load(tiny_run / "labels.npz")
    assert (config.model, config.dataset, config.p) == ("mlp", "digits", 0.4)
    assert not model.training and len(train) == len(true_labels) and len(test) == 450
    assert np.array_equal(true_labels.numpy(), recorded["true"])
    assert np.array_equal(corrupted.numpy(), recorded["corrupted"])
    assert (corrupted != true_labels).any()
    with pytest.raises(FileNotFoundError, match="has no checkpoint epoch_0099.safetensors"):
        load_run(tiny_run, "epoch_0099")


def test_run_baselines_rejects_unknown_names(tiny_run):
    with pytest.raises(ValueError, match="probes must be a non-empty selection"):
        run_baselines(tiny_run, probes=["ncm", "svm"], progress=False)
    with pytest.raises(ValueError, match=r"layers \['fc9'\] are not probed layers of this MLP"):
        run_baselines(tiny_run, layers=["fc9"], device="cpu", progress=False)


class _WarningProbe:
    def fit(self, x, y):
        warnings.warn("Variables are collinear.", UserWarning, stacklevel=1)
        warnings.warn("Variables are collinear.", UserWarning, stacklevel=1)
        return self

    def predict(self, x):
        return np.zeros(len(x), dtype=np.int64)


class _FailingProbe:
    def fit(self, x, y):
        raise np.linalg.LinAlgError("The covariance matrix of class 3 is not full rank.")


def test_fit_and_score_records_warnings_and_sklearn_errors(monkeypatch):
    x, truth = np.ones((4, 2)), np.array([0, 0, 1, 0])
    monkeypatch.setattr(baselines_run, "make_probe", lambda name: _WarningProbe())
    outcome = baselines_run._fit_and_score("lda", x, truth, x, truth, torch.device("cpu"))
    assert outcome["accuracy"] == 0.75 and outcome["error"] == ""
    assert outcome["warning"] == "UserWarning x2: Variables are collinear."
    monkeypatch.setattr(baselines_run, "make_probe", lambda name: _FailingProbe())
    outcome = baselines_run._fit_and_score("qda", x, truth, x, truth, torch.device("cpu"))
    assert np.isnan(outcome["accuracy"]) and np.isnan(outcome["train_seconds"])
    assert outcome["error"] == "LinAlgError: The covariance matrix of class 3 is not full rank."
    # A failing torch probe is a bug, not a data condition: it propagates.
    with pytest.raises(np.linalg.LinAlgError):
        baselines_run._fit_and_score("ncm", x, truth, x, truth, torch.device("cpu"))


# ---------------------------------------------------------------- CLI


def test_cli_baselines_writes_rows(tiny_run, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="masc-fast")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "rows.csv"
    args = parser.parse_args(
        ["baselines", "--run", str(tiny_run), "--probes", "ncm", "qda", "--layers", "fc1",
         "fc2", "--device", "cpu", "--work-dir", str(tmp_path / "acts"), "--out", str(out),
         "--no-progress"]
    )  # fmt: skip
    assert args.run_dir == tiny_run and callable(args.run)
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "fc2" in printed and f"wrote 24 rows to {out}" in printed
    assert "probe fits failed" in printed  # QDA on fc2
    rows = pd.read_csv(out, keep_default_na=False)
    assert len(rows) == 24 and set(rows["probe"]) == {"ncm", "qda"}
