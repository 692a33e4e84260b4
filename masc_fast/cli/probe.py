"""``masc-fast probe``: run the paper's experiments on a finished training run."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(commands) -> argparse.ArgumentParser:
    """Add the ``probe`` sub-command to an argparse sub-parsers object."""
    from masc_fast.pipeline.experiments.masc import EXPERIMENTS

    parser = commands.add_parser(
        "probe",
        help="MASC experiments (exp1, exp2, exp3, random-init, early-stop) on a training run",
        description=(
            "Probe a run written by 'masc-fast train' with MASC at every paper layer and write "
            "tidy result rows. exp3 takes a run trained at p = 0 and --p, the post-hoc "
            "corruption degree."
        ),
    )
    parser.add_argument(
        "--run", dest="run_dir", required=True, type=Path, help="training run directory"
    )
    parser.add_argument(
        "--experiment", nargs="+", default=["exp1", "exp2"], choices=EXPERIMENTS, metavar="NAME",
        help=f"one or more of {', '.join(EXPERIMENTS)} (default exp1 exp2)",
    )  # fmt: skip
    parser.add_argument("--p", type=float, help="exp3: post-hoc corruption degree")
    threshold = parser.add_mutually_exclusive_group()
    threshold.add_argument("--variance", type=float, help="threshold t (default 0.99)")
    threshold.add_argument(
        "--thresholds", type=float, nargs="+", metavar="T",
        help=(
            "score every threshold T from one fit per class instead of one --variance, e.g. "
            "0.25 0.5 0.75 0.9 0.95 0.99 0.999 1 (1 = one component per class)"
        ),
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=512, help="rows per forward pass")
    parser.add_argument(
        "--bn-train-mode", action="store_true",
        help="per-sample BatchNorm, as the authors' ResNet-18 extraction (default: eval mode)",
    )  # fmt: skip
    parser.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda if present)")
    parser.add_argument("--backend", default="auto", help="scoring backend (default auto)")
    parser.add_argument("--memory-budget", help="e.g. 8GiB (default: half the memory)")
    parser.add_argument("--out", type=Path, help="CSV of the rows (default RUN/results.csv)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the experiments, write the rows atomically, print the best layer of each."""
    import pandas as pd

    from masc_fast._io import atomic_write_text
    from masc_fast.pipeline.experiments.masc import ProbeSettings, run_experiment

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
    frames = [
        run_experiment(args.run_dir, name, p=args.p if name == "exp3" else None, settings=settings)
        for name in args.experiment
    ]
    rows = pd.concat(frames, ignore_index=True)
    out = args.out or args.run_dir / "results.csv"
    atomic_write_text(out, rows.to_csv(index=False))
    print(_best_layers(rows).to_string(index=False))
    print(f"\nwrote {len(rows)} rows to {out}")
    return 0


def _best_layers(rows):
    """Per experiment, subspaces and threshold: the layer with the best MASC test accuracy."""
    test = rows[(rows["metric"] == "accuracy") & (rows["split"] == "test")]
    groups = ["experiment", "subspaces", "variance"]
    best = test.loc[test.groupby(groups, sort=False, dropna=False)["value"].idxmax()]
    model = rows[(rows["metric"] == "model_accuracy") & (rows["split"] == "test")]
    model = model.groupby("experiment")["value"].first().rename("model test")
    best = best.rename(columns={"value": "MASC test"}).join(model, on="experiment")
    return best[["experiment", "p", "subspaces", "variance", "layer", "MASC test", "model test"]]
