"""Tests of the per-op CPU choice between the cpp and torch backends under ``auto``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import backend_status

from masc_fast import GramAccumulator, backends
from masc_fast.backends import cpu_choice, select_backend

_TABLE = {
    "subspace_scores": {
        (10000, 512, 2000): {"cpp": 0.1, "torch": 0.2},
        (100, 16, 20): {"cpp": 0.002, "torch": 0.001},
    },
    "gram_update": {(10, 784, 10240): {"cpp": 0.1, "torch": 0.3}},
}


@pytest.fixture
def fake_table(monkeypatch):
    monkeypatch.setattr(cpu_choice, "_MEASURED", _TABLE)


@pytest.fixture
def cpp_usable(monkeypatch):
    real = backends._availability
    monkeypatch.setattr(
        backends, "_availability", lambda name: (True, "") if name == "cpp" else real(name)
    )
    monkeypatch.delenv("MASC_FAST_BACKEND", raising=False)


def test_cpu_winner_takes_the_nearest_measured_shape(fake_table):
    assert cpu_choice.cpu_winner("subspace_scores", (8000, 600, 2500)) == "cpp"
    assert cpu_choice.cpu_winner("subspace_scores", (50, 10, 30)) == "torch"
    assert cpu_choice.cpu_winner("gram_update", (3, 5, 7)) == "cpp"


def test_cpu_winner_defaults_to_cpp_without_measurements(monkeypatch):
    monkeypatch.setattr(cpu_choice, "_MEASURED", {"subspace_scores": {}, "gram_update": {}})
    assert cpu_choice.cpu_winner("gram_update", (10, 10, 10)) == "cpp"


def test_cpu_winner_rejects_unknown_op():
    with pytest.raises(ValueError, match="unknown op 'nope'"):
        cpu_choice.cpu_winner("nope", (1, 2, 3))


def test_select_backend_consults_the_table_only_for_auto_on_cpu(fake_table, cpp_usable):
    tiny = (60, 12, 24)
    assert select_backend("auto", "cpu", op="subspace_scores", shape=tiny) == "torch"
    assert select_backend("auto", "cpu", op="subspace_scores", shape=(9000, 500, 1900)) == "cpp"
    assert select_backend("auto", "cpu") == "cpp"  # no shape: the plain rule
    assert select_backend("cpp", "cpu", op="subspace_scores", shape=tiny) == "cpp"  # explicit


def test_select_backend_table_ignored_when_cpp_is_missing(fake_table, monkeypatch):
    monkeypatch.delenv("MASC_FAST_BACKEND", raising=False)
    real = backends._availability
    monkeypatch.setattr(
        backends,
        "_availability",
        lambda name: (False, "simulated") if name == "cpp" else real(name),
    )
    backends._log_fallback_once.cache_clear()
    shape = (10000, 512, 2000)
    assert select_backend("auto", "cpu", op="subspace_scores", shape=shape) == "torch"
    backends._log_fallback_once.cache_clear()


def test_scoring_and_accumulator_record_the_backend_the_table_picked(fake_table, cpp_usable):
    if not backend_status()["cpp"][0]:
        pytest.skip(backend_status()["cpp"][1])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator)
    y = torch.arange(300) % 3
    accumulator = GramAccumulator(3, 16)
    assert accumulator.backend == "cpp"  # nearest measured Gram shape: cpp won
    accumulator.update(x, y)
    subspaces = accumulator.fit(0.9)
    result = subspaces.score(x[:100])  # (100, 16, R) is nearest the shape torch won
    assert result.backend == "torch"
    cpp_pred = subspaces.score(x[:100], backend="cpp").pred
    assert np.array_equal(result.pred.numpy(), cpp_pred.numpy())


def test_probe_names_each_op_backend_when_they_differ():
    from masc_fast.probe import _backends_that_ran

    assert _backends_that_ran({"cpp"}, {"cpp"}) == "cpp"
    assert _backends_that_ran({"cpp"}, {"torch", "cpp"}) == (
        "gram_update=cpp, subspace_scores=cpp+torch"
    )


def test_real_table_holds_both_ops_with_both_backends():
    for op in cpu_choice.OPS:
        assert cpu_choice._MEASURED[op], f"no measurements for {op}"
        for shape, medians in cpu_choice._MEASURED[op].items():
            assert set(medians) == {"cpp", "torch"}, (op, shape)
            assert all(value > 0 for value in medians.values())
