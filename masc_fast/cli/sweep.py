"""``masc-fast sweep``: a TOML grid of training runs and experiments, resumable."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from masc_fast.cli import options

HELP = "run a grid of training runs and experiments from a TOML file (resumable)"
DESCRIPTION = (
    "Run every cell (model, dataset, p, seed, experiment) of the grid in a TOML sweep "
    "file that has no results yet. Each finished cell is written to OUT/results/cells/ "
    "and the tidy table OUT/results/results.csv is rebuilt after each cell, so an "
    "interrupted sweep resumes where it stopped when run again."
)

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def register(commands) -> argparse.ArgumentParser:
    """Add ``masc-fast sweep GRID.toml [--out DIR] [--list] [--no-progress]``."""
    parser = commands.add_parser("sweep", help=HELP, description=DESCRIPTION)
    parser.add_argument("grid", type=Path, help="the sweep file (TOML)")
    parser.add_argument("--out", type=Path, help="sweep folder (overrides sweep.out in the file)")
    parser.add_argument(
        "--list", action="store_true", help="list the cells and which are done, run nothing"
    )
    options.add_no_progress(parser)
    options.add_lock_wait(parser)
    parser.set_defaults(run=run)
    return parser


def _default_run_cell(cell, spec):
    from masc_fast.pipeline.sweeps.cells import run_cell

    return run_cell(cell, spec)


def run(args: argparse.Namespace, *, run_cell=None) -> int:
    """Execute ``masc-fast sweep``: 0 when every cell is done, 1 when a cell failed, 2 for a
    bad sweep file, 3 when another command holds the sweep folder's lock. ``run_cell``
    defaults to :func:`masc_fast.pipeline.sweeps.cells.run_cell`."""
    from masc_fast.pipeline.folder_lock import FolderBusyError, FolderLock
    from masc_fast.pipeline.results_table import completed_cells
    from masc_fast.pipeline.sweeps.disk import check_sweep_disk, sweep_disk
    from masc_fast.pipeline.sweeps.run import load_sweep, run_sweep

    try:
        spec = load_sweep(args.grid)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}")
        return 2
    if args.out is not None:
        spec = replace(spec, out=args.out.resolve())
    if args.no_progress:
        spec = replace(spec, probe={**spec.probe, "progress": False})
    cells = spec.cells()
    if args.list:
        done = completed_cells(spec.results_dir)
        for cell in cells:
            print(f"{'done' if cell.cell_id in done else 'todo'}  {cell.cell_id}")
        print(f"{sum(c.cell_id in done for c in cells)} of {len(cells)} cells done ({spec.out})")
        print(sweep_disk(spec, [cell for cell in cells if cell.cell_id not in done]).summary())
        return 0
    try:
        with FolderLock(spec.out, "masc-fast sweep", wait=args.wait):
            table = run_sweep(
                spec,
                run_cell=run_cell or _default_run_cell,
                progress=not args.no_progress,
                check_disk=check_sweep_disk,
            )
    except FolderBusyError as error:
        print(f"error: {error}")
        return 3
    except Exception as error:  # run_sweep logged the traceback and which cell failed
        done = len(completed_cells(spec.results_dir))
        print(
            f"sweep stopped: {error}\n{done} of {len(cells)} cells done; run the same command "
            f"again to resume"
        )
        return 1
    print(
        f"{len(cells)} of {len(cells)} cells done; {len(table)} rows in "
        f"{spec.results_dir / ('results.' + spec.format)}"
    )
    return 0
