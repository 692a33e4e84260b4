"""MASC across training: test accuracy per layer against the epoch of each saved checkpoint.

One panel per corruption degree: a colour per layer, solid for subspaces from the corrupted
labels and dashed for the true labels, with the model's own training accuracy (against the
labels it was trained on) and test accuracy in black. Does the best layer keep its early-epoch
peak after the model has memorised? Means over seeds, shaded min–max (seeds stop at different
epochs, so the last points may hold fewer seeds).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._plot import draw_band, grid, legend_once, seed_stats
from masc_fast.pipeline.report._rows import at_variance, layer_order, one_model, p_values, select

__all__ = ["dynamics_figure"]

_EXPERIMENT = "dynamics"
_STYLE = {"corrupted": "-", "true": "--"}
_MODEL = (("train", "corrupted", "-.", "model train"), ("test", "true", ":", "model test"))


def dynamics_figure(results: pd.DataFrame, *, model: str | None = None, dataset: str | None = None):
    """The figure above from the ``dynamics`` rows, or ``None`` without them."""
    frame, model, dataset = one_model(results, model, dataset)
    rows = select(
        at_variance(frame), experiment=_EXPERIMENT, metric="accuracy", split="test", labels="true"
    )
    if rows.empty:
        return None
    models = select(frame, experiment=_EXPERIMENT, metric="model_accuracy", layer="model")
    layers = [layer for layer in layer_order(frame) if layer in set(rows["layer"])]
    colours = dict(zip(layers, [f"C{index % 10}" for index in range(len(layers))]))
    ps = p_values(rows)
    figure, axes = grid(len(ps), width=6.0, height=3.2)
    for ax, p in zip(axes[:, 0], ps):
        mine = rows[np.isclose(rows["p"].to_numpy(float), p)]
        stats = seed_stats(mine, ["layer", "subspaces", "epoch"])
        for (layer, subspaces), line in stats.groupby(["layer", "subspaces"], sort=False):
            line = line.sort_values("epoch")
            draw_band(
                ax,
                line["epoch"].to_numpy(float),
                line,
                f"{layer}, {subspaces} subspaces",
                color=colours[layer],
                linestyle=_STYLE.get(subspaces, "-"),
                marker=".",
            )
        ours = models[np.isclose(models["p"].to_numpy(float), p)]
        for split, labels, style, text in _MODEL:
            line = ours[(ours["split"] == split) & (ours["labels"] == labels)]
            if not line.empty:
                stats = seed_stats(line, ["epoch"]).sort_values("epoch")
                draw_band(
                    ax, stats["epoch"].to_numpy(float), stats, text, color="black", linestyle=style
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"p = {p:.1f}", fontsize=9)
    figure.suptitle(f"{model} / {dataset}: MASC across training", fontsize=10)
    legend_once(figure, axes)
    return figure
