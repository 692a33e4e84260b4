"""Randomization tests as training runs: the config's rules, the run's inputs and labels, the
CLI flag and the sweep axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masc_fast.cli.main import main
from masc_fast.data import load_dataset
from masc_fast.data.randomization import randomize_split
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.loading import load_labels, load_run
from masc_fast.pipeline.runs.train import train_run
from masc_fast.pipeline.sweeps.grid import load_sweep
from tests._grids import digits_grid


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"randomize": "random-labels"}, r"needs p = 1, got p=0"),
        ({"randomize": "true", "p": 0.2}, r"needs p = 0, got p=0.2"),
        ({"randomize": "gaussian", "p": 0.2}, r"needs p = 0, got p=0.2"),
        ({"randomize": "partial"}, r"needs 0 < p <= 1, got p=0"),
        ({"randomize": "partial", "p": 0.4, "noise_recipe": "paper"}, "Zhang's seeded"),
        ({"randomize": "pixels"}, "randomization must be one of"),
    ],
)
def test_run_config_fixes_p_for_each_randomization(changes, match):
    with pytest.raises(ValueError, match=match):
        RunConfig("mlp-small", "digits", **changes)


def test_run_config_records_randomize_only_when_used():
    plain = RunConfig("mlp-small", "digits", p=0.4)
    assert "randomize" not in plain.to_dict()  # configs from before the field still match
    shuffled = RunConfig("mlp-small", "digits", randomize="shuffled-pixels")
    assert shuffled.to_dict()["randomize"] == "shuffled-pixels"
    assert RunConfig.from_dict(shuffled.to_dict()) == shuffled


def test_an_input_randomized_run_trains_and_probes_on_the_same_inputs(tmp_path):
    """Training and load_run see the same randomized inputs; labels stay true (p = 0)."""
    config = RunConfig("mlp-small", "digits", randomize="random-pixels", seed=3, max_epochs=1)
    train_run(config, tmp_path / "run", progress=False)
    loaded = load_run(tmp_path / "run", "final", device="cpu", progress=False)
    raw, _ = load_dataset("digits", progress=False)
    expected = randomize_split(raw, "random-pixels", seed=3)
    assert torch.equal(loaded.train.data, expected.data)
    assert not torch.equal(loaded.train.data, raw.data)
    assert torch.equal(loaded.test.data, load_dataset("digits", progress=False)[1].data)
    true, corrupted = load_labels(tmp_path / "run")
    assert torch.equal(true, corrupted) and torch.equal(true, raw.labels)


def test_cli_random_labels_sets_p_to_one(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "mlp-small", "--dataset", "digits", "--randomize"]
    argv += ["random-labels", "--max-epochs", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "p=1 seed=0" in capsys.readouterr().out
    true, corrupted = load_labels(out)
    changed = float((true != corrupted).double().mean())
    assert abs(changed - 0.9) < 0.05  # 1 − 1/K of 1 347 labels


def test_sweep_randomize_axis_gives_zhangs_figure_one_grid(tmp_path):
    path = digits_grid(
        tmp_path,
        p=[0.0, 0.5, 1.0],
        randomize=["none", "true", "partial", "random-labels", "gaussian"],
    )
    ids = [cell.cell_id for cell in load_sweep(path).cells()]
    assert ids == [
        "mlp-small-digits-p0-s0-exp1",
        "mlp-small-digits-p0.5-s0-exp1",
        "mlp-small-digits-p1-s0-exp1",
        "mlp-small-digits-true-p0-s0-exp1",
        "mlp-small-digits-partial-p0.5-s0-exp1",
        "mlp-small-digits-partial-p1-s0-exp1",
        "mlp-small-digits-random-labels-p1-s0-exp1",
        "mlp-small-digits-gaussian-p0-s0-exp1",
    ]
    path.write_text(path.read_text().replace('"gaussian"', '"noise"'))
    with pytest.raises(ValueError, match=r"sweep.randomize: unknown mode\(s\) \['noise'\]"):
        load_sweep(path)
    path.write_text(path.read_text().replace("[0.0, 0.5, 1.0]", "[0.0]").replace('"noise"', ""))
    with pytest.raises(ValueError, match="'partial' needs some p above 0"):
        load_sweep(path)


def test_seeded_shuffled_pixels_run_is_reproducible(tmp_path):
    """Same config, same inputs and weights: the randomization comes from the seed alone."""
    config = RunConfig("mlp-small", "digits", randomize="shuffled-pixels", max_epochs=1)
    for name in ("a", "b"):
        train_run(config, tmp_path / name, progress=False)
    first = load_run(tmp_path / "a", "final", device="cpu", progress=False)
    second = load_run(tmp_path / "b", "final", device="cpu", progress=False)
    assert torch.equal(first.train.data, second.train.data)
    assert torch.equal(first.test.data, second.test.data)
    assert not np.array_equal(first.test.data.numpy(), load_dataset("digits")[1].data.numpy())
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_masc_rows_of_a_randomized_run_name_it(tmp_path):
    """exp1 and dynamics rows of a randomization test carry its mode in every row."""
    from masc_fast.pipeline.experiments import ProbeSettings, run_experiment

    config = RunConfig("mlp-small", "digits", randomize="gaussian", max_epochs=1)
    train_run(config, tmp_path / "run", progress=False)
    settings = ProbeSettings(progress=False)
    for experiment in ("exp1", "dynamics", "learning-curves"):
        rows = run_experiment(tmp_path / "run", experiment, settings=settings)
        assert set(rows["randomize"]) == {"gaussian"}, experiment


def test_train_examples_trains_on_the_first_examples_for_every_seed(tmp_path, capsys):
    """``train_examples`` keeps the first N training examples (the same for every seed), the
    test split whole, and the run's labels, probing and randomization follow it."""
    with pytest.raises(ValueError, match="train_examples must be a whole number"):
        RunConfig("mlp-small", "digits", train_examples=0)
    assert "train_examples" not in RunConfig("mlp-small", "digits").to_dict()
    raw_train, raw_test = load_dataset("digits", progress=False)
    for seed in (0, 1):
        out = tmp_path / f"s{seed}"
        argv = ["train", "--model", "mlp-small", "--dataset", "digits", "--seed", str(seed)]
        argv += ["--randomize", "partial", "--p", "0.5", "--train-examples", "300"]
        assert main([*argv, "--max-epochs", "1", "--out", str(out), "--no-progress"]) == 0
        true, corrupted = load_labels(out)
        assert torch.equal(true, raw_train.labels[:300])
        assert 0 < int((true != corrupted).sum()) < 300
        loaded = load_run(out, "final", device="cpu", progress=False)
        assert torch.equal(loaded.train.data, raw_train.data[:300])
        assert len(loaded.test) == len(raw_test)
    with pytest.raises(ValueError, match=r"train_examples=5000 but dataset 'digits' has 1347"):
        train_run(
            RunConfig("mlp-small", "digits", train_examples=5000, max_epochs=1),
            tmp_path / "too-many",
            progress=False,
        )
