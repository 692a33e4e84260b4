"""``ProbeResult``: the tidy outcome of a probe, with tables, the best layer and a figure."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ._io import atomic_write_text

__all__ = ["ProbeResult"]

TABLE_COLUMNS = [
    "layer",
    "dim",
    "subspaces",
    "split",
    "labels",
    "accuracy",
    "n",
    "components",
    "zero_rows",
]


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies of MASC at every probed layer, per subspace set, split and label set.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (layer, subspaces, split, labels): ``layer, dim, subspaces`` ("corrupted"
        = fitted on the training labels as given, "true" = on ``y_true``), ``split``,
        ``labels`` (which labels the predictions were scored against), ``accuracy`` (a
        fraction), ``n`` (points scored), ``components`` (Σ_k r_k), ``zero_rows`` (all-zero
        activation rows in the split, predicted as the lowest present class).
    components : pandas.DataFrame
        Per (layer, subspaces, class): ``components`` r_k, ``train_rows``, ``method`` (the
        eigensolver or stored-fit method that fitted the class) and ``captured`` (the fraction
        of the class's exact energy its kept components explain).
    model_accuracy : pandas.DataFrame
        The model's own accuracy per (split, labels).
    subspaces : dict
        ``{(layer, subspaces): ClassSubspaces}``.
    strategies : dict
        ``{layer: strategy}`` (:mod:`masc_fast.strategy`): how each layer was fitted.
    phases : pandas.DataFrame
        Per phase (forward, gram, eigensolve, scoring): ``seconds``, ``peak_rss_mb`` (whole
        process) and ``peak_gpu_mb`` (allocated on the device; NaN on CPU).
    activation_dir : str or None
        Where the stored activations were kept (``keep_activations=True``).
    """

    table: pd.DataFrame
    components: pd.DataFrame
    model_accuracy: pd.DataFrame
    subspaces: dict = field(repr=False)
    layers: list
    backend: str
    variance: float
    fit_seconds: float
    score_seconds: float
    strategies: dict = field(default_factory=dict)
    phases: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    activation_dir: str | None = None

    @classmethod
    def from_counts(
        cls,
        *,
        layers,
        dims,
        subspaces,
        score_counter,
        zero_rows,
        model_counter,
        backend,
        variance,
        fit_seconds,
        score_seconds,
        strategies=None,
        phases=None,
        activation_dir=None,
    ) -> ProbeResult:
        rows = []
        for (layer, fitted_on, split, labels), total in score_counter.total.items():
            rows.append(
                {
                    "layer": layer,
                    "dim": dims[layer],
                    "subspaces": fitted_on,
                    "split": split,
                    "labels": labels,
                    "accuracy": score_counter.correct[(layer, fitted_on, split, labels)] / total,
                    "n": total,
                    "components": int(subspaces[(layer, fitted_on)].num_components.sum()),
                    "zero_rows": zero_rows.get((layer, split), 0),
                }
            )
        order = {layer: i for i, layer in enumerate(layers)}
        table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        table = table.sort_values(["subspaces", "split", "labels"], kind="stable")
        table = table.sort_values("layer", key=lambda col: col.map(order), kind="stable")
        component_rows = [
            {
                "layer": layer,
                "subspaces": fitted_on,
                "class": label,
                "components": int(rank),
                "train_rows": int(count),
                "method": method,
                "captured": float(captured),
            }
            for (layer, fitted_on), fitted in subspaces.items()
            for label, (rank, count, method, captured) in enumerate(
                zip(
                    fitted.num_components,
                    fitted.counts,
                    fitted.methods,
                    fitted.explained_variance,
                )
            )
        ]
        model_rows = [
            {"split": split, "labels": labels, "accuracy": model_counter.accuracy((split, labels))}
            for split, labels in model_counter.total
        ]
        return cls(
            table=table.reset_index(drop=True),
            components=pd.DataFrame(component_rows),
            model_accuracy=pd.DataFrame(model_rows, columns=["split", "labels", "accuracy"]),
            subspaces=dict(subspaces),
            layers=list(layers),
            backend=backend,
            variance=variance,
            fit_seconds=fit_seconds,
            score_seconds=score_seconds,
            strategies=dict(strategies or {}),
            phases=phases if phases is not None else pd.DataFrame(),
            activation_dir=activation_dir,
        )

    def accuracy(
        self, layer: str, *, split: str = "test", subspaces: str = "corrupted", labels: str = "true"
    ) -> float:
        """MASC accuracy at one layer."""
        rows = self._select(split, subspaces, labels)
        match = rows[rows["layer"] == layer]
        if match.empty:
            raise KeyError(
                f"no result for layer {layer!r}, split {split!r}, subspaces "
                f"{subspaces!r}, labels {labels!r}"
            )
        return float(match["accuracy"].iloc[0])

    def model(self, split: str = "test", labels: str = "true") -> float:
        """The model's own accuracy on a split (NaN if it was not measured)."""
        rows = self.model_accuracy
        match = rows[(rows["split"] == split) & (rows["labels"] == labels)]
        return float(match["accuracy"].iloc[0]) if not match.empty else float("nan")

    def _select(self, split, subspaces, labels) -> pd.DataFrame:
        table = self.table
        rows = table[
            (table["split"] == split)
            & (table["subspaces"] == subspaces)
            & (table["labels"] == labels)
        ]
        if rows.empty:
            raise KeyError(
                f"no results for split={split!r}, subspaces={subspaces!r}, labels={labels!r}; "
                f"have splits {sorted(table['split'].unique())}, subspaces "
                f"{sorted(table['subspaces'].unique())}"
            )
        return rows

    def best_layer(
        self, *, split: str = "test", subspaces: str = "corrupted", labels: str = "true"
    ) -> pd.Series:
        """The row of the layer with the highest accuracy (first in layer order on ties)."""
        rows = self._select(split, subspaces, labels)
        return rows.loc[rows["accuracy"].idxmax()]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :attr:`table` as CSV, atomically."""
        return atomic_write_text(path, self.table.to_csv(index=False))

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None):
        """Figure-2-style chart: MASC accuracy over layers, the model's accuracy as lines.

        Returns the matplotlib figure; with ``path`` it is also saved (atomically).
        """
        from .plotting import plot_probe_result, save_figure

        figure = plot_probe_result(self, title=title)
        if path is not None:
            save_figure(figure, path)
        return figure
