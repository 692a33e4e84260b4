"""The paper's tables from the tidy results: Table 1 and 5 (best layer vs model), Tables 6-8.

Table 1 (SPEC §5.5, §9.3): per model-dataset and corruption degree p > 0, the best layer's MASC
test accuracy with subspaces from the corrupted labels (exp1), where "best" is the maximum over
layers of the mean over seeds, next to the model's own mean test accuracy; gain % =
100·(MASC / model − 1). Table 5 is the same with subspaces from the true labels (exp2).
Tables 6-8 are the relabel analysis of the retraining runs (SPEC §6 item 8).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.report._rows import (
    DEFAULT_VARIANCE,
    RELABEL_METRICS,
    RETRAIN_EXPERIMENTS,
    at_variance,
    check_results,
    layer_order,
    model_datasets,
    select,
)
from masc_fast.pipeline.report.aggregate import aggregate_seeds

__all__ = [
    "BEST_LAYER_COLUMNS",
    "RELABEL_TABLES",
    "best_layers",
    "model_test_accuracy",
    "relabel_tables",
    "table1",
    "table5",
]

#: Columns of :func:`table1` and :func:`table5`.
BEST_LAYER_COLUMNS = (
    "model",
    "dataset",
    "p",
    "model_test",
    "masc_test",
    "best_layer",
    "gain_pct",
    "n_seeds",
)
#: Paper table number -> relabel metric (SPEC §6 item 8).
RELABEL_TABLES = dict(zip(("table6", "table7", "table8"), RELABEL_METRICS))

# What identifies a Table 1 row, and the schema columns constant within one selection.
_KEY = ("model", "dataset", "p")
_SCHEMA_REST = ("experiment", "subspaces", "split", "labels", "metric")


def model_test_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """The model's own test accuracy per model, dataset and p: mean, min, max over seeds.

    Read from the exp1 rows (metric ``model_accuracy``, layer ``"model"``, split ``test``,
    labels ``true``); a seed without exp1 rows falls back to its exp2 rows, which describe the
    same final checkpoint. One row per seed counts even when the rows repeat per threshold.
    """
    rows = select(
        check_results(results),
        experiment=("exp1", "exp2"),
        metric="model_accuracy",
        layer="model",
        split="test",
        labels="true",
    )
    # exp1 sorts before exp2, so keep="first" prefers exp1; stable sort keeps table order.
    rows = rows.sort_values("experiment", kind="stable").drop_duplicates(
        ["model", "dataset", "p", "seed"], keep="first"
    )
    runs = rows[["model", "dataset", "p", "seed", "value"]]
    blank = dict.fromkeys(("experiment", "layer", "subspaces", "split", "labels"), "")
    return aggregate_seeds(runs.assign(metric="model_accuracy", **blank))


def best_layers(
    results: pd.DataFrame,
    *,
    experiment: str,
    subspaces: str,
    variance: float = DEFAULT_VARIANCE,
) -> pd.DataFrame:
    """Per model, dataset and p: the layer with the highest mean MASC test accuracy.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy result rows.
    experiment : str
        ``"exp1"`` or ``"exp2"`` (any experiment with MASC test rows works).
    subspaces : {"corrupted", "true"}
    variance : float, default 0.99
        Rows at this threshold (and rows without one) only.

    Returns
    -------
    pandas.DataFrame
        Columns model, dataset, p, best_layer, masc_test (mean over seeds), masc_min,
        masc_max, n_seeds. Ties go to the first layer in probe order.
    """
    check_results(results)
    rows = select(
        at_variance(results, variance),
        experiment=experiment,
        subspaces=subspaces,
        metric="accuracy",
        split="test",
        labels="true",
    )
    # The same measurement may be on file twice (a threshold sweep's 0.99 rows next to the
    # default run's); one row per seed and layer counts.
    rows = rows.drop_duplicates([*_KEY, "seed", "layer"], keep="first")
    stats = aggregate_seeds(rows[[*_KEY, "layer", "seed", "value", *_SCHEMA_REST]])
    found = []
    for model, dataset in model_datasets(stats):
        order = layer_order(results[(results["model"] == model) & (results["dataset"] == dataset)])
        mine = stats[(stats["model"] == model) & (stats["dataset"] == dataset)]
        for p, group in mine.groupby("p", sort=True):
            group = group[group["mean"].notna()].set_index("layer")
            best = None
            for layer in (name for name in order if name in group.index):
                # Strictly greater: the first layer in probe order wins a tie.
                if best is None or group.at[layer, "mean"] > group.at[best, "mean"]:
                    best = layer
            if best is None:
                continue
            row = group.loc[best]
            found.append(
                {
                    "model": model,
                    "dataset": dataset,
                    "p": float(p),
                    "best_layer": best,
                    "masc_test": float(row["mean"]),
                    "masc_min": float(row["min"]),
                    "masc_max": float(row["max"]),
                    "n_seeds": int(row["n_seeds"]),
                }
            )
    columns = ["model", "dataset", "p", "best_layer", "masc_test", "masc_min", "masc_max"]
    return pd.DataFrame(found, columns=[*columns, "n_seeds"])


def _best_layer_table(results, experiment: str, subspaces: str) -> pd.DataFrame:
    best = best_layers(results, experiment=experiment, subspaces=subspaces)
    best = best[best["p"] > 0]
    if best.empty:  # no MASC rows (a table of learning curves): no merge on empty keys
        return pd.DataFrame(columns=list(BEST_LAYER_COLUMNS))
    model = model_test_accuracy(results)[["model", "dataset", "p", "mean"]]
    table = best.merge(model.rename(columns={"mean": "model_test"}), on=list(_KEY), how="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        table["gain_pct"] = 100.0 * (table["masc_test"] / table["model_test"] - 1.0)
    return table[list(BEST_LAYER_COLUMNS)].reset_index(drop=True)


def table1(results: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 1: best-layer MASC test accuracy (corrupted subspaces, exp1) vs the model.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy result rows with exp1 MASC test rows (subspaces ``corrupted``, split ``test``,
        labels ``true``) and exp1 ``model_accuracy`` rows. With a ``variance`` column only the
        0.99 rows (and rows without a threshold) count.

    Returns
    -------
    pandas.DataFrame
        :data:`BEST_LAYER_COLUMNS`: one row per model, dataset and p > 0 (in order of first
        appearance, then p ascending). ``model_test`` = the model's mean test accuracy over
        seeds; ``masc_test`` = max over layers of the mean over seeds (ties: the first layer in
        probe order), ``best_layer`` its name; ``gain_pct`` = 100·(masc_test / model_test − 1)
        (NaN without model rows); ``n_seeds`` = seeds behind ``masc_test``.

    Raises
    ------
    TypeError, ValueError
        If ``results`` is not a tidy results DataFrame.

    Example
    -------
    >>> table1(load_results("runs/paper-mlp"))  # doctest: +SKIP
      model dataset    p  model_test  masc_test best_layer   gain_pct  n_seeds
    0   mlp   mnist  0.2      0.8738     0.9693        fc2  10.93         3
    """
    return _best_layer_table(results, "exp1", "corrupted")


def table5(results: pd.DataFrame) -> pd.DataFrame:
    """Paper Table 5: as :func:`table1` with subspaces from the true labels (exp2 rows).

    The model's test accuracy is read from the exp1 rows as in :func:`table1` (exp2 rows when
    a seed has no exp1 rows); the MASC values from exp2, subspaces ``true``, split ``test``,
    labels ``true``, at threshold 0.99.

    Example
    -------
    >>> table5(load_results("runs/paper-mlp"))  # doctest: +SKIP
    """
    return _best_layer_table(results, "exp2", "true")


def relabel_tables(results: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Paper Tables 6-8: the relabel analysis of the retraining runs, mean over seeds.

    Parameters
    ----------
    results : pandas.DataFrame
        Tidy rows; reads experiments ``retrain`` / ``retrain-10`` with metric
        ``wrong_reduction`` (Table 6: relative reduction in wrong labels, a fraction),
        ``wrong_corrected_pct`` (Table 7: % of wrong labels MASC corrected) and
        ``correct_broken_pct`` (Table 8: % of correct labels MASC broke).

    Returns
    -------
    dict of str to pandas.DataFrame
        ``{"table6": ..., "table7": ..., "table8": ...}``, each with columns model, dataset,
        experiment, p, subspaces (which relabels), then ``mean``, ``min``, ``max`` and
        ``n_seeds``; rows sorted by model-dataset (first appearance), experiment, p and
        subspaces. A table is empty when its rows are absent.

    Example
    -------
    >>> relabel_tables(results)["table7"]  # doctest: +SKIP
    """
    check_results(results)
    rows = select(results, experiment=RETRAIN_EXPERIMENTS, metric=RELABEL_METRICS)
    keys = ["model", "dataset", "experiment", "p", "subspaces"]
    runs = rows[[*keys, "metric", "seed", "value"]].assign(layer="", split="", labels="")
    stats = aggregate_seeds(runs)
    pairs = {pair: rank for rank, pair in enumerate(model_datasets(results))}
    rank = [pairs.get((m, d), len(pairs)) for m, d in zip(stats["model"], stats["dataset"])]
    stats = stats.assign(_rank=rank).sort_values(
        ["_rank", "experiment", "p", "subspaces"], kind="stable"
    )
    columns = [*keys, "mean", "min", "max", "n_seeds"]
    return {
        name: stats[stats["metric"] == metric][columns].reset_index(drop=True)
        for name, metric in RELABEL_TABLES.items()
    }
