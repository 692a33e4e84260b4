"""``masc-fast probe``: run the paper's experiments on a finished training run."""

from __future__ import annotations

import argparse
from pathlib import Path

from masc_fast.cli import options

HELP = "MASC experiments (exp1, exp2, exp3, random-init, early-stop) on a training run"
DESCRIPTION = (
    "Probe a run written by 'masc-fast train' with MASC at every paper layer and write "
    "tidy result rows. exp3 takes a run trained at p = 0 and --p, the post-hoc "
    "corruption degree."
)

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``probe`` sub-command to an argparse sub-parsers object."""
    from masc_fast.pipeline.experiments import EXPERIMENTS

    parser = commands.add_parser("probe", help=HELP, description=DESCRIPTION)
    options.add_run_dir(parser)
    options.add_names(parser, "--experiment", EXPERIMENTS, default=("exp1", "exp2"))
    parser.add_argument("--p", type=float, help="exp3: post-hoc corruption degree")
    threshold = parser.add_mutually_exclusive_group()
    options.add_variance(threshold, default=None)
    threshold.add_argument(
        "--thresholds", type=float, nargs="+", metavar="T",
        help=(
            "score every threshold T from one fit per class instead of one --variance, e.g. "
            "0.25 0.5 0.75 0.9 0.95 0.99 0.999 1 (1 = one component per class)"
        ),
    )  # fmt: skip
    options.add_batch_size(parser)
    options.add_bn_train_mode(parser)
    options.add_device(parser)
    options.add_backend(parser)
    options.add_memory_budget(parser)
    parser.add_argument("--out", type=Path, help="CSV of the rows (default RUN/results.csv)")
    options.add_no_progress(parser)
    options.add_lock_wait(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the experiments, write the rows atomically, print the best layer of each."""
    import pandas as pd

    from masc_fast.pipeline.experiments import ProbeSettings, run_experiment
    from masc_fast.pipeline.folder_lock import FolderLock
    from masc_fast.pipeline.ranks import is_main

    settings = ProbeSettings(
        variance=0.99 if args.variance is None else args.variance,
        thresholds=None if args.thresholds is None else tuple(args.thresholds),
        batch_size=args.batch_size,
        bn_train_mode=args.bn_train_mode,
        device=args.device,
        backend=args.backend,
        memory_budget=args.memory_budget,
        progress=not args.no_progress,
    )
    with FolderLock(args.run_dir, "masc-fast probe", wait=args.wait):
        frames = [
            run_experiment(
                args.run_dir, name, p=args.p if name == "exp3" else None, settings=settings
            )
            for name in args.experiment
        ]
    rows = pd.concat(frames, ignore_index=True)
    print(_best_layers(rows).to_string(index=False))
    if is_main():  # under torchrun rank 0 writes
        options.write_rows(rows, args.out or args.run_dir / "results.csv")
    return 0


def _best_layers(rows):
    """Per experiment, subspaces and threshold: the layer with the best MASC test accuracy
    (at the experiment's last checkpoint: the final one for ``dynamics``)."""
    if "epoch" in rows:
        last = rows.groupby("experiment")["epoch"].transform("max")
        rows = rows[(rows["epoch"] == last) | rows["epoch"].isna()]
    test = rows[(rows["metric"] == "accuracy") & (rows["split"] == "test")]
    groups = ["experiment", "subspaces", "variance"]
    best = test.loc[test.groupby(groups, sort=False, dropna=False)["value"].idxmax()]
    model = rows[(rows["metric"] == "model_accuracy") & (rows["split"] == "test")]
    model = model.groupby("experiment")["value"].first().rename("model test")
    best = best.rename(columns={"value": "MASC test"}).join(model, on="experiment")
    return best[["experiment", "p", "subspaces", "variance", "layer", "MASC test", "model test"]]
