"""The tidy results table of a sweep: one row per measurement, one file per finished cell.

Every measurement is a row of :data:`RESULT_COLUMNS`: which run (``model, dataset, p, seed,
experiment``), where it was measured (``layer``; ``subspaces`` = which labels built the MASC
subspaces, ``""`` for rows that are not MASC such as the model's own accuracy), on what
(``split``, and ``labels`` = which labels it was scored against), and ``metric`` / ``value``.
Extra columns may follow.

A sweep writes each finished cell's rows to ``results/cells/<cell_id>.csv`` and then
concatenates all cell files into ``results/results.csv`` (or ``.parquet``). Every file is
written to a temporary name beside the target and renamed into place, so a crash at any moment
leaves the old file or the new one, never a partial one, and a rerun can tell which cells are
done from the cell files alone.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from masc_fast._io import atomic_path

__all__ = [
    "RESULT_COLUMNS",
    "SUBSPACE_LABELS",
    "tidy_rows",
    "write_cell",
    "completed_cells",
    "rebuild_table",
    "load_results",
    "table_path",
    "check_format",
]

logger = logging.getLogger(__name__)

RESULT_COLUMNS = (
    "model",
    "dataset",
    "p",
    "seed",
    "experiment",
    "layer",
    "subspaces",
    "split",
    "labels",
    "metric",
    "value",
)
#: Allowed values of the ``subspaces`` column ("" = not a MASC measurement).
SUBSPACE_LABELS = ("corrupted", "true", "")

_STRING_COLUMNS = (
    "model",
    "dataset",
    "experiment",
    "layer",
    "subspaces",
    "split",
    "labels",
    "metric",
)
# Extra columns that hold names: read as text ("true" is a randomization, not a boolean);
# empty means absent (rows of runs without them).
_TEXT_EXTRAS = ("randomize", "regularization")
_CELLS = "cells"
_FORMATS = ("csv", "parquet")
# Cell ids become file names: no separators, no leading dot (temporary files start with one).
_CELL_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]*$")


def tidy_rows(frame: pd.DataFrame, **constants) -> pd.DataFrame:
    """Validate measurement rows, fill constant columns and put the schema columns first.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows with (some of) :data:`RESULT_COLUMNS`, plus any extra columns. Not modified.
    **constants
        Values for whole columns, e.g. ``model="mlp", p=0.2``. A constant fills a missing
        column; for a column already present it must agree with every row.

    Returns
    -------
    pandas.DataFrame
        A new frame: :data:`RESULT_COLUMNS` in order (strings, ``p`` and ``value`` float,
        ``seed`` int), then the extra columns in their original order; missing string fields
        (NaN / None) become ``""``.

    Raises
    ------
    ValueError
        If a schema column is still missing after filling, a constant disagrees with a column
        already present, ``subspaces`` holds a value outside :data:`SUBSPACE_LABELS`, or ``p``,
        ``seed`` or ``value`` cannot be read as numbers; the message names the column.
    TypeError
        If ``frame`` is not a DataFrame.

    Example
    -------
    >>> rows = pd.DataFrame({"layer": ["input"], "subspaces": ["corrupted"], "split": ["test"],
    ...                      "labels": ["true"], "metric": ["accuracy"], "value": [0.82]})
    >>> tidy = tidy_rows(rows, model="mlp", dataset="mnist", p=0.2, seed=0, experiment="exp1")
    >>> list(tidy.columns) == list(RESULT_COLUMNS)
    True
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"rows must be a pandas DataFrame, got {type(frame).__name__}")
    frame = frame.copy()
    for name, value in constants.items():
        if name in frame.columns:
            present = frame[name]
            if len(present) and not _all_equal(present, value):
                raise ValueError(
                    f"column {name!r} holds {sorted(map(str, present.unique()))[:5]} but the "
                    f"constant {name}={value!r} was given for it"
                )
        frame[name] = value
    missing = [name for name in RESULT_COLUMNS if name not in frame.columns]
    if missing:
        raise ValueError(
            f"result rows lack the column(s) {missing}; have {list(frame.columns)} "
            f"(pass them as constants, e.g. tidy_rows(rows, model='mlp'))"
        )
    for name in _STRING_COLUMNS:
        frame[name] = _as_strings(frame[name])
    bad = sorted(set(frame["subspaces"]) - set(SUBSPACE_LABELS))
    if bad:
        raise ValueError(f"column 'subspaces' must hold one of {SUBSPACE_LABELS}, got {bad}")
    frame["p"] = _as_numbers(frame["p"], "p")
    frame["value"] = _as_numbers(frame["value"], "value")
    seeds = _as_numbers(frame["seed"], "seed")
    if len(seeds) and (seeds.isna().any() or (seeds != np.round(seeds)).any()):
        raise ValueError(f"column 'seed' must hold whole numbers, got {seeds.unique()[:5]}")
    frame["seed"] = seeds.astype(np.int64)
    extras = [name for name in frame.columns if name not in RESULT_COLUMNS]
    return frame[list(RESULT_COLUMNS) + extras].reset_index(drop=True)


def _all_equal(column: pd.Series, value) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = pd.to_numeric(column, errors="coerce")
        return bool(np.isclose(numbers.to_numpy(dtype=float), float(value), rtol=0, atol=0).all())
    return bool((_as_strings(column) == str(value)).all())


def _as_strings(column: pd.Series) -> pd.Series:
    return column.map(lambda v: v if isinstance(v, str) else "" if pd.isna(v) else str(v))


def _as_numbers(column: pd.Series, name: str) -> pd.Series:
    try:
        return pd.to_numeric(column).astype(float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"column {name!r} must hold numbers: {error}") from error


def _check_cell_id(cell_id: str) -> str:
    if not isinstance(cell_id, str) or not _CELL_ID.match(cell_id):
        raise ValueError(
            f"cell id {cell_id!r} is not a valid file name: use letters, digits and _ . + = -, "
            f"not starting with '.', '-' or '='"
        )
    return cell_id


def write_cell(results_dir: str | os.PathLike, cell_id: str, rows: pd.DataFrame) -> Path:
    """Write one finished cell's rows to ``results_dir/cells/<cell_id>.csv``, atomically.

    Parameters
    ----------
    results_dir : path
        The sweep's results folder (created if needed).
    cell_id : str
        The cell's id (a file name: letters, digits and ``_ . + = -``).
    rows : pandas.DataFrame
        Tidy rows (validated with :func:`tidy_rows`).

    Returns
    -------
    pathlib.Path
        The cell file. Its presence marks the cell as done (:func:`completed_cells`).

    Raises
    ------
    ValueError
        A bad cell id or rows that do not fit the schema.

    Example
    -------
    >>> write_cell("runs/grid/results", "mlp-digits-p0.2-s1-exp1", rows)  # doctest: +SKIP
    """
    _check_cell_id(cell_id)
    tidy = tidy_rows(rows)
    path = Path(results_dir) / _CELLS / f"{cell_id}.csv"
    with atomic_path(path) as tmp:
        tidy.to_csv(tmp, index=False)
    return path


def _cell_files(results_dir: str | os.PathLike) -> list[Path]:
    folder = Path(results_dir) / _CELLS
    if not folder.is_dir():
        return []
    # Temporary files of an interrupted write start with "." and are never a finished cell.
    return sorted(path for path in folder.glob("*.csv") if not path.name.startswith("."))


def completed_cells(results_dir: str | os.PathLike) -> set[str]:
    """Ids of the cells whose rows are on disk under ``results_dir/cells``.

    Parameters
    ----------
    results_dir : path
        A sweep's results folder; need not exist (then nothing is done).

    Returns
    -------
    set of str

    Example
    -------
    >>> completed_cells("runs/never-ran/results")
    set()
    """
    return {path.stem for path in _cell_files(results_dir)}


def table_path(results_dir: str | os.PathLike, format: str = "csv") -> Path:
    """Where :func:`rebuild_table` writes the table: ``results_dir/results.<format>``."""
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
    return Path(results_dir) / f"results.{format}"


def check_format(format: str) -> str:
    """``format`` if a table can be written in it here, else a ValueError / ImportError."""
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "format='parquet' needs pyarrow (pip install pyarrow); use format='csv' without it"
            ) from error
    return format


def rebuild_table(results_dir: str | os.PathLike, format: str = "csv") -> Path:
    """Concatenate every cell file into ``results_dir/results.csv`` (or ``.parquet``), atomically.

    Parameters
    ----------
    results_dir : path
        The sweep's results folder.
    format : {"csv", "parquet"}, default "csv"
        ``"parquet"`` needs pyarrow.

    Returns
    -------
    pathlib.Path
        The table file; with no finished cell it holds just the header (CSV) or no rows.

    Raises
    ------
    ValueError
        An unknown format, or a cell file that does not fit the schema (naming the file).
    ImportError
        ``format="parquet"`` without pyarrow.

    Notes
    -----
    Cells are read in sorted id order, so the table does not depend on the order cells ran.
    The previous table is replaced only once the new one is complete.

    Example
    -------
    >>> rebuild_table("runs/grid/results")  # doctest: +SKIP
    PosixPath('runs/grid/results/results.csv')
    """
    path = table_path(results_dir, check_format(format))
    table = _concat_cells(results_dir)
    with atomic_path(path) as tmp:
        if format == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
    logger.info("wrote %s (%d rows)", path, len(table))
    return path


def _concat_cells(results_dir) -> pd.DataFrame:
    frames = []
    for path in _cell_files(results_dir):
        try:
            frames.append(tidy_rows(_read_csv(path)))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from error
    if not frames:
        return tidy_rows(pd.DataFrame({name: [] for name in RESULT_COLUMNS}))
    return pd.concat(frames, ignore_index=True)


def _read_csv(path: Path) -> pd.DataFrame:
    # String columns are read verbatim so a layer called "NA" or an empty `subspaces` stays a
    # string; other columns get numbers back, with "" (how to_csv writes NaN) as NaN.
    text = {name: str for name in (*_STRING_COLUMNS, *_TEXT_EXTRAS)}
    frame = pd.read_csv(path, dtype=text, keep_default_na=False)
    for name in frame.columns:
        if name in _TEXT_EXTRAS:
            frame[name] = frame[name].replace("", np.nan)
            continue
        if name in _STRING_COLUMNS or frame[name].dtype.kind in "biuf":
            continue
        try:
            frame[name] = pd.to_numeric(frame[name].replace("", np.nan))
        except (TypeError, ValueError):
            pass  # a genuine text column: keep it as read
    return frame


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Load a sweep's tidy table in one call.

    Parameters
    ----------
    path : path
        A table file (``.csv`` or ``.parquet``), a results folder (its ``results.parquet`` or
        ``results.csv``, else its cell files) or a sweep's ``out`` folder (its ``results/``).

    Returns
    -------
    pandas.DataFrame
        :data:`RESULT_COLUMNS` first, typed as in :func:`tidy_rows`.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no table and no cell files; the message names where it looked.

    Example
    -------
    >>> table = load_results("runs/demo-grid")  # doctest: +SKIP
    >>> table.query("metric == 'accuracy' and split == 'test'")  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        folders = [path, path / "results"]
        for folder in folders:
            for name in ("results.parquet", "results.csv"):
                if (folder / name).is_file():
                    return load_results(folder / name)
            if _cell_files(folder):
                return _concat_cells(folder)
        raise FileNotFoundError(
            f"no results table (results.csv / results.parquet) or cell files in "
            f"{' or '.join(str(folder) for folder in folders)}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no results table at {path}")
    if path.suffix == ".parquet":
        check_format("parquet")
        return tidy_rows(pd.read_parquet(path))
    return tidy_rows(_read_csv(path))
