"""Figure-2-style charts: MASC accuracy over layers with the model's accuracy as lines."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from masc_fast._io import atomic_path  # noqa: E402

__all__ = ["SERIES", "plot_probe_result", "save_figure"]

# (split, labels) -> legend text and marker, in drawing order.
SERIES = [
    (("train", "corrupted"), "MASC train (corrupted labels)", "o"),
    (("train", "true"), "MASC train (true labels)", "s"),
    (("test", "true"), "MASC test", "^"),
]


def _draw(ax, result, subspaces: str) -> None:
    table = result.table[result.table["subspaces"] == subspaces]
    layers = [layer for layer in result.layers if layer in set(table["layer"])]
    positions = range(len(layers))
    for (split, labels), text, marker in SERIES:
        rows = table[(table["split"] == split) & (table["labels"] == labels)]
        if rows.empty:
            continue
        accuracy = rows.set_index("layer").loc[layers, "accuracy"]
        ax.plot(positions, accuracy.values, marker=marker, label=text)
    train, test = result.model("train", "corrupted"), result.model("test", "true")
    if train == train:
        ax.axhline(train, color="black", linestyle="--", linewidth=1, label="model train")
    if test == test:
        ax.axhline(test, color="black", linestyle=":", linewidth=1.5, label="model test")
    ax.set_xticks(list(positions))
    ax.set_xticklabels(layers, rotation=30)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def plot_probe_result(result, *, title: str | None = None):
    """One panel per subspace set ("corrupted", and "true" if fitted) for one probe."""
    sets = [name for name in ("corrupted", "true") if name in set(result.table["subspaces"])]
    figure, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        _draw(ax, result, name)
        ax.set_title(f"{name} subspaces")
        ax.set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=7, loc="lower left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def save_figure(figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Save a figure atomically and close it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=dpi)
    finally:
        plt.close(figure)
    return Path(path)
