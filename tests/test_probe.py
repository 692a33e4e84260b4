"""probe(): one streamed pass over a small MLP on digits, checked against an independent path.

The independent path collects activations with its own forward hooks, fits the scikit-learn
reference subspaces (``reference.fit_subspaces_ref``) and predicts with ``predict_ref``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pytest
import torch
from _compare import assert_labels_match
from conftest import TOLERANCES
from torch import nn

from masc_fast import ProbeResult, probe
from masc_fast import reference as ref

NUM_CLASSES = 10
LAYERS = ["input", "0", "2", "4"]  # input, the Flatten and the two ReLUs after a Linear
F32_ATOL = TOLERANCES[torch.float32][0]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10)
    )


@pytest.fixture(scope="module")
def data():
    """Digits split 1300/497, 20 % of training labels corrupted, and a briefly trained MLP."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.int64)
    x_train, y_true, x_test, y_test = x[:1300], y[:1300], x[1300:], y[1300:]
    y_corrupt = y_true.clone()
    flip = torch.from_numpy(rng.random(1300) < 0.2)
    y_corrupt[flip] = (y_true[flip] + torch.from_numpy(rng.integers(1, 10, int(flip.sum())))) % 10
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_corrupt).backward()
        optimizer.step()
    return model, x_train, y_corrupt, y_true, x_test, y_test


def _train_batches(data, sizes=None):
    _, x, y, y_true, _, _ = data
    bounds = np.cumsum([0, *(sizes or [100] * 13)])
    assert bounds[-1] == len(x)
    return [(x[lo:hi], y[lo:hi], y_true[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _test_batches(data):
    x_test, y_test = data[4], data[5]
    return [(x_test[lo : lo + 128], y_test[lo : lo + 128]) for lo in range(0, len(x_test), 128)]


def _run(data, **kwargs) -> ProbeResult:
    kwargs.setdefault("progress", False)
    train = kwargs.pop("train", None) or _train_batches(data)
    return probe(data[0], train, {"test": _test_batches(data)}, **kwargs)


@pytest.fixture(scope="module")
def result(data) -> ProbeResult:
    return _run(data)


def _activations(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each probed layer's output collected with hooks written here, as float64 NumPy."""
    captured = {}
    handles = [
        model[int(name)].register_forward_hook(
            lambda module, inputs, output, name=name: captured.__setitem__(name, output)
        )
        for name in LAYERS[1:]
    ]
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    captured["input"] = x
    return {name: captured[name].flatten(1).double().numpy() for name in LAYERS}


@pytest.fixture(scope="module")
def manual(data):
    model, x_train, y_corrupt, y_true, x_test, _ = data
    return _activations(model, x_train), _activations(model, x_test)


# ---------------------------------------------------------------- the table


def test_table_columns_and_rows(result):
    table = result.table
    assert list(table.columns) == [
        "layer",
        "dim",
        "subspaces",
        "split",
        "labels",
        "variance",
        "accuracy",
        "n",
        "components",
        "zero_rows",
    ]
    assert result.layers == LAYERS
    assert table["layer"].unique().tolist() == LAYERS  # in probe order
    expected = {
        (layer, subspaces, split, labels)
        for layer in LAYERS
        for subspaces in ("corrupted", "true")
        for split, labels in [("train", "corrupted"), ("train", "true"), ("test", "true")]
    }
    got = set(map(tuple, table[["layer", "subspaces", "split", "labels"]].values.tolist()))
    assert got == expected and len(table) == len(expected)
    dims = dict(zip(table["layer"], table["dim"]))
    assert dims == {"input": 64, "0": 64, "2": 32, "4": 16}
    assert set(table.loc[table["split"] == "train", "n"]) == {1300}
    assert set(table.loc[table["split"] == "test", "n"]) == {497}
    assert table["accuracy"].between(0, 1).all()
    assert result.backend in ("cpp", "torch")
    assert set(result.subspaces) == {(layer, s) for layer in LAYERS for s in ("corrupted", "true")}


def test_components_table_matches_subspaces(result):
    components = result.components
    for (layer, subspaces), fitted in result.subspaces.items():
        rows = components[(components["layer"] == layer) & (components["subspaces"] == subspaces)]
        assert rows["components"].tolist() == fitted.num_components.tolist()
        total = result.table.loc[
            (result.table["layer"] == layer) & (result.table["subspaces"] == subspaces),
            "components",
        ]
        assert set(total) == {int(fitted.num_components.sum())}
    assert components.groupby(["layer", "subspaces"])["train_rows"].sum().eq(1300).all()


def test_accuracies_match_independent_reference(result, data, manual):
    _, _, y_corrupt, y_true, _, y_test = data
    train_acts, test_acts = manual
    fit_labels = {"corrupted": y_corrupt.numpy(), "true": y_true.numpy()}
    score_sets = {
        ("train", "corrupted"): (train_acts, y_corrupt.numpy()),
        ("train", "true"): (train_acts, y_true.numpy()),
        ("test", "true"): (test_acts, y_test.numpy()),
    }
    for layer in LAYERS:
        for subspaces, labels in fit_labels.items():
            ref_bases = ref.fit_subspaces_ref(train_acts[layer], labels, NUM_CLASSES, 0.99)
            fitted = result.subspaces[(layer, subspaces)]
            assert fitted.num_components.tolist() == [b.shape[1] for b in ref_bases], layer
            for (split, scored_against), (acts, truth) in score_sets.items():
                ref_scores = ref.subspace_scores_ref(acts[layer], ref_bases)
                ref_pred = ref.predict_ref(acts[layer], ref_bases)
                pred = fitted.predict(acts[layer].astype(np.float32))
                where = f"{layer}/{subspaces}/{split}/{scored_against}"
                assert np.mean(pred == ref_pred) >= 0.999, where
                assert_labels_match(
                    pred,
                    ref_pred,
                    ref_scores,
                    score_tol=F32_ATOL,
                    max_excused_fraction=0.001,
                    name=where,
                )
                accuracy = result.accuracy(
                    layer, split=split, subspaces=subspaces, labels=scored_against
                )
                assert accuracy == pytest.approx(np.mean(ref_pred == truth), abs=0.001), where


def test_model_accuracy_matches_manual(result, data):
    model, x_train, y_corrupt, y_true, x_test, y_test = data
    with torch.no_grad():
        model.eval()
        train_pred, test_pred = model(x_train).argmax(1), model(x_test).argmax(1)

    def accuracy(pred, labels):
        return int((pred == labels).sum()) / len(labels)

    assert result.model("train", "corrupted") == accuracy(train_pred, y_corrupt)
    assert result.model("train", "true") == accuracy(train_pred, y_true)
    assert result.model("test", "true") == accuracy(test_pred, y_test)
    assert result.model("train", "true") > result.model("train", "corrupted")  # 20 % flipped
    assert np.isnan(result.model("validation", "true"))


def test_zero_rows_are_counted(result, manual):
    train_acts, test_acts = manual
    for layer in LAYERS:
        for split, acts in [("train", train_acts), ("test", test_acts)]:
            expected = int((~acts[layer].any(axis=1)).sum())
            counted = result.table.loc[
                (result.table["layer"] == layer) & (result.table["split"] == split), "zero_rows"
            ]
            assert set(counted) == {expected}, (layer, split)


# ---------------------------------------------------------------- best layer


def test_best_layer_is_the_maximum(result):
    rows = result.table[
        (result.table["split"] == "test")
        & (result.table["subspaces"] == "corrupted")
        & (result.table["labels"] == "true")
    ]
    best = result.best_layer()
    assert best["accuracy"] == rows["accuracy"].max()
    first_max = rows.loc[rows["accuracy"] == rows["accuracy"].max(), "layer"].iloc[0]
    assert best["layer"] == first_max


def test_best_layer_first_in_layer_order_on_ties(result):
    table = result.table.copy()
    test_rows = (table["split"] == "test") & (table["subspaces"] == "corrupted")
    table.loc[test_rows, "accuracy"] = 0.5
    tied = dataclasses.replace(result, table=table)
    assert tied.best_layer()["layer"] == "input"
    table.loc[test_rows & table["layer"].isin(["2", "4"]), "accuracy"] = 0.75
    assert dataclasses.replace(result, table=table).best_layer()["layer"] == "2"


def test_best_layer_unknown_selection_raises(result):
    with pytest.raises(KeyError, match="split='validation'"):
        result.best_layer(split="validation")


# ---------------------------------------------------------------- outputs


def test_to_csv_is_readable_and_atomic(result, tmp_path):
    path = result.to_csv(tmp_path / "out" / "probe.csv")
    assert os.listdir(tmp_path / "out") == ["probe.csv"]  # no temporary file left behind
    back = pd.read_csv(path, dtype={"layer": str})
    pd.testing.assert_frame_equal(back, result.table, check_dtype=False)
    result.to_csv(path)  # overwriting works and still leaves one file
    assert os.listdir(tmp_path / "out") == ["probe.csv"]


def test_plot_writes_png(result, tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "probe.png"
    figure = result.plot(path, title="digits MLP")
    try:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000
        assert [p.name for p in tmp_path.iterdir()] == ["probe.png"]
    finally:
        plt.close(figure)


# ---------------------------------------------------------------- streaming and options


def test_batch_split_does_not_change_the_result(result, data):
    uneven = _run(data, train=_train_batches(data, [1, 63, 300, 7, 529, 400]))
    pd.testing.assert_series_equal(uneven.table["components"], result.table["components"])
    np.testing.assert_allclose(uneven.table["accuracy"], result.table["accuracy"], atol=1e-3)
    assert uneven.table[["layer", "subspaces", "split", "labels", "n"]].equals(
        result.table[["layer", "subspaces", "split", "labels", "n"]]
    )


def test_deferred_batch_checks_do_not_change_the_result(result, data, monkeypatch):
    # What CUDA runs (verdicts read back at flushes and pass ends), here on the CPU.
    from functools import partial

    from masc_fast._validation import BatchChecks
    from masc_fast.probing import fit_pass, score_pass

    for module in (fit_pass, score_pass):
        monkeypatch.setattr(module, "BatchChecks", partial(BatchChecks, defer=True))
    deferred = _run(data)
    columns = ["layer", "subspaces", "split", "labels", "n", "components", "accuracy"]
    assert deferred.table[columns].equals(result.table[columns])
    assert deferred.table["zero_rows"].equals(result.table["zero_rows"])


def test_input_layer_only(data):
    only = _run(data, layers=["input"])
    assert only.layers == ["input"]
    assert only.table["layer"].unique().tolist() == ["input"]
    assert set(only.table["dim"]) == {64}


def test_display_names(result, data):
    named = _run(data, layers={"pixels": "input", "hidden1": "2"})
    assert named.layers == ["pixels", "hidden1"]
    assert dict(zip(named.table["layer"], named.table["dim"])) == {"pixels": 64, "hidden1": 32}
    for display, module in [("pixels", "input"), ("hidden1", "2")]:
        assert named.accuracy(display) == result.accuracy(module)


def test_training_mode_restored_and_hooks_removed(data):
    model = data[0]
    model.train()
    _run(data, layers=["input", "2"])
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    _run(data, layers=["input"])
    assert not model.training


class _ReusedActivation(nn.Module):
    """Calls the same ReLU module twice in one forward pass."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(64, 16), nn.Linear(16, 10), nn.ReLU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(x))))


def test_module_running_twice_raises(data):
    model = _ReusedActivation().train()
    with pytest.raises(
        RuntimeError, match="layer 'act': module 'act' ran more than once in one forward pass"
    ):
        probe(model, _train_batches(data), layers=["act"], progress=False)
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
