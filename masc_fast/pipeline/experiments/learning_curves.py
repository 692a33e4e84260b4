"""Zhang et al.'s learning curves and time to fit, read from a finished training run.

The ``learning-curves`` experiment turns a run's ``steps.csv``, ``metrics.csv`` and
``summary.json`` into tidy rows (``layer`` "model", ``subspaces`` ""), what their Figure 1
plots:

* ``train_loss`` (split "train", labels "corrupted", extra column ``step``): the mean batch
  loss over windows of a quarter epoch, ``step`` the window's last step. Windows depend only on
  the steps per epoch (dataset size and batch), so seeds of one setting share them and
  aggregate step by step (1a);
* ``steps_to_fit`` and ``epochs_to_fit`` (split "train", labels "corrupted"): the optimiser
  steps and epochs until the running training accuracy reached the recipe's target (100 % for
  Zhang's networks; the end of that epoch), only for a run that reached it (1b);
* ``test_error`` (split "test", labels "true"): 1 − the test accuracy when training stopped (1c).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from masc_fast._io import read_json

__all__ = ["WINDOWS_PER_EPOCH", "learning_curve_rows", "loss_windows"]

#: Loss points per epoch in the ``train_loss`` rows.
WINDOWS_PER_EPOCH = 4


def loss_windows(steps: dict[str, np.ndarray]) -> pd.DataFrame:
    """Mean loss per window of ``ceil(steps per epoch / WINDOWS_PER_EPOCH)`` steps:
    columns ``step`` (the window's last step) and ``value``."""
    if len(steps["step"]) == 0:
        return pd.DataFrame({"step": [], "value": []})
    per_epoch = int((steps["epoch"] == steps["epoch"][0]).sum())
    width = max(1, math.ceil(per_epoch / WINDOWS_PER_EPOCH))
    window = (steps["step"] - 1) // width
    frame = pd.DataFrame({"window": window, "step": steps["step"], "value": steps["loss"]})
    grouped = frame.groupby("window", sort=True)
    return pd.DataFrame(
        {"step": grouped["step"].max().to_numpy(), "value": grouped["value"].mean().to_numpy()}
    )


def learning_curve_rows(run_dir: str | Path) -> pd.DataFrame:
    """The rows above for one run (module docstring).

    Raises
    ------
    FileNotFoundError
        If the run is unfinished (no ``summary.json``) or was trained before per-step
        losses were recorded (no ``steps.csv``); the message names the file.
    """
    from masc_fast.pipeline.results_table import tidy_rows
    from masc_fast.pipeline.runs.files import read_metrics, read_steps, run_paths
    from masc_fast.pipeline.runs.loading import load_config
    from masc_fast.pipeline.runs.recipes import TrainingRecipe

    paths = run_paths(Path(run_dir))
    for name in ("summary", "steps"):
        if not paths[name].is_file():
            why = "finished" if name == "summary" else "trained with per-step losses"
            raise FileNotFoundError(
                f"{paths[name]} is missing: learning curves need a run {why} (train it again "
                "with this version)"
            )
    steps = read_steps(paths["steps"])
    summary = read_json(paths["summary"])
    recipe = TrainingRecipe.from_dict(read_json(paths["recipe"])["recipe"])
    base = {"layer": "model", "subspaces": ""}
    curve = loss_windows(steps)
    rows = [
        {**base, "split": "train", "labels": "corrupted", "metric": "train_loss", **point}
        for point in curve.to_dict("records")
    ]
    metrics = read_metrics(paths["metrics"])
    fitted = [row for row in metrics[1:] if row["train_accuracy"] >= recipe.target_accuracy]
    if fitted:
        epoch = fitted[0]["epoch"]
        for metric, value in (
            ("steps_to_fit", int((steps["epoch"] <= epoch).sum())),
            ("epochs_to_fit", epoch),
        ):
            rows.append(
                {**base, "split": "train", "labels": "corrupted", "metric": metric, "value": value}
            )
    rows.append(
        {
            **base,
            "split": "test",
            "labels": "true",
            "metric": "test_error",
            "value": 1.0 - float(summary["final_test_accuracy"]),
        }
    )
    frame = pd.DataFrame(rows)
    frame["step"] = frame["step"].astype("Int64") if "step" in frame else pd.NA
    config = load_config(run_dir)
    return tidy_rows(frame, **config.run_columns(), experiment="learning-curves")
