"""``masc-fast``: the parser; each command lives in its own module of :mod:`masc_fast.cli`.

``demo`` (:mod:`~masc_fast.cli.demo`), ``env`` (:mod:`~masc_fast.cli.env`), ``train``
(:mod:`~masc_fast.cli.train`), ``probe`` (:mod:`~masc_fast.cli.probe`), ``retrain``
(:mod:`~masc_fast.cli.retrain`), ``baselines`` (:mod:`~masc_fast.cli.baselines`), ``sweep``
(:mod:`~masc_fast.cli.sweep`), ``verify-reference`` (:mod:`~masc_fast.cli.verify_reference`)
and ``report`` (:mod:`~masc_fast.cli.report`). Each module has ``register(commands)``, which
adds its sub-parser with ``run`` as the default, and ``run(args) -> exit status``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from masc_fast.cli import (
    baselines,
    demo,
    env,
    launch,
    probe,
    report,
    retrain,
    sweep,
    train,
    verify_reference,
)

__all__ = ["COMMANDS", "main"]

#: The command modules, in the order ``masc-fast --help`` lists them.
COMMANDS = (demo, env, train, probe, retrain, baselines, sweep, verify_reference, report)


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    parser = argparse.ArgumentParser(
        prog="masc-fast",
        description="MASC probes of deep networks and the paper's experiments around them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before it stops with an "
        "error (default 600)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from masc_fast.pipeline.folder_lock import FolderBusyError

    joined = launch.join_group(args.command, getattr(args, "device", None), args.dist_timeout)
    try:
        with launch.quiet_unless_main():
            return args.run(args)
    except FolderBusyError as error:  # another command writes the same folder
        print(f"error: {error}", file=sys.stderr)
        return 3
    finally:
        if joined:
            launch.leave_group()


if __name__ == "__main__":
    sys.exit(main())
