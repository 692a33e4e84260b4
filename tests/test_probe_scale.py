"""probe() with per-layer strategies, a memory budget, stored activations, checkpoints and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import masc_fast
from masc_fast.probing.strategy import parse_bytes, plan_strategies
from masc_fast.testing.synthetic import structured_classes

K, D = 5, 48


class _Killed(RuntimeError):
    pass


@pytest.fixture(scope="module")
def problem():
    x, y = structured_classes(900, D, K, rank=16, seed=6)
    generator = torch.Generator().manual_seed(1)
    noisy = y.clone()
    flip = torch.rand(900, generator=generator) < 0.3
    noisy[flip] = torch.randint(0, K, (int(flip.sum()),), generator=generator)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(D, 96), nn.ReLU(), nn.Linear(96, 40), nn.ReLU(), nn.Linear(40, K)
    )
    train = [(x[i : i + 75], noisy[i : i + 75], y[i : i + 75]) for i in range(0, 750, 75)]
    test = [(x[750:], y[750:])]
    return model, train, test


class _CountingModel(nn.Module):
    """Wraps a model and counts forward calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.masc_layers = {"hidden": "inner.1", "last": "inner.3"}

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


class _killing:  # noqa: N801 - reads like the function it replaces
    """A re-iterable loader (the probe refuses one-shot iterators) that dies at batch
    ``after``."""

    def __init__(self, loader, after):
        self.loader, self.after = loader, after

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if index == self.after:
                raise _Killed(f"killed at batch {index}")
            yield batch


def _predictions(result):
    table = result.table.set_index(["layer", "subspaces", "split", "labels"])
    return table["accuracy"].to_dict(), result.components["components"].tolist()


def test_parse_bytes():
    assert parse_bytes("8GiB") == 8 << 30
    assert parse_bytes("512 MB") == 512 << 20
    assert parse_bytes(1000) == 1000
    for bad in ("lots", "-1GB", "0"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_bytes(bad)
    with pytest.raises(TypeError, match="memory_budget must be bytes"):
        parse_bytes(True)


def test_auto_plan_gives_grams_to_the_layers_that_fit_smallest_first():
    dims = {"input": 256, "fc1": 4096, "fc2": 4096}
    plan = plan_strategies(dims, num_classes=200, label_sets=2, memory_budget=8 << 30)
    assert plan == {"input": "gram", "fc1": "stored", "fc2": "stored"}
    big = plan_strategies(dims, num_classes=2, label_sets=1, memory_budget=8 << 30)
    assert big == {"input": "gram", "fc1": "gram", "fc2": "gram"}
    forced = plan_strategies(
        dims, num_classes=200, label_sets=2, memory_budget=8 << 30, requested={"fc2": "randomized"}
    )
    assert forced["fc2"] == "randomized" and forced["fc1"] == "stored"
    with pytest.raises(ValueError, match="strategy must be one of auto, gram, .* got 'svd'"):
        plan_strategies(dims, num_classes=2, label_sets=1, memory_budget=1, requested="svd")
    with pytest.raises(ValueError, match="strategy for layer 'fc1' must be one of"):
        plan_strategies(dims, num_classes=2, label_sets=1, memory_budget=1, requested={"fc1": "x"})
    with pytest.raises(ValueError, match=r"not probed: \['fc9'\]"):
        plan_strategies(
            dims, num_classes=2, label_sets=1, memory_budget=1, requested={"fc9": "gram"}
        )


@pytest.mark.parametrize("strategy", ["stored", "gram_trick", "randomized"])
def test_each_strategy_agrees_with_streamed_grams(problem, strategy):
    model, train, test = problem
    gram = masc_fast.probe(model, train, {"test": test}, strategy="gram", progress=False)
    other = masc_fast.probe(model, train, {"test": test}, strategy=strategy, progress=False)
    assert set(other.strategies.values()) == {strategy}
    assert gram.components["components"].tolist() == other.components["components"].tolist()
    for (key, accuracy), (_, expected) in zip(
        other.table.set_index(["layer", "subspaces", "split", "labels"])["accuracy"].items(),
        gram.table.set_index(["layer", "subspaces", "split", "labels"])["accuracy"].items(),
    ):
        assert abs(accuracy - expected) <= 0.005, (key, accuracy, expected)  # 1 point in 150
    methods = set(other.components["method"])
    assert methods <= {"gram_trick", "randomized"}
    assert (other.components["captured"] > 0.99).all()


def test_small_budget_sends_layers_to_the_store_and_phases_are_reported(problem):
    model, train, test = problem
    result = masc_fast.probe(model, train, {"test": test}, memory_budget=100_000, progress=False)
    assert set(result.strategies.values()) == {"stored"}
    assert set(result.phases["phase"]) == {"forward", "gram", "eigensolve", "scoring"}
    assert (result.phases["seconds"] > 0).all()
    assert (result.phases["peak_rss_mb"] > 0).all()
    assert result.activation_dir is None


def test_kill_mid_pass_then_resume_matches_and_skips_the_forward(problem, tmp_path):
    model, train, test = problem
    store = tmp_path / "store"
    whole = masc_fast.probe(
        _CountingModel(model), train, {"test": test}, strategy="stored", progress=False
    )
    counting = _CountingModel(model)
    with pytest.raises(_Killed):
        masc_fast.probe(
            counting,
            _killing(train, after=6),
            {"test": test},
            activation_dir=store,
            checkpoint_seconds=0,  # checkpoint after every batch
            strategy={"hidden": "stored", "last": "gram"},
            progress=False,
        )
    assert counting.calls == 6 and (store / "checkpoint.json").exists()
    with pytest.raises(ValueError, match="holds a probe checkpoint; pass resume=True"):
        masc_fast.probe(counting, train, activation_dir=store, progress=False)
    counting.calls = 0
    resumed = masc_fast.probe(
        counting,
        train,
        {"test": test},
        activation_dir=store,
        resume=True,
        strategy={"hidden": "stored", "last": "gram"},
        progress=False,
    )
    assert counting.calls == 4 + len(train) + len(test)  # 4 fit batches left, then scoring
    assert resumed.strategies == {"hidden": "stored", "last": "gram"}
    assert _predictions(resumed) == _predictions(whole)
    assert resumed.model_accuracy.equals(whole.model_accuracy)
    assert not (store / "checkpoint.json").exists() and not (store / "hidden").exists()


def test_resume_with_other_batches_is_refused(problem, tmp_path):
    model, train, _ = problem
    with pytest.raises(_Killed):
        masc_fast.probe(
            model,
            _killing(train, after=3),
            activation_dir=tmp_path,
            checkpoint_seconds=0,
            strategy="stored",
            progress=False,
        )
    shuffled = [train[1], train[0], *train[2:]]
    with pytest.raises(ValueError, match="resume: batch 0 has other labels"):
        masc_fast.probe(
            model, shuffled, activation_dir=tmp_path, resume=True, strategy="stored", progress=False
        )


def test_keep_activations_keeps_shards_and_says_where(problem, tmp_path):
    model, train, test = problem
    result = masc_fast.probe(
        model,
        train,
        {"test": test},
        activation_dir=tmp_path,
        keep_activations=True,
        store_dtype=torch.float16,
        strategy="stored",
        progress=False,
    )
    assert result.activation_dir == str(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*/rows_00000.bin"))  # shards kept
    assert (tmp_path / "checkpoint.json").exists()


def test_temporary_store_is_removed_even_on_error(problem, tmp_path, monkeypatch):
    model, train, _ = problem
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with pytest.raises(_Killed):
        masc_fast.probe(model, _killing(train, after=2), strategy="stored", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_options_raise(problem, tmp_path):
    model, train, _ = problem
    with pytest.raises(ValueError, match="resume=True needs the activation_dir"):
        masc_fast.probe(model, train, resume=True, progress=False)
    with pytest.raises(TypeError, match="store_dtype must be torch.float32 or torch.float16"):
        masc_fast.probe(model, train, store_dtype=torch.int8, progress=False)
    with pytest.raises(ValueError, match="memory_budget 'huge' is not a size"):
        masc_fast.probe(model, train, memory_budget="huge", progress=False)
