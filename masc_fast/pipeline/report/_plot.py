"""Drawing helpers shared by the report's figures, in the style of :mod:`masc_fast.plotting`."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from masc_fast._io import atomic_path  # noqa: E402
from masc_fast.pipeline.report.aggregate import PER_RUN_COLUMNS, aggregate_seeds  # noqa: E402
from masc_fast.plotting import save_figure  # noqa: E402

#: Shading of the min–max range over seeds.
RANGE_ALPHA = 0.2
#: Width of one p row of a figure grid, and its height.
PANEL_WIDTH, PANEL_HEIGHT = 5.0, 2.8


def layer_stats(rows: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    """Mean, min, max and n_seeds of ``rows`` per layer, reindexed to ``layers`` (NaN gaps).

    ``rows`` must hold one measurement per layer and seed (the caller selects it); columns
    other than the schema's are dropped so per-threshold or per-probe extras do not split it.
    """
    keep = ["model", "dataset", "p", "seed", "experiment", "layer", "subspaces", "split"]
    keep += ["labels", "metric", "value"]
    # A measurement on file twice (a threshold sweep's 0.99 rows beside the default run's)
    # counts once.
    rows = rows[keep].drop_duplicates([name for name in keep if name != "value"])
    stats = aggregate_seeds(rows)
    if stats["layer"].duplicated().any():
        raise ValueError(
            f"rows for one line of a plot cover {len(stats)} measurements on "
            f"{stats['layer'].nunique()} layers; select one experiment, subspaces, split and "
            f"labels first"
        )
    return stats.set_index("layer").reindex(layers)


def seed_stats(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean / min / max / n_seeds of ``value`` per ``keys`` via :func:`aggregate_seeds`."""
    schema = dict.fromkeys(
        ("model", "dataset", "experiment", "layer", "subspaces", "split", "labels", "metric"), ""
    )
    schema.update(p=0.0)
    filled = frame[[*keys, "seed", "value"]].assign(
        **{name: value for name, value in schema.items() if name not in keys}
    )
    return aggregate_seeds(filled, ignore=[name for name in PER_RUN_COLUMNS if name not in keys])


def draw_band(ax, x, stats: pd.DataFrame, label: str, **style) -> None:
    """``stats``' mean against ``x`` as a line, the min–max range over seeds shaded behind it."""
    (line,) = ax.plot(x, stats["mean"].to_numpy(float), label=label, **style)
    if (stats["n_seeds"].fillna(0) > 1).any():
        ax.fill_between(
            x,
            stats["min"].to_numpy(float),
            stats["max"].to_numpy(float),
            color=line.get_color(),
            alpha=RANGE_ALPHA,
            linewidth=0,
        )


def draw_line(ax, stats: pd.DataFrame, label: str, *, marker: str = "o", **style) -> None:
    """The mean per layer as a line, the min–max range over seeds shaded behind it."""
    draw_band(ax, np.arange(len(stats)), stats, label, marker=marker, **style)


def model_lines(ax, model_rows: pd.DataFrame, *, train: bool = True) -> None:
    """The model's own accuracy as horizontal lines (train vs corrupted labels, test)."""
    series = [("test", "true", ":", 1.5, "model test")]
    if train:
        series.insert(0, ("train", "corrupted", "--", 1.0, "model train"))
    for split, labels, style, width, text in series:
        rows = model_rows[(model_rows["split"] == split) & (model_rows["labels"] == labels)]
        if rows.empty:
            continue
        # One value per seed: model rows repeat in every experiment of the same checkpoint.
        value = rows.drop_duplicates("seed")["value"].mean()
        ax.axhline(value, color="black", linestyle=style, linewidth=width, label=text)


def layer_axis(ax, layers: list[str], *, ylabel: str | None = "accuracy", unit: bool = True):
    """Layer names on the x axis; accuracy axes span [0, 1] as in :mod:`masc_fast.plotting`."""
    ax.set_xticks(list(range(len(layers))))
    ax.set_xticklabels(layers, rotation=30)
    if unit:
        ax.set_ylim(-0.02, 1.02)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def grid(rows: int, columns: int = 1, *, width: float = PANEL_WIDTH, height=PANEL_HEIGHT):
    """A figure with ``rows`` × ``columns`` panels, always as a 2-D array of axes."""
    return plt.subplots(
        rows, columns, figsize=(width * columns, height * rows + 0.6), squeeze=False
    )


def legend_once(figure, axes) -> None:
    """One legend for the figure, from the panel with the most labelled artists."""
    best = max(axes.flat, key=lambda ax: len(ax.get_legend_handles_labels()[1]))
    handles, labels = best.get_legend_handles_labels()
    if handles:
        best.legend(handles, labels, fontsize=7, loc="best")
    fit_layout(figure)


def fit_layout(figure) -> None:
    """``tight_layout`` that leaves the top 0.35 inch to the suptitle (it ignores it)."""
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / figure.get_figheight()))


def close(figure) -> None:
    """Release a figure that will not be saved."""
    plt.close(figure)


def save_png_pdf(figure, folder: str | os.PathLike, stem: str, *, dpi: int = 120):
    """Write ``folder/stem.png`` and ``folder/stem.pdf``, each atomically, then close the figure.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        The PNG and the PDF.
    """
    folder = Path(folder)
    png, pdf = folder / f"{stem}.png", folder / f"{stem}.pdf"
    try:
        with atomic_path(png) as tmp:
            figure.savefig(tmp, dpi=dpi)
    except BaseException:
        plt.close(figure)
        raise
    save_figure(figure, pdf, dpi=dpi)  # closes the figure
    return png, pdf
