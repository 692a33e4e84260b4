"""``masc-fast verify-reference``: MASC on the raw input layer against the authors' numbers."""

from __future__ import annotations

import argparse
from pathlib import Path

from masc_fast.cli import options

HELP = "check MASC on the raw input layer against the authors' numbers"
DESCRIPTION = (
    "Fit MASC on the flattened pixels of each dataset found under --data-root (training "
    "labels corrupted with the authors' recipe), score the true test labels and compare "
    "with the paper's values: accuracy within 1e-4 after 4-decimal rounding, total "
    "components within one per class. Exit status 1 if any setting disagrees; 0 if all "
    "agree or no dataset was found (nothing verified)."
)

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add ``masc-fast verify-reference --data-root DIR [...]``."""
    from masc_fast.pipeline.experiments.verify_reference import (
        DEFAULT_CORRUPTIONS,
        DEFAULT_THRESHOLDS,
        TARGET_NAMES,
    )

    parser = commands.add_parser("verify-reference", help=HELP, description=DESCRIPTION)
    options.add_data_root(parser, required=True)
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
    options.add_download(parser)
    parser.add_argument("--out", type=Path, help="also write the full report to this CSV")
    options.add_device(parser)
    options.add_backend(parser)
    parser.add_argument(
        "--eigensolver",
        choices=["auto", "exact", "partial", "fp32"],
        default="auto",
        help="per-class eigensolver (default auto)",
    )
    options.add_batch_size(parser, default=1000)
    options.add_no_progress(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
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
