"""The probe on two gloo ranks against one process over all the rows: streamed Grams (small
classes gathered), stored rows (randomized PCA summed over ranks, Gram-trick classes on their
owners), the threshold sweep, a local probe inside the group, and the faults (a bad batch on
one rank, a rank that dies, then the resume)."""

from __future__ import annotations

import os

import pandas as pd
import pytest
import torch

import masc_fast
from masc_fast.data import load_dataset
from masc_fast.data.corruption import noisy_labels
from masc_fast.models import build_model
from masc_fast.testing.ranks import run_ranks, values

pytestmark = pytest.mark.slow

TRAIN_CUTS = (0, 700, 1347)  # rank 0 and rank 1 shards: uneven on purpose
TEST_CUTS = (0, 150, 450)
THRESHOLDS = (0.5, 0.9, 0.99)


def _setup():
    """Real rows: digits through a seeded, untrained mlp-small (512-wide layers, ~135 rows
    per class: Gram-trick classes), labels corrupted at p = 0.3."""
    train, test = load_dataset("digits", progress=False)
    torch.manual_seed(0)
    model = build_model("mlp-small", input_shape=train.info.input_shape, num_classes=10)
    corrupted = torch.as_tensor(noisy_labels(train.labels.numpy(), 0.3, 10, seed=0))
    x_train, x_test = train.inputs(slice(None)), test.inputs(slice(None))
    return model, (x_train, corrupted, train.labels), (x_test, test.labels)


def _batches(tensors, start, stop, size=100):
    return [tuple(t[i : min(i + size, stop)] for t in tensors) for i in range(start, stop, size)]


def _shards(rank):
    model, train, test = _setup()
    mine = _batches(train, TRAIN_CUTS[rank], TRAIN_CUTS[rank + 1])
    return model, mine, {"test": _batches(test, TEST_CUTS[rank], TEST_CUTS[rank + 1])}


def _everything():
    model, train, test = _setup()
    return model, _batches(train, 0, TRAIN_CUTS[-1]), {"test": _batches(test, 0, TEST_CUTS[-1])}


def _probes(rank):
    """The probes of one rank: each strategy, the threshold sweep, and a local probe."""
    model, train, evals = _shards(rank)
    options = {"progress": False, "backend": "torch"}
    out = {}
    for strategy in ("gram", "stored"):
        result = masc_fast.probe(model, train, evals, strategy=strategy, **options)
        out[strategy] = (result.table, result.components)
    swept = masc_fast.probe(model, train, evals, thresholds=THRESHOLDS, **options)
    out["thresholds"] = (swept.table, swept.components)
    local = masc_fast.probe(model, train, evals, distributed=False, **options)
    out["local"] = (local.table, local.components)
    return out


def _sorted(table):
    keys = [column for column in table.columns if column not in ("accuracy", "captured")]
    return table.sort_values(keys).reset_index(drop=True)


def _assert_same(distributed, single):
    """Same rows and counts; accuracies within 1e-4; captured variance within 1e-6."""
    table, components = (_sorted(part) for part in distributed)
    expected_table, expected_components = (_sorted(part) for part in single)
    exact = [c for c in expected_table.columns if c != "accuracy"]
    pd.testing.assert_frame_equal(table[exact], expected_table[exact], check_dtype=False)
    assert (table["accuracy"] - expected_table["accuracy"]).abs().max() <= 1e-4
    exact = [c for c in expected_components.columns if c != "captured"]
    pd.testing.assert_frame_equal(components[exact], expected_components[exact])
    assert (components["captured"] - expected_components["captured"]).abs().max() <= 1e-6


def test_two_ranks_equal_one_process_over_all_rows(tmp_path):
    ranks = values(run_ranks(_probes, folder=tmp_path))
    model, train, evals = _everything()
    options = {"progress": False, "backend": "torch"}
    for strategy in ("gram", "stored"):
        single = masc_fast.probe(model, train, evals, strategy=strategy, **options)
        if strategy == "stored":  # both solvers ran: the spread and the summed one
            assert set(single.components["method"]) == {"gram_trick", "randomized"}
        else:
            assert {"gram_trick", "exact"} <= set(single.components["method"])
        for rank in ranks:
            _assert_same(rank[strategy], (single.table, single.components))
    swept = masc_fast.probe(model, train, evals, thresholds=THRESHOLDS, **options)
    for rank in ranks:
        _assert_same(rank["thresholds"], (swept.table, swept.components))
    # distributed=False inside the group: rank 1's own rows only
    model, mine, own_evals = _shards(1)
    local = masc_fast.probe(model, mine, own_evals, **options)
    _assert_same(ranks[1]["local"], (local.table, local.components))
    assert set(ranks[1]["local"][0]["n"]) == {647, 300}


def _nan_on_rank_one(rank):
    model, train, evals = _shards(rank)
    if rank == 1:
        x, y, y_true = train[2]
        x = x.clone()
        x[5, 3] = float("nan")
        train[2] = (x, y, y_true)
    return masc_fast.probe(model, train, evals, progress=False)


def test_a_nan_on_one_rank_names_it_and_the_others_stop(tmp_path):
    outcomes = run_ranks(_nan_on_rank_one, folder=tmp_path, group_timeout=30)
    bad, other = outcomes[1], outcomes[0]
    assert bad.error[0] == "ValueError"
    assert "rank 1 of 2" in bad.error[1] and "batch 2" in bad.error[1]
    assert "input" in bad.error[1]  # the layer
    assert other.error is not None and other.error[0] == "RankFailure", other
    assert "rank 0 of 2" in other.error[1]
    assert other.seconds < 60  # stopped, not hung until the test's own limit


class _DyingLoader:
    """Rank 1's batches; the process dies (no cleanup, like a kill) before batch ``die_at``."""

    def __init__(self, batches, die_at):
        self.batches, self.die_at = batches, die_at

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            if index == self.die_at:
                os._exit(3)
            yield batch


def _probe_that_dies(rank, folder, die):
    model, train, evals = _shards(rank)
    if rank == 1 and die:
        train = _DyingLoader(train, die_at=4)
    result = masc_fast.probe(
        model,
        train,
        evals,
        progress=False,
        strategy="stored",
        activation_dir=folder,
        checkpoint_seconds=0,
        resume=not die,
    )
    return result.table, result.components


def test_a_dead_rank_stops_the_others_and_the_job_resumes(tmp_path):
    store = tmp_path / "store"
    outcomes = run_ranks(_probe_that_dies, str(store), True, folder=tmp_path / "first")
    assert outcomes[1].exitcode == 3 and outcomes[1].value is None
    survivor = outcomes[0]
    assert survivor.error is not None and survivor.error[0] == "RankFailure", survivor
    assert "resume" in survivor.error[1] and survivor.seconds < 60
    assert (store / "rank-1-of-2").is_dir()  # its checkpoint stays for the resume
    resumed = values(run_ranks(_probe_that_dies, str(store), False, folder=tmp_path / "again"))
    model, train, evals = _everything()
    single = masc_fast.probe(model, train, evals, strategy="stored", progress=False)
    for rank in resumed:
        _assert_same(rank, (single.table, single.components))
