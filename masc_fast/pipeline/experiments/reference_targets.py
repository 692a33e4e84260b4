"""The authors' input-layer numbers and the rules a measurement must meet (SPEC §9.2, §9.8).

:func:`load_targets` reads the packaged targets
(``masc_fast/pipeline/experiments/reference_data/masc_input_layer_model_independent.csv``); :func:`compare_to_targets`
flags each measured setting. Pass rules: the rounded accuracy is within ``1e-4`` of the target
(one test image in 10,000, the resolution of their rounding), and the total number of
components is within one per class of the target (an independent eigensolver may move a
borderline class by one, SPEC §9.8). :mod:`masc_fast.pipeline.experiments.verify_reference` measures.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = [
    "ACCURACY_TOLERANCE",
    "COMPONENTS_PER_CLASS",
    "REPORT_COLUMNS",
    "TARGET_NAMES",
    "compare_to_targets",
    "format_report",
    "load_targets",
    "summary_line",
]

#: masc_fast dataset names and the names the authors' result files use.
TARGET_NAMES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
#: Their accuracies are rounded to 4 decimals: one step of that rounding.
ACCURACY_TOLERANCE = 1e-4
#: A borderline class may get one component more or fewer from another eigensolver.
COMPONENTS_PER_CLASS = 1
# Slack for the float representation of 4-decimal numbers (0.2010 - 0.2009 > 1e-4 in binary).
_FLOAT_SLACK = 1e-9
_TARGET_FILE = "masc_input_layer_model_independent.csv"

REPORT_COLUMNS = (
    "dataset",
    "p",
    "threshold",
    "accuracy",
    "target_accuracy",
    "accuracy_diff",
    "components",
    "target_components",
    "components_diff",
    "accuracy_ok",
    "components_ok",
    "ok",
)


def load_targets() -> pd.DataFrame:
    """The authors' input-layer numbers (SPEC §9.2), as packaged with masc_fast.

    Returns
    -------
    pandas.DataFrame
        Columns ``dataset`` (masc_fast names: mnist, fashion-mnist, cifar10), ``input_dim``,
        ``p``, ``threshold`` (a fraction, or 1 = one component per class), ``accuracy`` (test
        accuracy, 4 decimals) and ``components`` (total over the 10 classes); 75 rows.

    Example
    -------
    >>> targets = load_targets()
    >>> float(targets.query("dataset == 'mnist' and p == 0 and threshold == 0.99")["accuracy"].iloc[0])
    0.8234
    """
    source = resources.files("masc_fast.pipeline.experiments") / "reference_data" / _TARGET_FILE
    with source.open("r") as handle:
        raw = pd.read_csv(handle)
    names = {target: name for name, target in TARGET_NAMES.items()}
    return pd.DataFrame(
        {
            "dataset": raw["dataset"].map(names),
            "input_dim": raw["input_dim"].astype(np.int64),
            "p": raw["p"].astype(float),
            "threshold": raw["variance_threshold_or_1PC"].astype(float),
            "accuracy": raw["masc_test_acc"].astype(float),
            "components": raw["total_components_all_classes"].astype(np.int64),
        }
    )


def _key(frame: pd.DataFrame) -> pd.Series:
    """Join key of (dataset, p, threshold), robust to float spelling (0.2 vs 0.20000001)."""
    return (
        frame["dataset"].astype(str)
        + "|"
        + frame["p"].astype(float).round(6).map(repr)
        + "|"
        + frame["threshold"].astype(float).round(6).map(repr)
    )


def compare_to_targets(measured: pd.DataFrame, targets: pd.DataFrame | None = None) -> pd.DataFrame:
    """Compare measured input-layer results with the authors' and flag each setting.

    Parameters
    ----------
    measured : pandas.DataFrame
        One row per setting with ``dataset`` (masc_fast name), ``p``, ``threshold``,
        ``accuracy`` (a fraction, unrounded is fine), ``components`` (total over classes) and
        ``num_classes``; other columns are kept after the report columns.
    targets : pandas.DataFrame, optional
        Defaults to :func:`load_targets`.

    Returns
    -------
    pandas.DataFrame
        :data:`REPORT_COLUMNS` (then the extra columns): ``accuracy`` rounded to 4 decimals
        with Python's ``round`` (the authors' rounding), the target, ``|diff|`` of both,
        ``accuracy_ok`` (``|diff| <= 1e-4``), ``components_ok`` (``|diff| <= num_classes``)
        and ``ok`` (both).

    Raises
    ------
    ValueError
        If a column is missing, or a setting has no target (the message names the settings
        and what the targets cover).

    Example
    -------
    >>> measured = pd.DataFrame({"dataset": ["mnist"], "p": [0.0], "threshold": [0.99],
    ...                          "accuracy": [0.82338], "components": [1366], "num_classes": [10]})
    >>> bool(compare_to_targets(measured)["ok"].iloc[0])
    True
    """
    needed = ("dataset", "p", "threshold", "accuracy", "components", "num_classes")
    missing = [name for name in needed if name not in measured.columns]
    if missing:
        raise ValueError(
            f"measured results lack column(s) {missing}; have {list(measured.columns)}"
        )
    targets = load_targets() if targets is None else targets
    by_key = targets.set_index(_key(targets))
    keys = _key(measured)
    absent = sorted(set(keys) - set(by_key.index))
    if absent:
        raise ValueError(
            f"no target for setting(s) {[k.replace('|', ', ') for k in absent[:5]]}; the "
            f"targets cover datasets {sorted(targets['dataset'].unique())}, p "
            f"{sorted(targets['p'].unique())} and thresholds {sorted(targets['threshold'].unique())}"
        )
    target = by_key.loc[keys.to_numpy()]
    report = pd.DataFrame(
        {
            "dataset": measured["dataset"].astype(str).to_numpy(),
            "p": measured["p"].astype(float).to_numpy(),
            "threshold": measured["threshold"].astype(float).to_numpy(),
            "accuracy": [round(float(a), 4) for a in measured["accuracy"]],
            "target_accuracy": target["accuracy"].to_numpy(dtype=float),
            "components": measured["components"].astype(np.int64).to_numpy(),
            "target_components": target["components"].to_numpy(dtype=np.int64),
        }
    )
    report["accuracy_diff"] = (report["accuracy"] - report["target_accuracy"]).abs()
    report["components_diff"] = (report["components"] - report["target_components"]).abs()
    report["accuracy_ok"] = report["accuracy_diff"] <= ACCURACY_TOLERANCE + _FLOAT_SLACK
    allowed = COMPONENTS_PER_CLASS * measured["num_classes"].astype(np.int64).to_numpy()
    report["components_ok"] = report["components_diff"].to_numpy() <= allowed
    report["ok"] = report["accuracy_ok"] & report["components_ok"]
    extras = measured[[c for c in measured.columns if c not in REPORT_COLUMNS]].reset_index(
        drop=True
    )
    return pd.concat([report[list(REPORT_COLUMNS)], extras], axis=1)


def format_report(report: pd.DataFrame) -> str:
    """The report as a fixed-width table: dataset, p, threshold, acc, target, k, target k, ok."""
    if report.empty:
        return "(no settings measured)"
    shown = pd.DataFrame(
        {
            "dataset": report["dataset"],
            "p": report["p"].map(lambda v: f"{v:.1f}"),
            "threshold": report["threshold"].map(lambda v: f"{v:g}"),
            "acc": report["accuracy"].map(lambda v: f"{v:.4f}"),
            "target": report["target_accuracy"].map(lambda v: f"{v:.4f}"),
            "k": report["components"],
            "target k": report["target_components"],
            "ok": report["ok"].map(lambda v: "yes" if v else "NO"),
        }
    )
    return shown.to_string(index=False)


def summary_line(report: pd.DataFrame) -> str:
    """``"N of M settings agree"``."""
    return f"{int(report['ok'].sum())} of {len(report)} settings agree"
