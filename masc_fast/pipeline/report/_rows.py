"""Row selection shared by the report's tables and figures: filters, thresholds, layer order."""

from __future__ import annotations

import numpy as np
import pandas as pd

from masc_fast.pipeline.results_table import RESULT_COLUMNS

#: The default explained-variance threshold t; tables and most figures use its rows.
DEFAULT_VARIANCE = 0.99
#: Experiments whose rows come from retraining with MASC relabels (SPEC §6).
RETRAIN_EXPERIMENTS = ("retrain", "retrain-10")
#: The paper's relabel-analysis metrics (SPEC §6 item 8), in table order (Tables 6, 7, 8).
RELABEL_METRICS = ("wrong_reduction", "wrong_corrected_pct", "correct_broken_pct")


def check_results(results) -> pd.DataFrame:
    """``results`` if it is a DataFrame holding every schema column, else a named error."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    missing = [name for name in RESULT_COLUMNS if name not in results.columns]
    if missing:
        raise ValueError(
            f"results lack the column(s) {missing}; expected the tidy table of "
            f"masc_fast.pipeline.results_table (have {list(results.columns)})"
        )
    return results


def select(frame: pd.DataFrame, **conditions) -> pd.DataFrame:
    """Rows whose columns equal the given values (a tuple or list means "one of").

    A condition on a column the frame lacks selects nothing: rows written before that column
    existed cannot match it.
    """
    mask = np.ones(len(frame), dtype=bool)
    for name, wanted in conditions.items():
        if name not in frame.columns:
            return frame.iloc[0:0]
        column = frame[name]
        if isinstance(wanted, (tuple, list)):
            mask &= column.isin(list(wanted)).to_numpy()
        else:
            mask &= (column == wanted).to_numpy()
    return frame[mask]


def at_variance(frame: pd.DataFrame, variance: float = DEFAULT_VARIANCE) -> pd.DataFrame:
    """Rows measured at threshold ``variance``; rows without a threshold (NaN) are kept.

    Without a ``variance`` column every row counts as the default threshold's.
    """
    if "variance" not in frame.columns:
        return frame
    values = pd.to_numeric(frame["variance"], errors="coerce").to_numpy(dtype=float)
    keep = np.isnan(values) | np.isclose(values, variance, rtol=0, atol=1e-9)
    return frame[keep]


def unregularized_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of runs without Arpit et al.'s regularisers, without a ``regularization``
    column (all rows when every run is regularised)."""
    if "regularization" not in frame.columns:
        return frame
    plain = frame["regularization"].fillna("none").astype(str) == "none"
    frame = frame[plain.to_numpy()] if plain.any() else frame
    return frame.drop(columns="regularization")


def paper_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the paper's tables and figures read, without a ``randomize`` column.

    The paper's runs (no ``randomize``, or ``"none"``) when the table has any; a table of
    Zhang et al.'s randomization tests alone gives its label modes (true, partial, random
    labels: label noise at their p); input randomizations never enter the paper's figures.
    Likewise unregularised runs when there are any (Arpit et al.'s regularisers aside).
    """
    frame = unregularized_rows(frame)
    if "randomize" not in frame.columns:
        return frame
    modes = frame["randomize"].fillna("none").astype(str)
    wanted = modes == "none"
    if not wanted.any():
        wanted = modes.isin(("true", "partial", "random-labels"))
    return frame[wanted.to_numpy()].drop(columns="randomize")


def model_datasets(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """The (model, dataset) pairs of the table, in order of first appearance."""
    pairs = frame[["model", "dataset"]].drop_duplicates()
    return [(str(model), str(dataset)) for model, dataset in pairs.itertuples(index=False)]


def one_model(
    results: pd.DataFrame, model: str | None, dataset: str | None
) -> tuple[pd.DataFrame, str, str]:
    """The rows of one model-dataset, its model and its dataset.

    With no filter the table must hold exactly one pair; an empty table gives empty rows.

    Raises
    ------
    ValueError
        If the filter leaves more than one pair (the message lists them).
    """
    frame = check_results(results)
    if model is not None:
        frame = frame[frame["model"] == model]
    if dataset is not None:
        frame = frame[frame["dataset"] == dataset]
    pairs = model_datasets(frame)
    if len(pairs) > 1:
        raise ValueError(
            f"the results hold {len(pairs)} model-datasets {pairs}; pass model= and dataset= "
            f"to choose one"
        )
    if not pairs:
        return frame, model or "", dataset or ""
    return frame, pairs[0][0], pairs[0][1]


def layer_order(frame: pd.DataFrame) -> list[str]:
    """Layers in probe order, from the table alone.

    Every experiment writes its layers in probe order, but one run may cover fewer layers
    (the baselines skip the input) and cell files are concatenated by id, so the order of the
    longest single run (experiment, p, seed) is the base and any other layer follows in order
    of first appearance. ``"model"`` (the model's own accuracy) is not a layer.
    """
    layers = frame.loc[frame["layer"] != "model", ["experiment", "p", "seed", "layer"]]
    if layers.empty:
        return []
    best: list[str] = []
    for _, run in layers.groupby(["experiment", "p", "seed"], sort=False):
        names = list(dict.fromkeys(run["layer"]))
        if len(names) > len(best):
            best = names
    rest = [name for name in dict.fromkeys(layers["layer"]) if name not in best]
    return best + rest


def p_values(frame: pd.DataFrame) -> list[float]:
    """The distinct corruption degrees of the rows, ascending."""
    return sorted(float(p) for p in frame["p"].unique())
