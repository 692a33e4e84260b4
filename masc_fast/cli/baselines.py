"""``masc-fast baselines``: the stronger baselines of SPEC §7.2 on a finished training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from masc_fast.cli import options

HELP = "logistic regression, NCM, k-NN, LDA and QDA probes on a training run"
DESCRIPTION = (
    "Fit each baseline probe on the activations of every probed layer of a run written "
    "by 'masc-fast train' (the input excluded), once on the corrupted and once on the "
    "true training labels, score it on the true test labels and write tidy result rows."
)

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``baselines`` sub-command to an argparse sub-parsers object."""
    from masc_fast.pipeline.experiments.baselines import PROBE_NAMES

    parser = commands.add_parser("baselines", help=HELP, description=DESCRIPTION)
    options.add_run_dir(parser)
    options.add_names(parser, "--probes", PROBE_NAMES, default=PROBE_NAMES)
    parser.add_argument(
        "--layers", nargs="+", metavar="LAYER",
        help="paper layer names, e.g. fc1 fc2 (default every layer except the input)",
    )  # fmt: skip
    options.add_device(parser)
    options.add_batch_size(parser)
    parser.add_argument(
        "--work-dir", type=Path,
        help="folder of the stored activations (default RUN/activations/final)",
    )  # fmt: skip
    options.add_bn_train_mode(parser)
    parser.add_argument("--out", type=Path, help="CSV of the rows (default RUN/baselines.csv)")
    options.add_no_progress(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the probes, write the rows atomically, print test accuracy per layer and probe."""
    from masc_fast.pipeline.experiments.baselines import run_baselines
    from masc_fast.pipeline.ranks import is_main, on_main

    rows = on_main(  # under torchrun: scikit-learn fits on rank 0, the others wait
        lambda: run_baselines(
            args.run_dir,
            probes=args.probes,
            layers=args.layers,
            device=args.device,
            work_dir=args.work_dir,
            progress=not args.no_progress,
            batch_size=args.batch_size,
            bn_train_mode=args.bn_train_mode,
        ),
        "the baselines on rank 0",
    )
    accuracy = rows[rows["metric"] == "accuracy"]
    table = accuracy.pivot_table(
        "value", index=["subspaces", "layer"], columns="probe", sort=False, dropna=False
    )
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    failed = accuracy[accuracy["error"] != ""]
    if len(failed):
        print(f"\n{len(failed)} probe fits failed (NaN above); the 'error' column says why")
    if is_main():
        options.write_rows(rows, args.out or args.run_dir / "baselines.csv")
    return 0
