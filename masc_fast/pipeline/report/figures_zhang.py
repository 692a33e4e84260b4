"""Zhang et al.'s Figure 1 from the ``learning-curves`` rows of a results table.

(a) the training loss against steps, a line per randomization; (b) the steps to fit the
training labels against the label corruption level, relative to the true labels; (c) the test
error when training stopped against the corruption level. Like the other report figures, each
function takes the tidy table, optionally filtered to one model-dataset, and returns a figure
or ``None`` when its rows are absent; means are over seeds, bands and bars span min–max.

The corruption level of a row is its ``p`` for the paper's runs (no ``randomize`` or
``"none"``) and for the label modes (``true`` 0, ``partial`` p, ``random-labels`` 1); the input
modes (shuffled and random pixels, Gaussian) have none and appear in (a) only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._plot import draw_band, fit_layout, grid, seed_stats
from masc_fast.pipeline.report._rows import one_model, select

__all__ = [
    "corruption_rows",
    "curve_label",
    "run_modes",
    "setting_rank",
    "zhang_error_figure",
    "zhang_fit_figure",
    "zhang_loss_figure",
]

_EXPERIMENT = "learning-curves"
_INPUT_MODES = ("shuffled-pixels", "random-pixels", "gaussian")
_NAMES = {
    "true": "true labels",
    "random-labels": "random labels",
    "shuffled-pixels": "shuffled pixels",
    "random-pixels": "random pixels",
    "gaussian": "Gaussian",
}


# Zhang et al.'s order in the legend: label randomizations, then input ones.
_ORDER = {
    mode: rank
    for rank, mode in enumerate(
        ("none", "true", "partial", "random-labels", "shuffled-pixels", "random-pixels", "gaussian")
    )
}


def setting_rank(mode: str) -> int:
    """Position of a mode in Zhang's order (label randomizations, then input ones)."""
    return _ORDER.get(mode, len(_ORDER))


def run_modes(rows: pd.DataFrame) -> pd.Series:
    """Each row's randomization mode, ``"none"`` for the paper's runs."""
    if "randomize" not in rows:
        return pd.Series("none", index=rows.index)
    return rows["randomize"].fillna("none").astype(str)


def curve_label(mode: str, p: float) -> str:
    """Legend text of one run setting: ``"random labels"``, ``"partial p = 0.4"``, ``"p = 0.4"``."""
    if mode in _NAMES:
        return _NAMES[mode]
    if mode == "partial":
        return f"partial p = {p:g}"
    return "true labels" if p == 0 else f"p = {p:g}"


def zhang_loss_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """Zhang et al.'s Figure 1a: mean training loss against steps, one line per setting."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=_EXPERIMENT, metric="train_loss")
    if rows.empty or "step" not in rows:
        return None
    rows = rows.assign(mode=run_modes(rows).to_numpy(), step=rows["step"].astype(float))
    stats = seed_stats(rows, ["mode", "p", "step"]).rename(columns={"mode": "setting"})
    figure, axes = grid(1, width=6.0, height=3.6)
    ax = axes[0, 0]
    stats = stats.assign(order=stats["setting"].map(setting_rank))
    stats = stats.sort_values(["order", "p", "step"], kind="stable")
    for (mode, p), line in stats.groupby(["setting", "p"], sort=False):
        line = line.sort_values("step")
        draw_band(ax, line["step"].to_numpy(float) / 1000, line, curve_label(mode, p))
    ax.set_xlabel("thousand steps")
    ax.set_ylabel("average training loss")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="best")
    figure.suptitle(f"{model} / {dataset}: training loss (Zhang et al. Fig. 1a)", fontsize=10)
    fit_layout(figure)
    return figure


def corruption_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows that have a corruption level, with it in column ``level`` and their label
    noise in ``family``: "paper's noise" (no randomization) or "Zhang's" (the label modes)."""
    modes = run_modes(rows)
    keep = ~modes.isin(_INPUT_MODES)
    family = np.where(modes[keep] == "none", "paper's noise", "Zhang's randomization")
    return rows[keep].assign(level=rows["p"][keep].astype(float), family=family)


def _level_lines(ax, rows: pd.DataFrame) -> None:
    """Mean over seeds per corruption level, a line per family, error bars min–max."""
    stats = seed_stats(rows, ["family", "level"])
    for family, line in stats.groupby("family", sort=True):
        line = line.sort_values("level")
        levels, mean = line["level"].to_numpy(float), line["mean"].to_numpy(float)
        spread = np.vstack([mean - line["min"].to_numpy(float), line["max"].to_numpy(float) - mean])
        ax.errorbar(levels, mean, yerr=spread, marker="o", capsize=3, label=family)
    ax.set_xlabel("label corruption")
    ax.set_xlim(-0.05, 1.05)
    ax.legend(fontsize=7, loc="best")


def zhang_fit_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """Zhang et al.'s Figure 1b: steps until the training labels are fitted, relative to the
    true labels' (absolute steps when the table has no run at corruption 0), per level."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = corruption_rows(select(frame, experiment=_EXPERIMENT, metric="steps_to_fit"))
    if rows.empty:
        return None
    at_zero = rows["level"] == 0
    relative = bool(at_zero.any())
    if relative:  # each family against its own true-label runs, else against any
        steps = rows["value"].astype(float)
        relative_steps = steps.copy()
        for family in rows["family"].unique():
            mine = rows["family"] == family
            reference = steps[mine & at_zero] if (mine & at_zero).any() else steps[at_zero]
            relative_steps[mine] = steps[mine] / reference.mean()
        rows = rows.assign(value=relative_steps)
    figure, axes = grid(1, width=5.0, height=3.4)
    ax = axes[0, 0]
    _level_lines(ax, rows)
    ax.set_ylabel("time to fit, relative to true labels" if relative else "steps to fit")
    figure.suptitle(f"{model} / {dataset}: time to fit (Zhang et al. Fig. 1b)", fontsize=10)
    fit_layout(figure)
    return figure


def zhang_error_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """Zhang et al.'s Figure 1c: test error when training stopped, per corruption level."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = corruption_rows(select(frame, experiment=_EXPERIMENT, metric="test_error"))
    if rows.empty:
        return None
    figure, axes = grid(1, width=5.0, height=3.4)
    ax = axes[0, 0]
    _level_lines(ax, rows)
    ax.set_ylabel("test error")
    ax.set_ylim(-0.02, 1.02)
    figure.suptitle(f"{model} / {dataset}: test error (Zhang et al. Fig. 1c)", fontsize=10)
    fit_layout(figure)
    return figure
