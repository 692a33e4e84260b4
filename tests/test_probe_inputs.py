"""probe() refuses loaders it cannot use before any work, warns about splits without rows and
names the split in errors from the scoring pass (issue 17, deliverable 6)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from masc_fast import probe
from masc_fast.probing.score_pass import EmptySplitWarning


@pytest.fixture(scope="module")
def small():
    """An untrained 64 → 16 → 10 MLP and digits batches (real rows; training is not needed to
    check loaders)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    train = [(x[i : i + 200], y[i : i + 200]) for i in range(0, 1400, 200)]
    test = [(x[1400:], y[1400:])]
    return model, train, test


def test_one_shot_train_iterator_is_refused_by_name(small):
    model, train, _ = small
    with pytest.raises(
        TypeError,
        match=r"train_loader is a one-shot iterator \(generator\); "
        "the probe reads the training data twice",
    ):
        probe(model, (batch for batch in train), progress=False)


def test_eval_loaders_as_a_list_is_refused_by_name(small):
    model, train, test = small
    with pytest.raises(
        TypeError,
        match=r"eval_loaders must map split names to loaders, e\.g\. "
        r"\{'test': test_loader\}; got a list",
    ):
        probe(model, train, [test], progress=False)


@pytest.mark.parametrize(
    ("loaders", "error", "message"),
    [
        ({"train": []}, ValueError, "may not name a split 'train'"),
        ({3: []}, TypeError, "keys are split names"),
    ],
)
def test_eval_split_names_are_checked(small, loaders, error, message):
    model, train, _ = small
    with pytest.raises(error, match=message):
        probe(model, train, loaders, progress=False)


def test_an_empty_eval_split_warns_and_has_no_rows(small):
    model, train, test = small
    with pytest.warns(EmptySplitWarning, match="probe: split 'val' yielded no rows"):
        result = probe(model, train, {"test": test, "val": []}, progress=False)
    assert set(result.table["split"]) == {"train", "test"}
    with pytest.raises(
        KeyError,
        match=r"no results for split='val'.*have splits \['test', "
        r"'train'\]",
    ):
        result.best_layer(split="val")


def test_errors_in_an_eval_split_name_the_split(small):
    model, train, test = small
    x, y = test[0]
    bad = [(x, torch.full_like(y, 12))]  # labels outside [0, 10)
    with pytest.raises(ValueError, match=r"^split 'holdout': .*12"):
        probe(model, train, {"holdout": bad}, progress=False)


def test_a_listed_layer_name_means_the_tables_layer():
    """``layers=["fc1"]`` on a model with ``masc_layers`` probes the table's fc1 (after the
    ReLU), not the Linear module called fc1; a mapping reaches the Linear explicitly."""
    from masc_fast.activations import resolve_layers
    from masc_fast.models import MLP

    model = MLP(in_features=64, hidden=(16, 8), num_classes=10)
    assert resolve_layers(model, ["fc1"]) == {"fc1": "relu1"}
    assert resolve_layers(model, "fc2") == {"fc2": "relu2"}
    assert resolve_layers(model, ["input", "out"]) == {"input": "input", "out": "out"}
    assert resolve_layers(model, {"fc1_linear": "fc1"}) == {"fc1_linear": "fc1"}
    x = torch.randn(30, 64)
    y = torch.arange(30) % 10
    listed = probe(model, [(x, y)], layers=["fc1"], progress=False)
    default = probe(model, [(x, y)], progress=False)
    pick = ["layer", "split", "subspaces", "labels", "accuracy"]
    assert (
        listed.table[pick]
        .reset_index(drop=True)
        .equals(default.table[default.table["layer"] == "fc1"][pick].reset_index(drop=True))
    )


def test_a_store_too_small_is_reported_before_the_pass(small, tmp_path, monkeypatch):
    """The disk the stored layers and checkpoints need, against the free space, before any
    row is written: an error naming both (the loader announces its rows)."""
    import errno
    import shutil
    from collections import namedtuple

    model, train, _ = small
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(
        OSError,
        match=r"the probe needs about [\d,]+ bytes in .*store \(1,400 "
        r"rows of the stored layers \['1', 'input'\] and checkpoints\) and 1,000 are "
        "free",
    ) as caught:
        probe(model, train, activation_dir=tmp_path / "store", strategy="stored", progress=False)
    assert caught.value.errno == errno.ENOSPC
    assert not any((tmp_path / "store").rglob("rows_*.bin"))
