"""``masc-fast report``: tables, figures and an HTML page from a sweep's tidy results table."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "Tables 1/5 (and 6-8), figures and index.html from a results table"
DESCRIPTION = (
    "Read a tidy results table and write the paper's tables (Markdown and CSV), its "
    "figures (PNG and PDF) and a self-contained index.html into one folder. Figures "
    "whose rows are absent are skipped; the page says which rows they need."
)

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``report`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser("report", help=HELP, description=DESCRIPTION)
    parser.add_argument(
        "--results",
        required=True,
        type=Path,
        help="a results table (.csv / .parquet), a results folder or a sweep's out folder",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("report"), help="output folder (default report/)"
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the report and print where its page is."""
    from masc_fast.pipeline.report import build_report

    page = build_report(args.results, args.out)
    print(
        f"wrote {page} (tables in {page.parent / 'tables'}, figures in {page.parent / 'figures'})"
    )
    return 0
