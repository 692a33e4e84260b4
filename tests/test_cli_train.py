"""``masc-fast train`` through cli_train.register / run on digits."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

import masc_fast.pipeline.runs.train as train_run_module
from masc_fast.cli.train import register, run
from masc_fast.models import MLP
from masc_fast.pipeline.runs.files import read_metrics


@pytest.fixture
def parser(monkeypatch):
    def build(config, info):  # a small MLP keeps each epoch at milliseconds
        torch.manual_seed(config.seed)
        return MLP(info.input_shape[0], info.num_classes, hidden=(16,))

    monkeypatch.setattr(train_run_module, "_build_model", build)
    top = argparse.ArgumentParser(prog="masc-fast")
    train = register(top.add_subparsers(dest="command", required=True))
    assert train.get_default("run") is run
    return top


def _train(parser, *argv) -> int:
    args = parser.parse_args(["train", *argv])
    return args.run(args)


def test_cli_train_runs_and_prints_a_summary_line(parser, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--model", "mlp", "--dataset", "digits", "--p", "0.2", "--seed", "2"]
    code = _train(parser, *common, "--out", str(out), "--max-epochs", "3", "--no-progress")
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("mlp/digits p=0.2 seed=2: stopped at the epoch cap after 3 epoch(s)")
    assert str(out) in line
    assert [row["epoch"] for row in read_metrics(out / "metrics.csv")] == [0, 1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    assert f"test {summary['final_test_accuracy']:.4f}" in line

    with pytest.raises(FileExistsError, match="--resume"):
        _train(parser, *common, "--out", str(out), "--max-epochs", "3", "--no-progress")
    assert (
        _train(parser, *common, "--out", str(out), "--max-epochs", "3", "--resume", "--no-progress")
        == 0
    )
    assert capsys.readouterr().out.strip() == line


def test_cli_train_maps_every_option_into_the_config(parser, tmp_path):
    out = tmp_path / "run"
    argv = [
        "--model", "mlp", "--dataset", "digits", "--p", "0.6", "--seed", "4",
        "--noise-recipe", "paper", "--no-shuffle", "--out", str(out), "--max-epochs", "2",
        "--lr", "0.01", "--momentum", "0.5", "--batch-size", "128", "--optimizer", "sgd",
        "--target-accuracy", "0.95", "--checkpoint-every", "1", "--device", "cpu",
        "--data-root", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    assert _train(parser, *argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config == {
        "model": "mlp",
        "dataset": "digits",
        "p": 0.6,
        "seed": 4,
        "noise_recipe": "paper",
        "shuffle": False,
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.5,
        "batch_size": 128,
        "target_accuracy": 0.95,
        "max_epochs": 2,
        "checkpoint_every": 1,
        "data_root": str(tmp_path),
        "download": False,
        "device": "cpu",
        "compile": False,
        "amp": False,
    }
    recipe = json.loads((out / "recipe.json").read_text())["recipe"]
    assert recipe == {
        "optimizer": "sgd",
        "lr": 0.01,
        "momentum": 0.5,
        "batch_size": 128,
        "target_accuracy": 0.95,
        "max_epochs": 2,
    }
    assert (out / "checkpoints" / "epoch_0001.safetensors").is_file()


def test_cli_train_defaults(parser):
    args = parser.parse_args(["train", "--model", "cnn", "--dataset", "mnist", "--out", "x"])
    assert (args.p, args.seed, args.noise_recipe, args.no_shuffle) == (None, 0, "seeded", False)
    assert args.randomize == "none"  # --p unset: 0, or 1 with --randomize random-labels
    assert args.max_epochs is None and args.lr is None and args.checkpoint_every == 10
    assert not (args.resume or args.download or args.compile or args.amp or args.no_progress)


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "vgg", "--dataset", "digits", "--out", "x"],
        ["--model", "mlp", "--dataset", "digits"],
        ["--model", "mlp", "--dataset", "digits", "--out", "x", "--target-accuracy", "99.9"],
    ],
)
def test_cli_train_rejects_bad_arguments(parser, argv, capsys):
    with pytest.raises(SystemExit):
        parser.parse_args(["train", *argv])
    assert "error" in capsys.readouterr().err
