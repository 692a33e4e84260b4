"""The report's per-layer figures: Fig. 2 (exp1), Fig. 3 (exp2 vs exp1), thresholds, baselines.

Each function takes the tidy results table (optionally filtered to one model and dataset),
draws one panel row per corruption degree p with the layers in probe order on the x axis, the
mean over seeds as a line and the min–max range over seeds shaded, and returns the matplotlib
figure, or ``None`` when the rows it needs are absent. Save it with
:func:`masc_fast.pipeline.report.save_png_pdf`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._plot import (
    draw_line,
    grid,
    layer_axis,
    layer_stats,
    legend_once,
    model_lines,
)
from masc_fast.pipeline.report._rows import at_variance, layer_order, one_model, p_values, select
from masc_fast.plotting import SERIES

__all__ = [
    "PROBE_NAMES",
    "baselines_figure",
    "figure2",
    "figure3",
    "sensitivity_figure",
    "threshold_label",
]

#: Legend names of the baseline probes (SPEC §7.2), in drawing order.
PROBE_NAMES = {
    "logistic_regression": "Logistic regression",
    "ncm": "NCM",
    "knn": "k-NN",
    "lda": "LDA",
    "qda": "QDA",
}
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")


def _title(figure, model: str, dataset: str, what: str) -> None:
    figure.suptitle(f"{model} / {dataset}: {what}", fontsize=10)


def _at_p(rows: pd.DataFrame, p: float) -> pd.DataFrame:
    return rows[np.isclose(rows["p"].to_numpy(float), p)]


def figure2(results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None):
    """Paper Fig. 2: MASC accuracy per layer with subspaces from the corrupted labels (exp1).

    One row per corruption degree p; lines for MASC train accuracy against the corrupted and
    against the true labels and MASC test accuracy, the model's train (corrupted labels) and
    test accuracy as horizontal lines; mean over seeds with the min–max range shaded.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy result rows; reads experiment ``exp1``, subspaces ``corrupted``, metric
        ``accuracy`` (threshold 0.99 when a ``variance`` column exists) and its
        ``model_accuracy`` rows.
    model, dataset : str, optional
        Which model-dataset; needed when the table holds several.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without exp1 accuracy rows.

    Raises
    ------
    ValueError
        If the table holds several model-datasets and no filter picks one.

    Example
    -------
    >>> figure = figure2(load_results("runs/demo"), model="mlp", dataset="digits")  # doctest: +SKIP
    """
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(at_variance(frame), experiment="exp1", subspaces="corrupted", metric="accuracy")
    if rows.empty:
        return None
    layers, ps = layer_order(frame), p_values(rows)
    models = select(frame, experiment="exp1", metric="model_accuracy", layer="model")
    figure, axes = grid(len(ps))
    for ax, p in zip(axes[:, 0], ps):
        mine = _at_p(rows, p)
        for (split, labels), text, marker in SERIES:
            line = mine[(mine["split"] == split) & (mine["labels"] == labels)]
            if not line.empty:
                draw_line(ax, layer_stats(line, layers), text, marker=marker)
        model_lines(ax, _at_p(models, p))
        layer_axis(ax, layers)
        ax.set_title(f"p = {p:.1f}", fontsize=9)
    _title(figure, model, dataset, "MASC with corrupted-label subspaces (exp1)")
    legend_once(figure, axes)
    return figure


def figure3(results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None):
    """Paper Fig. 3: MASC test accuracy per layer, true-label (exp2) vs corrupted (exp1) subspaces.

    Reads exp2 (subspaces ``true``) and exp1 (subspaces ``corrupted``) accuracy rows with
    split ``test`` and labels ``true`` at threshold 0.99, and the model's test accuracy.
    Returns ``None`` without exp2 test rows. Parameters as :func:`figure2`.
    """
    frame, model, dataset = one_model(results, model, dataset)
    base = at_variance(frame)
    test = dict(metric="accuracy", split="test", labels="true")
    true = select(base, experiment="exp2", subspaces="true", **test)
    if true.empty:
        return None
    corrupted = select(base, experiment="exp1", subspaces="corrupted", **test)
    layers, ps = layer_order(frame), p_values(true)
    models = select(frame, experiment=("exp1", "exp2"), metric="model_accuracy", layer="model")
    figure, axes = grid(len(ps))
    for ax, p in zip(axes[:, 0], ps):
        for rows, text, marker in (
            (corrupted, "MASC test, corrupted subspaces (exp1)", "^"),
            (true, "MASC test, true subspaces (exp2)", "o"),
        ):
            mine = _at_p(rows, p)
            if not mine.empty:
                draw_line(ax, layer_stats(mine, layers), text, marker=marker)
        model_lines(ax, _at_p(models, p), train=False)
        layer_axis(ax, layers)
        ax.set_title(f"p = {p:.1f}", fontsize=9)
    _title(figure, model, dataset, "MASC test accuracy, true vs corrupted subspaces")
    legend_once(figure, axes)
    return figure


def threshold_label(variance: float) -> str:
    """Legend text of a threshold: ``"t = 0.99"``; whole numbers ≥ 1 are component counts."""
    if variance >= 1 and float(variance).is_integer():
        count = int(variance)
        return f"{count} PC" if count == 1 else f"{count} PCs"
    return f"t = {variance:g}"


def sensitivity_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """Threshold sensitivity (SPEC §7.3): exp1 MASC test accuracy per layer, one line per t.

    Reads exp1 accuracy rows (subspaces ``corrupted``, split ``test``, labels ``true``) with a
    ``variance`` column; the threshold 1.0 is labelled "1 PC" (one component per class).
    Returns ``None`` unless the rows hold at least two thresholds. Parameters as
    :func:`figure2`.
    """
    frame, model, dataset = one_model(results, model, dataset)
    test = dict(metric="accuracy", split="test", labels="true")
    rows = select(frame, experiment="exp1", subspaces="corrupted", **test)
    if rows.empty or "variance" not in rows.columns:
        return None
    rows = rows[rows["variance"].notna()]
    thresholds = sorted({float(v) for v in rows["variance"]}, reverse=True)
    if len(thresholds) < 2:
        return None
    layers, ps = layer_order(frame), p_values(rows)
    models = select(frame, experiment="exp1", metric="model_accuracy", layer="model")
    figure, axes = grid(len(ps))
    for ax, p in zip(axes[:, 0], ps):
        mine = _at_p(rows, p)
        for index, variance in enumerate(thresholds):
            line = mine[np.isclose(mine["variance"].to_numpy(float), variance)]
            if not line.empty:
                marker = _MARKERS[index % len(_MARKERS)]
                draw_line(ax, layer_stats(line, layers), threshold_label(variance), marker=marker)
        model_lines(ax, _at_p(models, p), train=False)
        layer_axis(ax, layers, ylabel="test accuracy")
        ax.set_title(f"p = {p:.1f}", fontsize=9)
    _title(figure, model, dataset, "MASC test accuracy per threshold (corrupted subspaces)")
    legend_once(figure, axes)
    return figure


def baselines_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """MASC against the baseline probes (SPEC §7.2): test accuracy per layer.

    One row per p and one column per training-label set: "corrupted" holds MASC exp1 and the
    probes trained on corrupted labels, "true" MASC exp2 and the probes trained on true labels
    (experiment ``baselines``, column ``probe``, metric ``accuracy``, split ``test``, labels
    ``true``); the model's test accuracy as a line. Returns ``None`` without baseline rows.
    Parameters as :func:`figure2`.
    """
    frame, model, dataset = one_model(results, model, dataset)
    test = dict(metric="accuracy", split="test", labels="true")
    base = select(frame, experiment="baselines", **test)
    if base.empty or "probe" not in base.columns:
        return None
    sets = [name for name in ("corrupted", "true") if (base["subspaces"] == name).any()]
    if not sets:
        return None
    probes = [name for name in PROBE_NAMES if (base["probe"] == name).any()]
    probes += sorted({str(name) for name in base["probe"]} - set(probes) - {"", "nan"})
    masc = {
        "corrupted": select(at_variance(frame), experiment="exp1", subspaces="corrupted", **test),
        "true": select(at_variance(frame), experiment="exp2", subspaces="true", **test),
    }
    layers, ps = layer_order(frame), p_values(base)
    models = select(frame, experiment=("exp1", "exp2"), metric="model_accuracy", layer="model")
    figure, axes = grid(len(ps), len(sets))
    for row, p in enumerate(ps):
        for column, name in enumerate(sets):
            ax = axes[row, column]
            mine = _at_p(masc[name], p)
            if not mine.empty:
                draw_line(ax, layer_stats(mine, layers), "MASC", marker="o", color="black")
            probe_rows = _at_p(base[base["subspaces"] == name], p)
            for index, probe in enumerate(probes):
                line = probe_rows[probe_rows["probe"] == probe]
                if not line.empty:
                    marker = _MARKERS[(index + 1) % len(_MARKERS)]
                    text = PROBE_NAMES.get(probe, probe)
                    draw_line(ax, layer_stats(line, layers), text, marker=marker)
            model_lines(ax, _at_p(models, p), train=False)
            layer_axis(ax, layers, ylabel="test accuracy" if column == 0 else None)
            ax.set_title(f"p = {p:.1f}: trained on {name} labels", fontsize=9)
    _title(figure, model, dataset, "MASC vs baseline probes")
    legend_once(figure, axes)
    return figure
