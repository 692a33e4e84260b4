"""Seeds aggregation: rows that differ only in ``seed`` become one row of mean, min and max."""

from __future__ import annotations

import pandas as pd

from masc_fast.pipeline.report._rows import check_results

__all__ = ["PER_RUN_COLUMNS", "STAT_COLUMNS", "aggregate_seeds"]

#: Extra columns that describe a run rather than identify a measurement: ``n`` (points
#: scored) and ``epoch`` (the checkpoint's epoch; seeds stop training at different epochs).
PER_RUN_COLUMNS = ("n", "epoch")
#: The columns :func:`aggregate_seeds` adds in place of ``seed`` and ``value``.
STAT_COLUMNS = ("mean", "min", "max", "n_seeds")


def aggregate_seeds(table: pd.DataFrame, *, ignore=PER_RUN_COLUMNS) -> pd.DataFrame:
    """Mean, minimum, maximum and count of ``value`` over the seeds of each measurement.

    Two rows belong to the same measurement when they agree on every column except ``seed``,
    ``value`` and the ``ignore`` columns. The paper plots the mean over runs with the
    min–max range shaded; the same statistics come out here. In this pipeline runs with
    distinct seeds are independent: the seed draws the label noise (``noise_recipe="seeded"``),
    the initial weights and the epoch shuffles, so the range reflects run-to-run spread (unlike
    the authors' sensitivity "seeds", which were bit-identical, SPEC §7.3).

    Parameters
    ----------
    table : pandas.DataFrame
        Tidy result rows (:data:`masc_fast.pipeline.results_table.RESULT_COLUMNS` plus extras).
    ignore : sequence of str, default :data:`PER_RUN_COLUMNS`
        Columns left out of the measurement key and out of the result (absent ones are
        skipped). Pass ``ignore=("n",)`` to keep ``epoch`` as a key, as for per-epoch
        retraining rows.

    Returns
    -------
    pandas.DataFrame
        One row per measurement, in order of first appearance: the key columns in their
        original order, then ``mean``, ``min``, ``max`` (NaN values are skipped) and
        ``n_seeds`` (distinct seeds).

    Raises
    ------
    TypeError
        If ``table`` is not a DataFrame.
    ValueError
        If it lacks a schema column, or two rows of one seed share a key (they would be
        averaged as if they were seeds); the message names the measurement and the seed.

    Example
    -------
    >>> rows = pd.DataFrame({"model": "mlp", "dataset": "digits", "p": 0.2, "seed": [0, 1],
    ...     "experiment": "exp1", "layer": "fc1", "subspaces": "corrupted", "split": "test",
    ...     "labels": "true", "metric": "accuracy", "value": [0.61, 0.63]})
    >>> aggregate_seeds(rows)[["layer", "mean", "min", "max", "n_seeds"]]
      layer  mean   min   max  n_seeds
    0   fc1  0.62  0.61  0.63        2
    """
    check_results(table)
    keys = [name for name in table.columns if name not in ("seed", "value") and name not in ignore]
    if table.empty:
        return pd.DataFrame({name: [] for name in [*keys, *STAT_COLUMNS]})
    groups = table.groupby(keys, dropna=False, sort=False)
    sizes = groups.size().to_numpy()
    seeds = groups["seed"].nunique().to_numpy()
    if (sizes != seeds).any():
        position = int((sizes != seeds).nonzero()[0][0])
        key = groups.size().index[position]
        clash = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        raise ValueError(
            f"{int(sizes[position])} rows share seeds for one measurement {clash}: rows of one "
            f"seed must differ in some key column (or drop the column that separates them "
            f"before aggregating; ignore={tuple(ignore)})"
        )
    stats = groups["value"].agg(["mean", "min", "max"])
    stats["n_seeds"] = groups["seed"].nunique()
    return stats.reset_index()
