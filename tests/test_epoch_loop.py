"""The one resumable epoch loop (training runs, retraining, train_until): commits, resume."""

from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from masc_fast.pipeline.runs.checkpoints import checkpoint_metadata, load_model_weights
from masc_fast.pipeline.runs.epoch_loop import EpochLoop, LoopFiles
from masc_fast.pipeline.runs.files import write_metrics

COLUMNS = ("epoch", "loss", "best")


class Interrupted(Exception):
    """Stands in for a kill between two epochs."""


def _job(tmp_path, *, fail_at=None):
    """A loop training a linear model on fixed data with shuffled batches (the RNG matters)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 4, generator=generator), torch.randint(0, 3, (64,), generator=generator)
    files = LoopFiles(
        last=tmp_path / "last.safetensors",
        final=tmp_path / "final.safetensors",
        write_metrics=lambda rows: write_metrics(tmp_path / "metrics.csv", rows, COLUMNS),
        best=tmp_path / "best.safetensors",
        periodic=lambda epoch: tmp_path / f"epoch_{epoch}.safetensors",
        checkpoint_every=2,
    )
    loop = EpochLoop(model, optimizer, max_epochs=6, files=files)

    def epoch_row(epoch):
        if epoch == fail_at:
            raise Interrupted
        losses = []
        for index in torch.randperm(64).split(16):  # the global RNG, saved with ``last``
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return {"epoch": epoch, "loss": sum(losses) / len(losses)}

    def track(state, row):
        if state["best"] is None or row["loss"] < state["best"]:
            state.update(best=row["loss"], best_epoch=row["epoch"])
        row["best"] = state["best"]

    def run():
        return loop.run(epoch_row, stop=lambda rows, state: False, track=track)

    return model, loop, run


def test_a_resumed_loop_ends_where_an_uninterrupted_one_does(tmp_path):
    whole, straight = tmp_path / "whole", tmp_path / "killed"
    model, loop, run = _job(whole)
    loop.start([{"epoch": 0, "loss": float("nan"), "best": None}], {"best": None, "best_epoch": 0})
    rows = run()
    loop.finish()

    _, killed, run_killed = _job(straight, fail_at=4)
    killed.start(
        [{"epoch": 0, "loss": float("nan"), "best": None}], {"best": None, "best_epoch": 0}
    )
    with pytest.raises(Interrupted):
        run_killed()
    assert killed.epoch == 3 and checkpoint_metadata(straight / "last.safetensors")["epoch"] == 3
    resumed_model, resumed, run_resumed = _job(straight)  # a new process: fresh model, RNG
    resumed.resume()
    assert resumed.epoch == 3 and resumed.state["best_epoch"] in (1, 2, 3)
    resumed_rows = run_resumed()
    resumed.finish()

    assert [row["epoch"] for row in resumed_rows] == list(range(7))
    assert resumed_rows[1:] == rows[1:]  # same losses, bit for bit
    for name in ("final", "best", "epoch_2", "epoch_4", "epoch_6"):
        got, want = nn.Linear(4, 3), nn.Linear(4, 3)
        load_model_weights(straight / f"{name}.safetensors", got)
        load_model_weights(whole / f"{name}.safetensors", want)
        assert torch.equal(got.weight, want.weight), name
    best_epoch = checkpoint_metadata(whole / "best.safetensors")["epoch"]
    assert best_epoch == resumed.state["best_epoch"]
    with open(straight / "metrics.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(range(7))
    assert not (straight / "epoch_3.safetensors").exists()  # only every checkpoint_every


def test_the_loop_stops_on_its_rule_and_keeps_nothing_without_files(tmp_path):
    model = nn.Linear(2, 2)
    loop = EpochLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), max_epochs=10)
    loop.start([], {"seen": 0})
    seen = []
    rows = loop.run(
        lambda epoch: {"epoch": epoch, "value": epoch * 10},
        stop=lambda rows, state: bool(rows) and rows[-1]["value"] >= 30,
        track=lambda state, row: state.update(seen=state["seen"] + 1),
        on_epoch=seen.append,
    )
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert loop.state == {"seen": 3} and seen == rows
    loop.finish()  # no files: nothing written
    assert list(tmp_path.iterdir()) == []
