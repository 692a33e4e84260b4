"""Zhang et al.'s Figure 1: learning-curve and time-to-fit extraction on a fixture run, the
three figures from a results table alone, and a real randomization sweep into the report."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from masc_fast.pipeline.experiments import run_experiment
from masc_fast.pipeline.experiments.learning_curves import learning_curve_rows, loss_windows
from masc_fast.pipeline.report import build_report
from masc_fast.pipeline.report.figures_zhang import (
    zhang_error_figure,
    zhang_fit_figure,
    zhang_loss_figure,
)
from masc_fast.pipeline.runs.config import RunConfig
from masc_fast.pipeline.runs.files import write_metrics, write_steps
from masc_fast.pipeline.runs.recipes import TrainingRecipe
from tests._grids import digits_grid, model_row


def _fixture_run(folder, *, accuracies, losses_per_epoch, test_accuracy=0.75, target=1.0):
    """A finished run's files, written by hand: 8 steps per epoch, given running accuracies."""
    folder.mkdir(parents=True)
    config = RunConfig("mlp-small", "digits", p=0.5, seed=2, randomize="partial")
    (folder / "config.json").write_text(json.dumps(config.to_dict()))
    recipe = TrainingRecipe("sgd", 0.01, 0.9, 128, target, 10, lr_decay=0.95)
    (folder / "recipe.json").write_text(json.dumps({"recipe": recipe.to_dict()}))
    rows = [
        {
            "epoch": 0,
            "train_loss": 2.3,
            "train_accuracy": 0.1,
            "train_accuracy_true": 0.1,
            "test_accuracy": 0.1,
            "seconds": 0.0,
        }
    ]
    for epoch, (accuracy, losses) in enumerate(zip(accuracies, losses_per_epoch), start=1):
        rows.append(
            {**rows[0], "epoch": epoch, "train_accuracy": accuracy, "step_losses": list(losses)}
        )
    rows[-1]["test_accuracy"] = test_accuracy
    write_metrics(folder / "metrics.csv", rows)
    write_steps(folder / "steps.csv", rows)
    summary = {"final_test_accuracy": test_accuracy}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_extraction_windows_time_to_fit_and_test_error(tmp_path):
    losses = [np.arange(8) + 10.0 * epoch for epoch in range(3)]  # 0..7, 10..17, 20..27
    run = _fixture_run(tmp_path / "run", accuracies=[0.5, 1.0, 1.0], losses_per_epoch=losses)
    rows = learning_curve_rows(run)
    curve = rows[rows["metric"] == "train_loss"]
    # 8 steps per epoch, 4 windows of 2 steps: means 0.5, 2.5, 4.5, 6.5, 10.5, ...
    assert curve["step"].tolist() == list(range(2, 25, 2))
    expected = [10.0 * e + m for e in range(3) for m in (0.5, 2.5, 4.5, 6.5)]
    assert curve["value"].tolist() == pytest.approx(expected)
    assert set(curve["split"]) == {"train"} and set(curve["labels"]) == {"corrupted"}
    values = rows.set_index("metric")["value"]
    assert values["steps_to_fit"] == 16 and values["epochs_to_fit"] == 2  # first epoch at 100 %
    assert values["test_error"] == pytest.approx(0.25)
    assert set(rows["randomize"]) == {"partial"} and set(rows["p"]) == {0.5}
    assert set(rows["experiment"]) == {"learning-curves"} and set(rows["seed"]) == {2}


def test_a_run_that_never_fits_has_no_time_to_fit(tmp_path):
    run = _fixture_run(
        tmp_path / "run", accuracies=[0.5, 0.9], losses_per_epoch=[np.ones(8), np.ones(8)]
    )
    rows = learning_curve_rows(run)
    assert "steps_to_fit" not in set(rows["metric"]) and "test_error" in set(rows["metric"])


def test_windows_cover_a_last_partial_window():
    steps = {"step": np.arange(1, 11), "epoch": np.repeat([1, 2], 5), "loss": np.arange(10.0)}
    windows = loss_windows(steps)  # 5 per epoch: windows of 2 steps
    assert windows["step"].tolist() == [2, 4, 6, 8, 10]
    assert windows["value"].tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_runs_without_step_losses_are_named(tmp_path):
    run = _fixture_run(tmp_path / "run", accuracies=[1.0], losses_per_epoch=[np.ones(8)])
    (run / "steps.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"steps.csv is missing: learning curves need"):
        learning_curve_rows(run)


def _table() -> pd.DataFrame:
    """Learning-curve rows of two seeds for every setting, as a sweep writes them."""
    rows = []
    settings = [("true", 0.0), ("partial", 0.5), ("random-labels", 1.0), ("gaussian", 0.0)]
    for seed in (0, 1):
        for mode, p in settings:
            base = model_row(p=p, seed=seed, randomize=mode)
            for step in range(10, 110, 10):
                rows.append(
                    {
                        **base,
                        "split": "train",
                        "labels": "corrupted",
                        "metric": "train_loss",
                        "step": step,
                        "value": 2.0 * np.exp(-step / (40 + 100 * p)) + 0.01 * seed,
                    }
                )
            rows.append(
                {
                    **base,
                    "split": "train",
                    "labels": "corrupted",
                    "metric": "steps_to_fit",
                    "value": 100 * (1 + 2 * p) + seed,
                }
            )
            rows.append(
                {
                    **base,
                    "split": "test",
                    "labels": "true",
                    "metric": "test_error",
                    "value": 0.1 + 0.8 * p,
                }
            )
    return pd.DataFrame(rows)


def test_each_figure_draws_its_lines_from_a_table_alone():
    table = _table()
    loss = zhang_loss_figure(table)
    labels = [line.get_label() for line in loss.axes[0].get_lines()]
    assert labels == ["true labels", "partial p = 0.5", "random labels", "Gaussian"]
    fit = zhang_fit_figure(table)
    (line,) = fit.axes[0].get_lines()[:1]
    # relative to the true labels' mean (100.5): 1.0 at 0, 200.5/100.5 at 0.5, 300.5/100.5 at 1
    assert line.get_xdata().tolist() == [0.0, 0.5, 1.0]
    assert line.get_ydata() == pytest.approx([1.0, 200.5 / 100.5, 300.5 / 100.5])
    error = zhang_error_figure(table)
    assert error.axes[0].get_lines()[0].get_ydata() == pytest.approx([0.1, 0.5, 0.9])
    assert zhang_loss_figure(table[table["metric"] != "train_loss"]) is None


def test_report_renders_the_three_figures_from_the_table(tmp_path):
    index = build_report(_table(), tmp_path / "report")
    figures = {path.name for path in (tmp_path / "report" / "figures").glob("*.png")}
    assert figures == {f"mlp-small-digits-zhang1{part}.png" for part in "abc"}
    page = index.read_text()
    assert "Zhang et al. Figure 1a" in page and "Zhang et al. Figure 1c" in page


def test_a_randomization_sweep_reaches_the_report(tmp_path):
    """Real runs: mlp-small on digits, two epochs each, true labels, random labels and
    Gaussian inputs; the learning-curves cells fill Figure 1a and 1c."""
    from masc_fast.pipeline.sweeps.cells import run_cell
    from masc_fast.pipeline.sweeps.run import load_sweep, run_sweep

    grid = digits_grid(
        tmp_path,
        p=[0.0],
        randomize=["true", "random-labels", "gaussian"],
        experiments=["learning-curves"],
        train={"max_epochs": 2},
        probe={"progress": False},
    )
    spec = load_sweep(grid)
    table = run_sweep(spec, run_cell=run_cell, progress=False)
    assert sorted(set(table["randomize"])) == ["gaussian", "random-labels", "true"]
    curve = table[table["metric"] == "train_loss"]
    assert len(curve) == 3 * 2 * 4  # 3 runs, 2 epochs, 4 windows per epoch
    error = table[table["metric"] == "test_error"].set_index("randomize")["value"]
    assert error["true"] < 0.5 < error["random-labels"]  # real labels generalise
    build_report(spec.results_dir, tmp_path / "report")
    figures = {path.name for path in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"mlp-small-digits-zhang1a.png", "mlp-small-digits-zhang1c.png"} <= figures
    run_dir = spec.runs_dir / "mlp-small-digits-true-p0-s0"
    direct = run_experiment(run_dir, "learning-curves")
    pd.testing.assert_frame_equal(
        direct.reset_index(drop=True),
        learning_curve_rows(run_dir).reset_index(drop=True),
    )
