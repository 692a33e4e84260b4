"""``masc-fast``: the command line, one module per command (:mod:`masc_fast.cli.main` wires them).

Shared options are defined once in :mod:`masc_fast.cli.options`. The CLI drives the pipeline
(:mod:`masc_fast.pipeline`); nothing in the engine imports it.
"""

from masc_fast.cli.main import main

__all__ = ["main"]
