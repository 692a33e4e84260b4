"""``masc-fast baselines``: the stronger baselines of SPEC §7.2 on a finished training run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``baselines`` sub-command to an argparse sub-parsers object."""
    from masc_fast.pipeline.experiments.baselines import PROBE_NAMES

    parser = commands.add_parser(
        "baselines",
        help="logistic regression, NCM, k-NN, LDA and QDA probes on a training run",
        description=(
            "Fit each baseline probe on the activations of every probed layer of a run written "
            "by 'masc-fast train' (the input excluded), once on the corrupted and once on the "
            "true training labels, score it on the true test labels and write tidy result rows."
        ),
    )
    parser.add_argument(
        "--run", dest="run_dir", required=True, type=Path, help="training run directory"
    )
    parser.add_argument(
        "--probes", nargs="+", default=list(PROBE_NAMES), choices=PROBE_NAMES, metavar="NAME",
        help=f"one or more of {', '.join(PROBE_NAMES)} (default all)",
    )  # fmt: skip
    parser.add_argument(
        "--layers", nargs="+", metavar="LAYER",
        help="paper layer names, e.g. fc1 fc2 (default every layer except the input)",
    )  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")
    parser.add_argument("--batch-size", type=int, default=512, help="rows per forward pass")
    parser.add_argument(
        "--work-dir", type=Path,
        help="folder of the stored activations (default RUN/activations/final)",
    )  # fmt: skip
    parser.add_argument(
        "--bn-train-mode", action="store_true",
        help="per-sample BatchNorm, as the authors' ResNet-18 extraction (default: eval mode)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="CSV of the rows (default RUN/baselines.csv)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the probes, write the rows atomically, print test accuracy per layer and probe."""
    from masc_fast._io import atomic_write_text
    from masc_fast.pipeline.experiments.baselines import run_baselines

    rows = run_baselines(
        args.run_dir,
        probes=args.probes,
        layers=args.layers,
        device=args.device,
        work_dir=args.work_dir,
        progress=not args.no_progress,
        batch_size=args.batch_size,
        bn_train_mode=args.bn_train_mode,
    )
    out = args.out or args.run_dir / "baselines.csv"
    atomic_write_text(out, rows.to_csv(index=False))
    accuracy = rows[rows["metric"] == "accuracy"]
    table = accuracy.pivot_table(
        "value", index=["subspaces", "layer"], columns="probe", sort=False, dropna=False
    )
    print(table.to_string(float_format=lambda value: f"{value:.4f}"))
    failed = accuracy[accuracy["error"] != ""]
    if len(failed):
        print(f"\n{len(failed)} probe fits failed (NaN above); the 'error' column says why")
    print(f"\nwrote {len(rows)} rows to {out}")
    return 0
