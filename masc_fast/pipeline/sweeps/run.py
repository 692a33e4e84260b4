"""A grid of experiments from a TOML file, run cell by cell and resumable.

A sweep file names the grid (models, datasets, p, seeds, experiments) and the ``[train]`` and
``[probe]`` options every cell shares; :mod:`masc_fast.pipeline.sweeps.grid` documents its format and
reads and checks it (:func:`load_sweep`, :class:`SweepSpec` and :class:`Cell` are re-exported
here).

A cell is one (model, dataset, p, seed, experiment). :func:`run_sweep` skips the cells whose
rows are already on disk, runs the others one at a time, writes each cell's rows as soon as it
finishes and rebuilds the table after each, so a sweep killed at any point resumes where it
stopped when run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable

import pandas as pd

from masc_fast._io import atomic_write_text, read_json, remove_stale_temporaries
from masc_fast._progress import progress_bar
from masc_fast.pipeline.ranks import barrier, is_main, on_main
from masc_fast.pipeline.results_table import (
    check_format,
    completed_cells,
    load_results,
    rebuild_table,
    table_path,
    tidy_rows,
    write_cell,
)
from masc_fast.pipeline.sweeps.grid import Cell, SweepSpec, load_sweep

__all__ = ["Cell", "SweepSpec", "load_sweep", "run_sweep"]

logger = logging.getLogger(__name__)

# Options that change how fast a cell runs or what it shows, not its numbers: a resumed
# sweep may change them freely.
_PRESENTATION = {
    "train": {"progress", "device", "data_root", "download", "checkpoint_every"},
    "probe": {"progress", "device", "backend", "batch_size", "memory_budget"},
}
_SETTINGS_FILE = "sweep.json"


def _check_settings(spec: SweepSpec) -> None:
    """Refuse to resume a sweep whose finished cells were made with other options."""
    wanted = {
        section: {k: v for k, v in options.items() if k not in _PRESENTATION[section]}
        for section, options in (("train", spec.train), ("probe", spec.probe))
    }
    record = spec.out / _SETTINGS_FILE
    if record.exists():
        stored = read_json(record)
        if stored != json.loads(json.dumps(wanted)) and completed_cells(spec.results_dir):
            changed = sorted(
                f"{section}.{key}"
                for section in wanted
                for key in set(wanted[section]) | set(stored.get(section, {}))
                if wanted[section].get(key) != stored.get(section, {}).get(key)
            )
            raise ValueError(
                f"{spec.out} holds cells made with other options ({', '.join(changed)} differ "
                f"from {record}); use a new out folder, or delete {spec.results_dir} to redo them"
            )
    atomic_write_text(record, json.dumps(wanted, indent=1, sort_keys=True) + "\n")


def _cell_columns(cell: Cell) -> dict:
    """The run columns a cell's rows get; ``randomize`` and ``regularization`` only where
    used, so tables of the paper's sweeps keep the schema columns alone."""
    columns = dataclasses.asdict(cell)
    for name in ("randomize", "regularization"):
        if columns[name] == "none":
            del columns[name]
    return columns


def run_sweep(
    spec: SweepSpec,
    *,
    run_cell: Callable[[Cell, SweepSpec], pd.DataFrame],
    progress: bool = True,
    check_disk: Callable[[SweepSpec, list[Cell]], object] | None = None,
) -> pd.DataFrame:
    """Run every cell of the grid that has no results yet; return the whole table.

    Parameters
    ----------
    spec : SweepSpec
        From :func:`load_sweep`.
    run_cell : callable ``(cell, spec) -> pandas.DataFrame``
        Trains and probes one cell and returns its rows in the results schema; the run
        columns (model, dataset, p, seed, experiment) may be left out and are filled from
        the cell. The CLI passes :func:`masc_fast.pipeline.sweeps.cells.run_cell`.
    progress : bool, default True
        A progress bar over the cells.
    check_disk : callable ``(spec, cells)``, optional
        Called with the cells still to run before the first of them starts; raises when
        they will not fit on the disk (the CLI passes
        :func:`masc_fast.pipeline.sweeps.disk.check_sweep_disk`).

    Returns
    -------
    pandas.DataFrame
        The rebuilt table of all finished cells (:func:`~masc_fast.pipeline.results_table.load_results`).

    Raises
    ------
    ValueError
        If earlier cells in ``spec.out`` were made with other ``[train]`` / ``[probe]``
        options, or a cell's rows do not fit the schema.
    OSError
        From ``check_disk``, before any cell ran (ENOSPC: the estimate does not fit).
    BaseException
        Whatever ``run_cell`` raised (KeyboardInterrupt included), after logging which cell
        failed; every cell finished before it is on disk and in the table, so running the
        sweep again resumes at the failed cell.

    Example
    -------
    >>> from masc_fast.pipeline.sweeps.cells import run_cell
    >>> table = run_sweep(load_sweep("grid.toml"), run_cell=run_cell)  # doctest: +SKIP
    """
    check_format(spec.format)  # a missing pyarrow fails before the first cell, not after it
    cells = spec.cells()
    todo_ids = on_main(lambda: _cells_to_run(spec, cells, check_disk), "planning the sweep")
    todo = [cell for cell in cells if cell.cell_id in todo_ids]
    skipped = len(cells) - len(todo)
    main = is_main()  # under torchrun every rank runs every cell, rank 0 writes
    bar = progress_bar(
        total=len(cells),
        initial=skipped,
        desc="sweep",
        unit="cell",
        disable=not progress or not main,
    )
    try:
        for cell in todo:
            bar.set_postfix_str(cell.cell_id, refresh=True)
            try:
                rows = run_cell(cell, spec)
                if not isinstance(rows, pd.DataFrame):
                    raise TypeError(
                        f"run_cell returned {type(rows).__name__} for cell {cell.cell_id}, "
                        f"expected a pandas DataFrame of result rows"
                    )
                rows = tidy_rows(rows, **_cell_columns(cell))
            except BaseException:
                logger.exception(
                    "sweep %s: cell %s failed; the finished cells are in %s, run the sweep "
                    "again to resume",
                    spec.out,
                    cell.cell_id,
                    spec.results_dir,
                )
                raise
            if main:
                write_cell(spec.results_dir, cell.cell_id, rows)
                rebuild_table(spec.results_dir, spec.format)
            bar.update(1)
    finally:
        bar.close()
    if not todo and main:
        rebuild_table(spec.results_dir, spec.format)
    barrier("waiting for rank 0 to write the sweep's table")
    return load_results(table_path(spec.results_dir, spec.format))


def _cells_to_run(spec: SweepSpec, cells: list[Cell], check_disk) -> set[str]:
    """The ids of the cells without results (after the settings and disk checks, and the
    removal of what killed runs left); rank 0's job under torchrun."""
    _check_settings(spec)
    remove_stale_temporaries(spec.out)  # what killed earlier runs of this sweep left
    done = completed_cells(spec.results_dir)
    todo = [cell for cell in cells if cell.cell_id not in done]
    skipped = len(cells) - len(todo)
    logger.info("sweep %s: %d cells, %d done, %d to run", spec.out, len(cells), skipped, len(todo))
    if check_disk is not None and todo:
        check_disk(spec, todo)
    return {cell.cell_id for cell in todo}
