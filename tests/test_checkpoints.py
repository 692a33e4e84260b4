"""save_checkpoint / load_checkpoint: exact continuation for SGD and Adam, RNG, metadata, errors."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from masc_fast.models import MLP
from masc_fast.pipeline.runs.checkpoints import (
    checkpoint_metadata,
    load_checkpoint,
    load_model_weights,
    save_checkpoint,
)


def _problem(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=generator)
    y = torch.randint(0, 4, (40,), generator=generator)
    return x, y


def _setup(kind: str, seed: int = 3):
    torch.manual_seed(seed)
    model = MLP(6, 4, hidden=(16, 8))
    if kind == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return model, optimizer


def _step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_checkpoint_continuation_is_bitwise_identical(kind, tmp_path):
    x, y = _problem()
    model, optimizer = _setup(kind)
    for start in range(0, 40, 10):
        _step(model, optimizer, x[start : start + 10], y[start : start + 10])
    path = save_checkpoint(tmp_path / "state.safetensors", model, optimizer, epoch=4)

    # Continue the original without saving: two more steps.
    _step(model, optimizer, x[:10], y[:10])
    _step(model, optimizer, x[10:20], y[10:20])

    # A fresh model and optimizer, different init, restored from the file: the same two steps.
    restored, restored_optimizer = _setup(kind, seed=99)
    assert not torch.equal(restored.fc1.weight, model.fc1.weight)
    info = load_checkpoint(path, restored, restored_optimizer)
    assert info.epoch == 4 and info.has_optimizer and info.has_rng
    _step(restored, restored_optimizer, x[:10], y[:10])
    _step(restored, restored_optimizer, x[10:20], y[10:20])

    for (name, value), (_, other) in zip(model.state_dict().items(), restored.state_dict().items()):
        assert torch.equal(value, other), name
    state, other_state = optimizer.state_dict(), restored_optimizer.state_dict()
    assert state["param_groups"] == other_state["param_groups"]
    for index, entries in state["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, other_state["state"][index][key]), (index, key)


def test_checkpoint_adam_betas_come_back_as_a_tuple(tmp_path):
    model, optimizer = _setup("adam")
    x, y = _problem()
    _step(model, optimizer, x, y)
    path = save_checkpoint(tmp_path / "a.safetensors", model, optimizer, epoch=1)
    fresh_model, fresh = _setup("adam")
    load_checkpoint(path, fresh_model, fresh)
    assert fresh.param_groups[0]["betas"] == (0.9, 0.999)
    assert isinstance(fresh.param_groups[0]["betas"], tuple)
    assert fresh.state_dict()["state"][0]["step"].item() == 1.0


def test_checkpoint_keeps_sgd_hyper_parameters_from_the_file(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5)
    path = save_checkpoint(tmp_path / "s.safetensors", model, optimizer, epoch=0)
    other = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    load_checkpoint(path, model, other)
    assert other.param_groups[0]["lr"] == 0.3 and other.param_groups[0]["momentum"] == 0.5


def test_checkpoint_restores_rng_states_only_when_asked(tmp_path):
    model = nn.Linear(3, 2)
    torch.manual_seed(5)
    np.random.seed(6)  # noqa: NPY002
    random.seed(7)
    path = save_checkpoint(tmp_path / "r.safetensors", model, epoch=2)
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002

    load_checkpoint(path, model)  # restore_rng=False: the streams go on
    after = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert not torch.equal(after[0], expected[0])

    load_checkpoint(path, model, restore_rng=True)
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(again[0], expected[0])
    assert np.array_equal(again[1], expected[1])
    assert again[2] == expected[2]


def test_checkpoint_model_only_holds_weights_and_metadata(tmp_path):
    model, optimizer = _setup("sgd")
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        model,
        epoch=7,
        metadata={"kind": "best", "acc": 0.25},
        rng=False,
    )
    header = checkpoint_metadata(path)
    assert header["epoch"] == 7 and header["metadata"] == {"kind": "best", "acc": 0.25}
    assert "optimizer" not in header and "rng" not in header
    fresh, fresh_optimizer = _setup("sgd", seed=11)
    info = load_model_weights(path, fresh)
    assert info.epoch == 7 and not info.has_optimizer and not info.has_rng
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))
    with pytest.raises(ValueError, match="holds no optimizer state"):
        load_checkpoint(path, fresh, fresh_optimizer)
    with pytest.raises(ValueError, match="holds no RNG state"):
        load_checkpoint(path, restore_rng=True)


def test_checkpoint_replaces_atomically_and_leaves_no_temporary_files(tmp_path):
    model = nn.Linear(3, 2)
    path = tmp_path / "deep" / "c.safetensors"
    save_checkpoint(path, model, epoch=1)
    save_checkpoint(path, model, epoch=2)
    assert checkpoint_metadata(path)["epoch"] == 2
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_checkpoint(path, model, epoch=3, metadata={"bad": object()})
    assert checkpoint_metadata(path)["epoch"] == 2  # the old file survived the failed save
    assert sorted(p.name for p in path.parent.iterdir()) == ["c.safetensors"]


def test_checkpoint_rejects_wrong_model_optimizer_and_files(tmp_path):
    from safetensors.torch import save_file

    model, optimizer = _setup("sgd")
    path = save_checkpoint(tmp_path / "c.safetensors", model, optimizer, epoch=1)
    with pytest.raises(ValueError, match="weights do not fit MLP"):
        load_checkpoint(path, MLP(6, 4, hidden=(5,)))
    adam = torch.optim.Adam(model.parameters())
    with pytest.raises(ValueError, match="holds a SGD state; cannot load it into Adam"):
        load_checkpoint(path, model, adam)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.safetensors", model)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, str(plain))
    with pytest.raises(ValueError, match="not a masc_fast training checkpoint"):
        checkpoint_metadata(plain)


def test_checkpoint_metadata_is_json_in_the_safetensors_header(tmp_path):
    from safetensors import safe_open

    model, optimizer = _setup("adam")
    x, y = _problem()
    _step(model, optimizer, x, y)
    path = save_checkpoint(tmp_path / "h.safetensors", model, optimizer, epoch=1)
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
        header = json.loads(handle.metadata()["masc_fast.checkpoint"])
    assert {"model/fc1.weight", "optimizer/0/exp_avg", "optimizer/0/step", "rng/torch"} <= keys
    assert header["optimizer"]["class"] == "Adam"
    assert header["optimizer"]["param_groups"][0]["lr"] == 1e-2
