"""Arpit et al.'s figures from the ``memorization`` rows: real data against noise.

(a) per-example misclassification rate after the first epoch (the fraction of seeds that got
each example wrong), sorted: real data has consistently easy examples, random data does not
(their Fig. 1); (b) the Gini coefficient of the loss-sensitivity ḡ_x over epochs, and the
sorted distribution of ḡ_x averaged over training (their Figs. 2-4); (c) the critical sample
ratio over epochs (their CSR figures); (d) the test accuracy when training stopped against the
label corruption, a line per regulariser (dropout, input noise, weight decay; their
regularisation figures), from the ``learning-curves`` rows. A line per setting (true labels, corrupted or random
labels, random inputs: :func:`~masc_fast.pipeline.report.figures_zhang.curve_label`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._plot import draw_band, fit_layout, grid, seed_stats
from masc_fast.pipeline.report._rows import one_model, select
from masc_fast.pipeline.report.figures_zhang import (
    corruption_rows,
    curve_label,
    run_modes,
    setting_rank,
)

__all__ = ["csr_figure", "learnability_figure", "regularization_figure", "sensitivity_figure_arpit"]

_EXPERIMENT = "memorization"


def _settings(rows: pd.DataFrame) -> list[tuple[str, float, pd.DataFrame]]:
    """``(mode, p, rows)`` per run setting, in Zhang's order."""
    rows = rows.assign(setting=run_modes(rows).to_numpy())
    keys = sorted(
        rows[["setting", "p"]].drop_duplicates().itertuples(index=False, name=None),
        key=lambda item: (setting_rank(item[0]), item[1]),
    )
    return [
        (mode, p, rows[(rows["setting"] == mode) & np.isclose(rows["p"].to_numpy(float), p)])
        for mode, p in keys
    ]


def learnability_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """(a): per-example misclassification rate after epoch 1, sorted, a line per setting."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=_EXPERIMENT, metric="correct_after_epoch1")
    if rows.empty:
        return None
    figure, axes = grid(1, width=5.5, height=3.4)
    ax = axes[0, 0]
    for mode, p, mine in _settings(rows):
        stats = seed_stats(mine, ["example"])
        wrong = np.sort(1.0 - stats["mean"].to_numpy(float))[::-1]
        seeds = int(stats["n_seeds"].max())
        ax.plot(np.arange(len(wrong)), wrong, label=f"{curve_label(mode, p)} ({seeds} seeds)")
    ax.set_xlabel("training example, sorted")
    ax.set_ylabel("misclassification rate after epoch 1")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="best")
    figure.suptitle(f"{model} / {dataset}: per-example learnability (Arpit et al.)", fontsize=10)
    fit_layout(figure)
    return figure


def _over_epochs(ax, rows: pd.DataFrame, metric: str, ylabel: str) -> None:
    for mode, p, mine in _settings(select(rows, metric=metric)):
        stats = seed_stats(mine, ["epoch"]).sort_values("epoch")
        draw_band(ax, stats["epoch"].to_numpy(float), stats, curve_label(mode, p))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)


def sensitivity_figure_arpit(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """(b): Gini coefficient of ḡ_x per epoch, and the sorted ḡ_x averaged over training."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=_EXPERIMENT)
    if select(rows, metric="loss_sensitivity_gini").empty:
        return None
    figure, axes = grid(1, 2, width=4.5, height=3.4)
    _over_epochs(axes[0, 0], rows, "loss_sensitivity_gini", "Gini coefficient of ḡ_x")
    ax = axes[0, 1]
    for mode, p, mine in _settings(select(rows, metric="loss_sensitivity")):
        stats = seed_stats(mine, ["example"])
        values = np.sort(stats["mean"].to_numpy(float))[::-1]
        ax.plot(
            np.arange(len(values)), values / max(values.max(), 1e-300), label=curve_label(mode, p)
        )
    ax.set_xlabel("training example, sorted")
    ax.set_ylabel("ḡ_x over training / its maximum")
    axes[0, 0].legend(fontsize=7, loc="best")
    figure.suptitle(f"{model} / {dataset}: loss-sensitivity (Arpit et al.)", fontsize=10)
    fit_layout(figure)
    return figure


def csr_figure(results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None):
    """(c): the critical sample ratio per epoch, a line per setting."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=_EXPERIMENT)
    if select(rows, metric="critical_sample_ratio").empty:
        return None
    figure, axes = grid(1, width=5.5, height=3.4)
    _over_epochs(axes[0, 0], rows, "critical_sample_ratio", "critical sample ratio")
    axes[0, 0].set_ylim(-0.02, 1.02)
    axes[0, 0].legend(fontsize=7, loc="best")
    figure.suptitle(f"{model} / {dataset}: critical sample ratio (Arpit et al.)", fontsize=10)
    fit_layout(figure)
    return figure


def regularization_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """(d): test accuracy when training stopped per corruption level, a line per regulariser;
    ``None`` unless the table holds regularised runs."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment="learning-curves", metric="test_error")
    if rows.empty or "regularization" not in rows:
        return None
    rows = corruption_rows(rows)
    rows = rows.assign(
        value=1.0 - rows["value"].astype(float),
        regularization=rows["regularization"].fillna("none").astype(str),
    )
    figure, axes = grid(1, width=5.5, height=3.4)
    ax = axes[0, 0]
    for name, mine in rows.groupby("regularization", sort=True):
        stats = seed_stats(mine, ["level"]).sort_values("level")
        levels, mean = stats["level"].to_numpy(float), stats["mean"].to_numpy(float)
        spread = np.vstack(
            [mean - stats["min"].to_numpy(float), stats["max"].to_numpy(float) - mean]
        )
        ax.errorbar(levels, mean, yerr=spread, marker="o", capsize=3, label=name)
    ax.set_xlabel("label corruption")
    ax.set_ylabel("test accuracy when training stopped")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="best")
    figure.suptitle(
        f"{model} / {dataset}: regularisers under label noise (Arpit et al.)", fontsize=10
    )
    fit_layout(figure)
    return figure
