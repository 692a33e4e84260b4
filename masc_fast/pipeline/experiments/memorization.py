"""Arpit et al.'s measures of a run as result rows (``memorization`` experiment).

Reads the ``memorization/epoch_NNNN.npz`` files a run trained with ``memorization=True``
wrote (:mod:`masc_fast.pipeline.runs.memorization`) and returns rows (``layer`` "model",
``subspaces`` "", ``split`` "train", ``labels`` "corrupted": the labels it was trained on):

* per epoch (column ``epoch``, 0 = initialised): ``critical_sample_ratio``,
  ``loss_sensitivity_gini`` and ``loss_sensitivity_mean`` over the measured examples, and
  ``memorization_seconds``, what the measures cost that epoch;
* per example (column ``example``, its index in the training set): ``correct_after_epoch1``
  (1 or 0; averaged over seeds it is their per-example learnability) and
  ``loss_sensitivity``, ḡ_x averaged over the epochs ≥ 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["memorization_rows"]


def memorization_rows(run_dir: str | Path) -> pd.DataFrame:
    """The rows above for one run.

    Raises
    ------
    FileNotFoundError
        If the run recorded no measures (trained without ``memorization``); the message says
        how to record them.
    """
    from masc_fast.pipeline.results_table import tidy_rows
    from masc_fast.pipeline.runs.loading import load_config
    from masc_fast.pipeline.runs.memorization import gini, read_memorization

    folder = Path(run_dir) / "memorization"
    records = read_memorization(folder)
    if not records:
        raise FileNotFoundError(
            f"{folder} holds no epoch_NNNN.npz: train the run with memorization=True "
            "(masc-fast train --memorization, or [train] memorization = true in a sweep)"
        )
    base = {"layer": "model", "subspaces": "", "split": "train", "labels": "corrupted"}
    rows = []
    for record in records:
        epoch = int(record["epoch"])
        measures = {
            "critical_sample_ratio": float(record["critical"].mean()),
            "loss_sensitivity_gini": gini(record["sensitivity"]),
            "loss_sensitivity_mean": float(record["sensitivity"].mean()),
            "memorization_seconds": float(record["seconds"]),
        }
        rows += [
            {**base, "epoch": epoch, "metric": metric, "value": value}
            for metric, value in measures.items()
        ]
    trained = [record for record in records if int(record["epoch"]) >= 1]
    per_example = {}
    first = next((r for r in trained if int(r["epoch"]) == 1), None)
    if first is not None:
        per_example["correct_after_epoch1"] = first["correct"].astype(np.float64)
    if trained:
        per_example["loss_sensitivity"] = np.mean([r["sensitivity"] for r in trained], axis=0)
    for metric, values in per_example.items():
        rows += [
            {**base, "example": index, "metric": metric, "value": float(value)}
            for index, value in enumerate(values)
        ]
    frame = pd.DataFrame(rows)
    for column in ("epoch", "example"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    config = load_config(run_dir)
    return tidy_rows(frame, **config.run_columns(), experiment="memorization")
