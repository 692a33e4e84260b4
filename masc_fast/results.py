"""``ProbeResult``: the tidy outcome of a probe, with tables, the best layer and a figure."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from masc_fast._io import atomic_write_text

__all__ = ["ProbeResult"]

TABLE_COLUMNS = [
    "layer",
    "dim",
    "subspaces",
    "split",
    "labels",
    "variance",
    "accuracy",
    "n",
    "components",
    "zero_rows",
]
COMPONENT_COLUMNS = [
    "layer",
    "subspaces",
    "variance",
    "class",
    "components",
    "train_rows",
    "method",
    "captured",
]
LAYER_SECONDS_COLUMNS = ["layer", "subspaces", "phase", "split", "seconds"]


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies of MASC at every probed layer, per subspace set, split and label set.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per (layer, subspaces, split, labels, variance): ``layer, dim, subspaces``
        ("corrupted" = fitted on the training labels as given, "true" = on ``y_true``),
        ``split``, ``labels`` (which labels the predictions were scored against),
        ``variance`` (the threshold t: one value, or every value of ``thresholds``),
        ``accuracy`` (a fraction), ``n`` (points scored), ``components`` (Σ_k r_k at that
        threshold), ``zero_rows`` (all-zero activation rows in the split, predicted as the
        lowest present class).
    components : pandas.DataFrame
        Per (layer, subspaces, variance, class): ``components`` r_k, ``train_rows``,
        ``method`` (the eigensolver or stored-fit method that fitted the class) and
        ``captured`` (the fraction of the class's exact energy its kept components explain).
    model_accuracy : pandas.DataFrame
        The model's own accuracy per (split, labels).
    subspaces : dict
        ``{(layer, subspaces): ClassSubspaces}``, fitted at :attr:`variance`
        (``.with_variance(t)`` gives the cut at a smaller threshold t).
    variance : float
        The threshold the subspaces were fitted at: the one asked for, or with ``thresholds``
        the largest fraction (the largest count when there is none). :meth:`accuracy`,
        :meth:`best_layer` and :meth:`plot` read its rows unless told otherwise.
    thresholds : tuple of float
        Every threshold in :attr:`table` (``(variance,)`` for a single threshold).
    strategies : dict
        ``{layer: strategy}`` (:mod:`masc_fast.probing.strategy`): how each layer was fitted.
    phases : pandas.DataFrame
        Per phase (forward, gram, eigensolve, scoring): ``seconds``, ``peak_rss_mb`` (whole
        process) and ``peak_gpu_mb`` (allocated on the device; NaN on CPU).
    layer_seconds : pandas.DataFrame
        Rows ``layer, subspaces, phase, split, seconds``: phase "build" (split "") is the
        layer's share of the fit, its Gram updates or shard writes in the pass (a shard write
        serving both label sets is split evenly between them) plus its eigensolve or stored
        fit; phase "inference" is scoring the layer on a split (all thresholds at once). The
        shared forward passes are in neither. On CUDA each timed block is synchronised. : str or None
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
    thresholds: tuple = ()
    layer_seconds: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=LAYER_SECONDS_COLUMNS), repr=False
    )

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
        thresholds=None,
        cuts=None,
        build_seconds=None,
        inference_seconds=None,
    ) -> ProbeResult:
        """Assemble the tables from the probe's counts.

        ``score_counter`` is keyed ``(layer, subspaces, split, labels, threshold)``; ``cuts``
        maps ``(layer, subspaces)`` to ``[(threshold, ClassSubspaces at it), ...]`` (default:
        the fit at ``variance``); ``build_seconds`` is keyed ``(layer, subspaces)`` and
        ``inference_seconds`` ``(layer, subspaces, split)``.
        """
        if cuts is None:
            cuts = {key: [(variance, fitted)] for key, fitted in subspaces.items()}
        at = {(*key, float(t)): cut for key, pairs in cuts.items() for t, cut in pairs}
        rows = []
        for (layer, fitted_on, split, labels, t), total in score_counter.total.items():
            rows.append(
                {
                    "layer": layer,
                    "dim": dims[layer],
                    "subspaces": fitted_on,
                    "split": split,
                    "labels": labels,
                    "variance": float(t),
                    "accuracy": score_counter.correct[(layer, fitted_on, split, labels, t)] / total,
                    "n": total,
                    "components": int(at[(layer, fitted_on, float(t))].num_components.sum()),
                    "zero_rows": zero_rows.get((layer, split), 0),
                }
            )
        order = {layer: i for i, layer in enumerate(layers)}
        table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        table = table.sort_values(["subspaces", "split", "labels", "variance"], kind="stable")
        table = table.sort_values("layer", key=lambda col: col.map(order), kind="stable")
        component_rows = [
            {
                "layer": layer,
                "subspaces": fitted_on,
                "variance": float(t),
                "class": label,
                "components": int(rank),
                "train_rows": int(count),
                "method": method,
                "captured": float(captured),
            }
            for (layer, fitted_on), pairs in cuts.items()
            for t, fitted in pairs
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
            components=pd.DataFrame(component_rows, columns=COMPONENT_COLUMNS),
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
            thresholds=tuple(float(t) for t in (thresholds or (variance,))),
            layer_seconds=_layer_seconds(
                subspaces, build_seconds or {}, inference_seconds or {}, order
            ),
        )

    def accuracy(
        self,
        layer: str,
        *,
        split: str = "test",
        subspaces: str = "corrupted",
        labels: str = "true",
        variance: float | None = None,
    ) -> float:
        """MASC accuracy at one layer (at threshold ``variance``, default :attr:`variance`)."""
        rows = self._select(split, subspaces, labels, variance)
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

    def _at_variance(self, variance: float | None = None) -> pd.DataFrame:
        """The table's rows at one threshold (default :attr:`variance`)."""
        table = self.table
        variance = self.variance if variance is None else float(variance)
        rows = table[table["variance"] == variance]
        if rows.empty:
            raise KeyError(
                f"no results at variance={variance!r}; have {sorted(table['variance'].unique())}"
            )
        return rows

    def _select(self, split, subspaces, labels, variance=None) -> pd.DataFrame:
        table = self._at_variance(variance)
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
        self,
        *,
        split: str = "test",
        subspaces: str = "corrupted",
        labels: str = "true",
        variance: float | None = None,
    ) -> pd.Series:
        """The row of the layer with the highest accuracy (first in layer order on ties), at
        threshold ``variance`` (default :attr:`variance`)."""
        rows = self._select(split, subspaces, labels, variance)
        return rows.loc[rows["accuracy"].idxmax()]

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write :attr:`table` as CSV, atomically."""
        return atomic_write_text(path, self.table.to_csv(index=False))

    def plot(self, path: str | os.PathLike | None = None, *, title: str | None = None):
        """Figure-2-style chart: MASC accuracy over layers, the model's accuracy as lines.

        Drawn at :attr:`variance`. Returns the matplotlib figure; with ``path`` it is also
        saved (atomically).
        """
        from masc_fast.plotting import plot_probe_result, save_figure

        # the chart draws one line per (split, labels): give it one threshold's rows
        figure = plot_probe_result(replace(self, table=self._at_variance()), title=title)
        if path is not None:
            save_figure(figure, path)
        return figure


def _layer_seconds(subspaces, build_seconds, inference_seconds, order) -> pd.DataFrame:
    """The :attr:`ProbeResult.layer_seconds` rows, in layer order, build first."""
    rows = [
        {"layer": layer, "subspaces": fitted_on, "phase": "build", "split": "", "seconds": seconds}
        for (layer, fitted_on), seconds in build_seconds.items()
        if (layer, fitted_on) in subspaces
    ]
    rows += [
        {
            "layer": layer,
            "subspaces": fitted_on,
            "phase": "inference",
            "split": split,
            "seconds": seconds,
        }
        for (layer, fitted_on, split), seconds in inference_seconds.items()
    ]
    frame = pd.DataFrame(rows, columns=LAYER_SECONDS_COLUMNS)
    frame = frame.sort_values("layer", key=lambda col: col.map(order), kind="stable")
    return frame.reset_index(drop=True)
