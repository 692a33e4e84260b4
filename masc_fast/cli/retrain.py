"""``masc-fast retrain``: fine-tune a memorised run on its MASC relabels (SPEC §6)."""

from __future__ import annotations

import argparse
from pathlib import Path

from masc_fast.cli import options

HELP = "relabel a memorised run's training set with MASC and fine-tune on it"
DESCRIPTION = (
    "Split the test set 80/20, pick the layer with the best MASC accuracy on the 20 % "
    "part (separately for corrupted- and true-label subspaces), relabel every training "
    "point with that layer's MASC prediction and fine-tune the run's final weights on "
    "the new labels: 'retrain' (up to 30 epochs, early stopping on the 20 % accuracy, "
    "patience 3) and 'retrain-10' (10 epochs). Work directories go under "
    "RUN/retrain/<variant>-<subspaces>/; --resume continues killed ones."
)

__all__ = ["register", "run"]

_BOTH = "both"


def register(commands) -> argparse.ArgumentParser:
    """Add the ``retrain`` sub-command to an ``argparse`` sub-parsers object.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``retrain`` parser; its ``run`` default is :func:`run` (``masc-fast`` calls
        ``args.run(args)``).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["retrain", "--run", "runs/r"])
    >>> args.variant, args.subspaces, args.split_seed, args.run is run
    ('both', 'both', 2345, True)
    """
    from masc_fast.pipeline.experiments.relabel import DEFAULT_SPLIT_SEED, SUBSPACE_SETS
    from masc_fast.pipeline.experiments.retrain import VARIANTS

    parser = commands.add_parser("retrain", help=HELP, description=DESCRIPTION)
    options.add_run_dir(parser)
    parser.add_argument(
        "--variant", choices=(*VARIANTS, _BOTH), default=_BOTH, help="schedule (default both)"
    )
    parser.add_argument(
        "--subspaces",
        choices=(*SUBSPACE_SETS, _BOTH),
        default=_BOTH,
        help="relabels from corrupted- or true-label subspaces (default both)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=DEFAULT_SPLIT_SEED,
        help=f"random_state of the 80/20 test split (default {DEFAULT_SPLIT_SEED}, the authors')",
    )
    options.add_variance(parser)
    options.add_device(parser)
    parser.add_argument(
        "--out", type=Path, help="CSV of the result rows (default RUN/retrain/results.csv)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue killed retrains, reuse finished ones"
    )
    options.add_no_progress(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Retrain, write the rows atomically, print one summary line per retrain; returns 0.

    Raises
    ------
    FileNotFoundError, FileExistsError, ValueError
        From :func:`masc_fast.pipeline.experiments.retrain.retrain_run` (missing run, used work directory without
        ``--resume``, settings that differ from a resumed retrain's).
    """
    from masc_fast.pipeline.experiments.relabel import SUBSPACE_SETS
    from masc_fast.pipeline.experiments.retrain import VARIANTS, retrain_run
    from masc_fast.pipeline.ranks import is_main

    rows = retrain_run(
        args.run_dir,
        variants=tuple(VARIANTS) if args.variant == _BOTH else (args.variant,),
        subspaces=SUBSPACE_SETS if args.subspaces == _BOTH else (args.subspaces,),
        split_seed=args.split_seed,
        variance=args.variance,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(summary_table(rows).to_string(index=False))
    if is_main():  # under torchrun rank 0 writes
        options.write_rows(rows, args.out or args.run_dir / "retrain" / "results.csv")
    return 0


def summary_table(rows):
    """One line per (experiment, subspaces): layer, epochs, accuracies before/after, analysis.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of :func:`masc_fast.pipeline.experiments.retrain.retrain_run`.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    lines = []
    for (experiment, subspaces), group in rows.groupby(["experiment", "subspaces"], sort=False):
        accuracy = group[group["metric"] == "accuracy"]
        last = int(accuracy["epoch"].max())

        def value(split, epoch, frame=accuracy):
            match = frame[(frame["split"] == split) & (frame["epoch"] == epoch)]
            return float(match["value"].iloc[0])

        metric = group.set_index("metric")["value"]
        lines.append(
            {
                "experiment": experiment,
                "subspaces": subspaces,
                "layer": group["layer"].iloc[0],
                "layer test20": metric["best_layer_test20"],
                "epochs": last,
                "test80 before": value("test80", 0),
                "test80 after": value("test80", last),
                "test20 after": value("test20", last),
                "wrong corrected %": metric["wrong_corrected_pct"],
                "correct broken %": metric["correct_broken_pct"],
                "wrong reduction": metric["wrong_reduction"],
            }
        )
    return pd.DataFrame(lines)
