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
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from masc_fast.pipeline.folder_lock import FolderBusyError

    try:
        return args.run(args)
    except FolderBusyError as error:  # another command writes the same folder
        print(f"error: {error}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
