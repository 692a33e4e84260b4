"""``masc-fast train``: one training run with the paper's recipe into a run directory."""

from __future__ import annotations

import argparse
import logging

from masc_fast.cli import options

HELP = "train a model on a dataset with corrupted labels (paper recipes, resumable)"
DESCRIPTION = (
    "Train MODEL on DATASET with a fraction P of the training labels redrawn at random, "
    "using the paper's recipe (SPEC §4) unless overridden. Writes config.json, "
    "labels.npz, metrics.csv (one row per epoch), checkpoints/ and summary.json under "
    "--out; --resume continues a killed run."
)

__all__ = ["register", "run"]

logger = logging.getLogger(__name__)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"must be a fraction in (0, 1] (99.9 % is 0.999), got {text}"
        )
    return value


def register(commands) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an ``argparse`` subparsers object.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        What ``parser.add_subparsers()`` returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``train`` parser; its ``run`` default is :func:`run` (``masc-fast`` calls
        ``args.run(args)``, as for its other commands).

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> _ = register(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["train", "--model", "mlp", "--dataset", "digits", "--out", "r"])
    >>> args.p, args.run is run
    (0.0, True)
    """
    from masc_fast.data.randomization import RANDOMIZATIONS
    from masc_fast.models import MODEL_NAMES
    from masc_fast.pipeline.runs.config import NOISE_RECIPES
    from masc_fast.pipeline.runs.recipes import OPTIMIZERS

    parser = commands.add_parser("train", help=HELP, description=DESCRIPTION)
    parser.add_argument("--model", required=True, choices=MODEL_NAMES)
    parser.add_argument("--dataset", required=True, help="mnist, cifar10, digits, ...")
    parser.add_argument(
        "--p",
        type=float,
        help="label corruption degree in [0, 1] (default 0; 1 with --randomize random-labels)",
    )
    parser.add_argument("--seed", type=int, default=0, help="run seed (init, shuffle, noise)")
    parser.add_argument(
        "--noise-recipe",
        choices=NOISE_RECIPES,
        default="seeded",
        help="'seeded': noise from --seed (independent runs); 'paper': the authors' labels",
    )
    parser.add_argument(
        "--no-shuffle",
        action="store_true",
        help="keep the training set in dataset order every epoch, as the authors did",
    )
    parser.add_argument(
        "--randomize",
        choices=("none", *RANDOMIZATIONS),
        default="none",
        help="one of Zhang et al.'s randomization tests (masc_fast.data.randomization): true, "
        "partial (needs --p), random-labels, shuffled-pixels, random-pixels, gaussian; 'none' "
        "(default): the inputs as they are, labels corrupted at --p by --noise-recipe",
    )
    parser.add_argument(
        "--memorization",
        action="store_true",
        help="record Arpit et al.'s per-epoch measures (learnability, loss-sensitivity, "
        "critical samples) in RUN/memorization/",
    )
    parser.add_argument(
        "--memorization-examples",
        type=int,
        default=1000,
        help="training examples they measure (the first N; default 1000)",
    )
    parser.add_argument(
        "--regularization",
        default="none",
        help="Arpit et al.'s regularisers, '+'-joined: dropout=P (MLPs), input_noise=S, "
        "weight_decay=W; e.g. 'dropout=0.5+weight_decay=0.0005' (default none)",
    )
    parser.add_argument(
        "--train-examples",
        type=int,
        help="train on the first N training examples only (the same for every seed; the "
        "test split stays whole)",
    )
    parser.add_argument(
        "--csr-radius",
        type=float,
        default=0.1,
        help="l-infinity radius of the critical-sample search, in input units (default 0.1)",
    )
    options.add_data_root(parser)
    options.add_download(parser)
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out (or return it if done)"
    )
    parser.add_argument("--max-epochs", type=int, help="epoch cap (recipe: 500)")
    parser.add_argument("--lr", type=float, help="learning rate (recipe's by default)")
    parser.add_argument("--momentum", type=float, help="SGD momentum (recipe: 0.9)")
    parser.add_argument(
        "--lr-decay", type=float, help="learning rate factor per epoch (recipe's by default)"
    )
    parser.add_argument("--batch-size", type=int, help="training batch size")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer")
    parser.add_argument(
        "--target-accuracy",
        type=_fraction,
        help="stop when the running train accuracy reaches this fraction",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=10, help="keep a checkpoint every N epochs"
    )
    options.add_device(parser)
    parser.add_argument("--compile", action="store_true", help="train through torch.compile")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    options.add_no_progress(parser)
    options.add_lock_wait(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``masc-fast train`` for parsed ``args``; prints a one-line summary, returns 0.

    Raises
    ------
    ValueError, FileExistsError, FileNotFoundError
        From :class:`~masc_fast.pipeline.runs.config.RunConfig` or :func:`~masc_fast.pipeline.runs.train.train_run`
        (bad option values, a used run directory without ``--resume``, missing data).
    """
    from masc_fast.pipeline.folder_lock import FolderLock
    from masc_fast.pipeline.runs.train import RunConfig, train_run

    p = args.p if args.p is not None else float(args.randomize == "random-labels")
    config = RunConfig(
        model=args.model,
        dataset=args.dataset,
        p=p,
        seed=args.seed,
        noise_recipe=args.noise_recipe,
        shuffle=not args.no_shuffle,
        randomize=args.randomize,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        lr_decay=args.lr_decay,
        batch_size=args.batch_size,
        target_accuracy=args.target_accuracy,
        max_epochs=args.max_epochs,
        checkpoint_every=args.checkpoint_every,
        data_root=args.data_root,
        download=args.download,
        device=args.device,
        compile=args.compile,
        amp=args.amp,
        memorization=args.memorization,
        memorization_examples=args.memorization_examples,
        csr_radius=args.csr_radius,
        regularization=args.regularization,
        train_examples=args.train_examples,
    )
    with FolderLock(args.out, "masc-fast train", wait=args.wait):
        summary = train_run(config, args.out, resume=args.resume, progress=not args.no_progress)
    outcome = "reached the target" if summary.reached_target else "stopped at the epoch cap"
    print(
        f"{config.model}/{config.dataset} p={config.p:g} seed={config.seed}: {outcome} after "
        f"{summary.epochs} epoch(s); train {summary.final_train_accuracy:.4f}, "
        f"test {summary.final_test_accuracy:.4f}, best test {summary.best_test_accuracy:.4f} "
        f"at epoch {summary.best_epoch}; {summary.seconds:.1f} s on {summary.device} -> {args.out}"
    )
    return 0
