"""MASC across training: every checkpoint of a real digits run probed, timed, cached, drawn."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from masc_fast.cli.main import main
from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
from masc_fast.pipeline.experiments.dynamics import training_checkpoints
from masc_fast.pipeline.report import build_report
from masc_fast.pipeline.report.figures_dynamics import dynamics_figure
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.train import train_run

SETTINGS = ProbeSettings(progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """mlp-small on digits, p = 0.4, five epochs, a snapshot every second epoch."""
    folder = tmp_path_factory.mktemp("dynamics") / "run"
    config = RunConfig("mlp-small", "digits", p=0.4, max_epochs=5, checkpoint_every=2)
    train_run(config, folder, progress=False)
    return folder


def test_checkpoints_are_init_every_snapshot_and_final(run_dir):
    assert training_checkpoints(run_dir) == [
        ("init", 0),
        ("epoch_0002", 2),
        ("epoch_0004", 4),
        ("final", 5),
    ]


def test_every_checkpoint_is_probed_with_both_label_sets_and_timed(run_dir):
    rows = run_experiment(run_dir, "dynamics", settings=SETTINGS)
    test = rows[(rows["metric"] == "accuracy") & (rows["split"] == "test")]
    assert sorted(set(test["epoch"])) == [0, 2, 4, 5]
    for _, per_epoch in test.groupby("epoch"):
        assert set(per_epoch["subspaces"]) == {"corrupted", "true"}
        assert set(per_epoch["layer"]) == {"input", "fc1", "fc2"}
    # the input layer does not train: its MASC accuracy is the same at every checkpoint
    inputs = test[(test["layer"] == "input") & (test["subspaces"] == "true")]["value"]
    assert inputs.nunique() == 1
    # fc2 changes with training
    fc2 = test[(test["layer"] == "fc2") & (test["subspaces"] == "true")].set_index("epoch")
    assert fc2.loc[0, "value"] != fc2.loc[5, "value"]
    seconds = rows[rows["metric"] == "probe_seconds"].set_index("epoch")["value"]
    assert list(seconds.index) == [0, 2, 4, 5] and (seconds > 0).all()
    model = rows[(rows["metric"] == "model_accuracy") & (rows["split"] == "test")]
    assert sorted(set(model["epoch"])) == [0, 2, 4, 5]
    # cached per checkpoint: a second call reads the tables and gives the same rows
    again = run_experiment(run_dir, "dynamics", settings=SETTINGS)
    pd.testing.assert_frame_equal(rows, again)


def test_the_final_checkpoint_matches_exp1(run_dir):
    """The dynamics' last point is the paper's exp1 probe of the same final model."""
    dynamics = run_experiment(run_dir, "dynamics", settings=SETTINGS)
    shutil.rmtree(run_dir / "probes")  # exp1 probes afresh instead of reading the cache
    exp1 = run_experiment(run_dir, "exp1", settings=SETTINGS)
    pick = ["layer", "split", "labels", "value"]
    last = dynamics[
        (dynamics["epoch"] == 5)
        & (dynamics["metric"] == "accuracy")
        & (dynamics["subspaces"] == "corrupted")
    ][pick]
    first = exp1[(exp1["metric"] == "accuracy")][pick]
    key = ["layer", "split", "labels"]
    merged = last.merge(first, on=key, suffixes=("_dynamics", "_exp1"))
    assert len(merged) == len(first) > 0
    np.testing.assert_array_equal(merged["value_dynamics"], merged["value_exp1"])


def test_cli_and_report(run_dir, tmp_path, capsys):
    out = tmp_path / "rows.csv"
    argv = ["probe", "--run", str(run_dir), "--experiment", "dynamics", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    rows = pd.read_csv(out)
    figure = dynamics_figure(rows)
    labels = {line.get_label() for line in figure.axes[0].get_lines()}
    assert {"fc2, corrupted subspaces", "fc2, true subspaces", "model test"} <= labels
    build_report(out, tmp_path / "report")
    assert (tmp_path / "report" / "figures" / "mlp-small-digits-dynamics.png").is_file()
