"""The report's figures of retraining, relabelling, subspace sizes and cost.

Fig. 4 (80 % test accuracy before and after retraining on MASC relabels), Figs. 28-30 (the
relabel analysis over p), the components-per-class distribution per layer and the build and
inference time per layer. Like :mod:`masc_fast.pipeline.report.figures`, each function takes the tidy
results table, optionally filtered to one model-dataset, and returns a figure or ``None`` when
its rows are absent; means are over seeds and bars or bands span the min–max range over seeds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._plot import (
    draw_line,
    fit_layout,
    grid,
    layer_axis,
    layer_stats,
    legend_once,
    seed_stats,
)
from masc_fast.pipeline.report._rows import (
    RETRAIN_EXPERIMENTS,
    at_variance,
    layer_order,
    one_model,
    p_values,
    select,
)

__all__ = [
    "RELABEL_FIGURES",
    "components_figure",
    "relabel_figure",
    "retrain_figure",
    "times_figure",
]

#: Relabel metric -> (paper figure, axis label).
RELABEL_FIGURES = {
    "wrong_reduction": ("Fig. 28", "relative reduction in wrong labels (fraction)"),
    "wrong_corrected_pct": ("Fig. 29", "wrong labels corrected by MASC (%)"),
    "correct_broken_pct": ("Fig. 30", "correct labels broken by MASC (%)"),
}
_SUBSPACE_COLORS = {"corrupted": "tab:blue", "true": "tab:orange"}
_TIME_METRICS = ("build_seconds", "inference_seconds")


def _bars(ax, groups: list[float], series: list[tuple[str, pd.DataFrame, dict]]) -> None:
    """Grouped bars at each p: one bar per series (mean), error bars = min–max over seeds."""
    width = 0.8 / max(len(series), 1)
    centres = np.arange(len(groups))
    for index, (label, stats, style) in enumerate(series):
        stats = stats.set_index("p").reindex(groups)
        mean = stats["mean"].to_numpy(float)
        spread = np.vstack(
            [mean - stats["min"].to_numpy(float), stats["max"].to_numpy(float) - mean]
        )
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar(centres + offset, mean, width, yerr=spread, capsize=3, label=label, **style)
    ax.set_xticks(list(centres))
    ax.set_xticklabels([f"{p:.1f}" for p in groups])
    ax.set_xlabel("corruption degree p")
    ax.grid(alpha=0.3, axis="y")


def retrain_figure(
    results: pd.DataFrame,
    *,
    experiment: str = "retrain",
    model: str | None = None,
    dataset: str | None = None,
):
    """Paper Fig. 4: 80 % test accuracy before and after retraining on MASC relabels.

    Per p and relabel set (subspaces ``corrupted`` / ``true``): the accuracy at epoch 0 (the
    memorised model) and at each seed's last epoch, mean over seeds with the min–max range as
    error bars.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy rows; reads ``experiment`` rows with metric ``accuracy``, split ``test80``,
        labels ``true`` and an ``epoch`` column.
    experiment : {"retrain", "retrain-10"}, default "retrain"
    model, dataset : str, optional
        Which model-dataset; needed when the table holds several.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without those rows.

    Example
    -------
    >>> figure = retrain_figure(results, model="mlp", dataset="mnist")  # doctest: +SKIP
    """
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=experiment, metric="accuracy", split="test80", labels="true")
    if rows.empty or "epoch" not in rows.columns or rows["epoch"].isna().all():
        return None
    rows = rows[rows["epoch"].notna()]
    stages = []
    for (p, subspaces, seed), run in rows.groupby(["p", "subspaces", "seed"], sort=True):
        last = run["epoch"].max()
        for stage, epoch in (("before", 0), ("after", last)):
            at = run[run["epoch"] == epoch]
            if len(at):
                stages.append((p, subspaces, seed, stage, float(at["value"].iloc[0])))
    stages = pd.DataFrame(stages, columns=["p", "subspaces", "seed", "stage", "value"])
    stats = seed_stats(stages, ["p", "subspaces", "stage"])
    figure, axes = grid(1, width=max(5.0, 1.6 * rows["p"].nunique()), height=3.4)
    ax = axes[0, 0]
    series = []
    for subspaces in ("corrupted", "true"):
        for stage, alpha, hatch in (("before", 0.45, "//"), ("after", 1.0, None)):
            mine = stats[(stats["subspaces"] == subspaces) & (stats["stage"] == stage)]
            if mine.empty:
                continue
            label = f"{subspaces} relabels, {stage}" + (" (epoch 0)" if stage == "before" else "")
            style = dict(color=_SUBSPACE_COLORS[subspaces], alpha=alpha, hatch=hatch)
            series.append((label, mine, style))
    _bars(ax, p_values(rows), series)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy on the 80 % test split")
    figure.suptitle(f"{model} / {dataset}: retraining on MASC relabels ({experiment})", fontsize=10)
    legend_once(figure, axes)
    return figure


def relabel_figure(
    results: pd.DataFrame,
    metric: str,
    *,
    experiment: str = "retrain",
    model: str | None = None,
    dataset: str | None = None,
):
    """Paper Figs. 28-30: one relabel-analysis metric over p, a bar per relabel set.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy rows; reads ``experiment`` rows with ``metric``.
    metric : {"wrong_reduction", "wrong_corrected_pct", "correct_broken_pct"}
    experiment, model, dataset
        As :func:`retrain_figure`.

    Returns
    -------
    matplotlib.figure.Figure or None
        ``None`` without those rows.

    Raises
    ------
    ValueError
        If ``metric`` is not a relabel metric.
    """
    if metric not in RELABEL_FIGURES:
        raise ValueError(
            f"unknown relabel metric {metric!r}; expected one of {list(RELABEL_FIGURES)}"
        )
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(frame, experiment=experiment, metric=metric)
    if rows.empty:
        return None
    stats = seed_stats(rows, ["p", "subspaces"])
    number, axis_label = RELABEL_FIGURES[metric]
    figure, axes = grid(1, width=max(5.0, 1.2 * rows["p"].nunique()), height=3.2)
    ax = axes[0, 0]
    series = [
        (f"{name} relabels", stats[stats["subspaces"] == name], {"color": color})
        for name, color in _SUBSPACE_COLORS.items()
        if (stats["subspaces"] == name).any()
    ]
    _bars(ax, p_values(rows), series)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(axis_label)
    figure.suptitle(f"{model} / {dataset}: {number}, {metric} ({experiment})", fontsize=10)
    legend_once(figure, axes)
    return figure


def _first_probe_rows(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """MASC probe rows, one per ``keys``: exp1/exp2 (the final model) when there are any.

    Baseline and retraining rows are not MASC probes (baselines log their own
    ``inference_seconds``); exp1 and exp2 come from one probe pass, so a measurement in both
    counts once.
    """
    rows = rows[~rows["experiment"].isin(["baselines", *RETRAIN_EXPERIMENTS])]
    preferred = rows[rows["experiment"].isin(["exp1", "exp2"])]
    rows = preferred if len(preferred) else rows
    return rows.drop_duplicates(keys, keep="first").assign(experiment="")


def components_figure(
    results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None
):
    """Components per class: the distribution of r_k over classes and seeds, per layer.

    One row per p, one column per subspace set; a box per layer of every (class, seed) value
    of metric ``class_components`` (column ``class``) at threshold 0.99, from the final model
    (exp1 / exp2 rows when present). Returns ``None`` without those rows.
    Parameters as :func:`retrain_figure`.
    """
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(at_variance(frame), metric="class_components")
    if rows.empty or "class" not in rows.columns:
        return None
    rows = _first_probe_rows(rows, ["p", "seed", "layer", "subspaces", "class"])
    sets = [name for name in ("corrupted", "true") if (rows["subspaces"] == name).any()]
    if not sets:
        return None
    layers, ps = layer_order(frame), p_values(rows)
    figure, axes = grid(len(ps), len(sets))
    for row, p in enumerate(ps):
        for column, name in enumerate(sets):
            ax = axes[row, column]
            mine = rows[np.isclose(rows["p"].to_numpy(float), p) & (rows["subspaces"] == name)]
            positions = [i for i, layer in enumerate(layers) if (mine["layer"] == layer).any()]
            data = [
                mine.loc[mine["layer"] == layers[i], "value"].to_numpy(float) for i in positions
            ]
            if data:
                ax.boxplot(data, positions=positions, widths=0.6)
            layer_axis(
                ax, layers, ylabel="components per class" if column == 0 else None, unit=False
            )
            ax.set_xlim(-0.6, len(layers) - 0.4)
            ax.set_title(f"p = {p:.1f}: {name} subspaces", fontsize=9)
    figure.suptitle(f"{model} / {dataset}: components per class (t = 0.99)", fontsize=10)
    fit_layout(figure)
    return figure


def times_figure(results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None):
    """Build and inference time per layer (SPEC §7.4), log scale.

    One row per p; a line per (metric, subspaces, split) of metrics ``build_seconds`` and
    ``inference_seconds`` at threshold 0.99, mean over seeds with the min–max band. Values
    that are not positive are left out (a log axis cannot show them). Returns ``None``
    without those rows. Parameters as :func:`retrain_figure`.
    """
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(at_variance(frame), metric=_TIME_METRICS)
    rows = rows[rows["value"] > 0]
    if rows.empty:
        return None
    rows = _first_probe_rows(rows, ["p", "seed", "layer", "subspaces", "split", "metric"])
    if rows.empty:
        return None
    layers, ps = layer_order(frame), p_values(rows)
    figure, axes = grid(len(ps))
    for ax, p in zip(axes[:, 0], ps):
        mine = rows[np.isclose(rows["p"].to_numpy(float), p)]
        lines = mine[["metric", "subspaces", "split"]].drop_duplicates()
        for metric, subspaces, split in sorted(lines.itertuples(index=False, name=None)):
            line = mine[
                (mine["metric"] == metric)
                & (mine["subspaces"] == subspaces)
                & (mine["split"] == split)
            ]
            what = "build" if metric == "build_seconds" else f"inference ({split})"
            style = "-" if metric == "build_seconds" else "--"
            draw_line(
                ax, layer_stats(line, layers), f"{what}, {subspaces} subspaces", linestyle=style
            )
        layer_axis(ax, layers, ylabel="seconds", unit=False)
        ax.set_yscale("log")
        ax.set_title(f"p = {p:.1f}", fontsize=9)
    figure.suptitle(f"{model} / {dataset}: MASC build and inference time per layer", fontsize=10)
    legend_once(figure, axes)
    return figure
