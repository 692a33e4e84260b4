"""``masc-fast sweep`` and ``masc-fast verify-reference``: argparse wiring and their runners.

:func:`register` adds both subcommands to the ``masc-fast`` parser (``commands`` is the object
``add_subparsers`` returned); each sets ``run`` to the function that executes it and returns
the exit status.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

__all__ = [
    "register",
    "register_sweep",
    "register_verify_reference",
    "run_sweep_command",
    "run_verify_reference",
]

logger = logging.getLogger(__name__)


def register(commands) -> None:
    """Add ``sweep`` and ``verify-reference`` to the subcommands of ``masc-fast``."""
    register_sweep(commands)
    register_verify_reference(commands)


def register_sweep(commands) -> argparse.ArgumentParser:
    """Add ``masc-fast sweep GRID.toml [--out DIR] [--list] [--no-progress]``."""
    parser = commands.add_parser(
        "sweep",
        help="run a grid of training runs and experiments from a TOML file (resumable)",
        description=(
            "Run every cell (model, dataset, p, seed, experiment) of the grid in a TOML sweep "
            "file that has no results yet. Each finished cell is written to OUT/results/cells/ "
            "and the tidy table OUT/results/results.csv is rebuilt after each cell, so an "
            "interrupted sweep resumes where it stopped when run again."
        ),
    )
    parser.add_argument("grid", type=Path, help="the sweep file (TOML)")
    parser.add_argument("--out", type=Path, help="sweep folder (overrides sweep.out in the file)")
    parser.add_argument(
        "--list", action="store_true", help="list the cells and which are done, run nothing"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run_sweep_command)
    return parser


def _default_run_cell(cell, spec):
    from masc_fast.pipeline.experiments.masc import run_cell

    return run_cell(cell, spec)


def run_sweep_command(args: argparse.Namespace, *, run_cell=None) -> int:
    """Execute ``masc-fast sweep``: 0 when every cell is done, 1 when a cell failed, 2 for a
    bad sweep file. ``run_cell`` defaults to :func:`masc_fast.pipeline.experiments.masc.run_cell`."""
    from masc_fast.pipeline.results_table import completed_cells
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
        return 0
    try:
        table = run_sweep(
            spec, run_cell=run_cell or _default_run_cell, progress=not args.no_progress
        )
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


def register_verify_reference(commands) -> argparse.ArgumentParser:
    """Add ``masc-fast verify-reference --data-root DIR [...]``."""
    from masc_fast.pipeline.experiments.verify_reference import (
        DEFAULT_CORRUPTIONS,
        DEFAULT_THRESHOLDS,
        TARGET_NAMES,
    )

    parser = commands.add_parser(
        "verify-reference",
        help="check MASC on the raw input layer against the authors' numbers",
        description=(
            "Fit MASC on the flattened pixels of each dataset found under --data-root (training "
            "labels corrupted with the authors' recipe), score the true test labels and compare "
            "with the paper's values: accuracy within 1e-4 after 4-decimal rounding, total "
            "components within one per class. Exit status 1 if any setting disagrees; 0 if all "
            "agree or no dataset was found (nothing verified)."
        ),
    )
    parser.add_argument("--data-root", type=Path, required=True, help="folder holding the datasets")
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(TARGET_NAMES),
        default=list(TARGET_NAMES),
        help="datasets to check (default: all three)",
    )
    parser.add_argument(
        "--thresholds",
        nargs="+",
        type=float,
        default=list(DEFAULT_THRESHOLDS),
        help="variance thresholds; 1 = one component per class (default: 0.99 0.75 0.5 0.25 1)",
    )
    parser.add_argument(
        "--corruptions",
        nargs="+",
        type=float,
        default=list(DEFAULT_CORRUPTIONS),
        help="corruption degrees p (default: 0 0.2 0.4 0.6 0.8)",
    )
    parser.add_argument(
        "--download", action="store_true", help="download missing datasets into --data-root"
    )
    parser.add_argument("--out", type=Path, help="also write the full report to this CSV")
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--backend", default="auto", help="masc_fast backend (default auto)")
    parser.add_argument(
        "--eigensolver",
        choices=["auto", "exact", "partial"],
        default="auto",
        help="per-class eigensolver (default auto)",
    )
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per batch")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run_verify_reference)
    return parser


def run_verify_reference(args: argparse.Namespace) -> int:
    """Execute ``masc-fast verify-reference``; 1 on a mismatch, else 0."""
    from masc_fast._io import atomic_write_text
    from masc_fast.pipeline.experiments.verify_reference import (
        format_report,
        summary_line,
        verify_reference,
    )

    report = verify_reference(
        args.data_root,
        datasets=args.datasets,
        thresholds=args.thresholds,
        corruptions=args.corruptions,
        device=args.device,
        backend=args.backend,
        eigensolver=args.eigensolver,
        batch_size=args.batch_size,
        download=args.download,
        progress=not args.no_progress,
    )
    skipped = report.attrs.get("skipped", {})
    if args.out is not None:
        atomic_write_text(args.out, report.to_csv(index=False))
    if report.empty:
        print(f"skipped: no datasets found under {args.data_root}, nothing verified")
        return 0
    print(format_report(report))
    if skipped:  # verify_reference logged where it looked for each
        print(f"skipped {', '.join(skipped)}: not found under {args.data_root}")
    print(summary_line(report))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0 if bool(report["ok"].all()) else 1
