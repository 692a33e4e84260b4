"""``masc-fast demo``: the paper's pattern on scikit-learn's digits in about a minute, offline."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from masc_fast.cli import options

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser(
        "demo", help="train digits MLPs with shuffled labels and probe them"
    )
    parser.add_argument("--output", default="masc_demo", help="output folder (default masc_demo)")
    parser.add_argument(
        "--model",
        choices=("mlp-small", "mlp"),
        help="mlp-small (default; 64-512-512-10) or mlp (the paper's shape; several minutes)",
    )
    parser.add_argument("--corruptions", type=float, nargs="+", help="corruption degrees p")
    parser.add_argument("--max-epochs", type=int, help="epoch cap per model")
    options.add_no_progress(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    from masc_fast.pipeline.demo import DemoConfig, format_summary, run_demo

    config = DemoConfig()
    if args.model:
        config = replace(config, model=args.model)
    if args.corruptions:
        config = replace(config, corruptions=tuple(args.corruptions))
    if args.max_epochs:
        config = replace(config, max_epochs=args.max_epochs)
    started = time.perf_counter()
    summary = run_demo(args.output, config=config, progress=not args.no_progress)
    print("\nMASC on digits (best layer by test accuracy; gain = MASC / model test - 1)")
    print(format_summary(summary))
    print(
        f"\nwrote {args.output}/summary.csv, results/results.csv and report/index.html "
        f"in {time.perf_counter() - started:.0f} s"
    )
    return 0
