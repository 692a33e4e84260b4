"""Training runs: recipes, run directories, checkpoints, the one resumable epoch loop.

:func:`train_run` trains a :class:`RunConfig` into a run directory (resumable);
:func:`train_until` is the same loop in memory, for tests and small experiments.
"""

from masc_fast.pipeline.runs.config import RunConfig, RunSummary
from masc_fast.pipeline.runs.train import train_run
from masc_fast.pipeline.runs.training import make_optimizer, train_until

__all__ = ["RunConfig", "RunSummary", "make_optimizer", "train_run", "train_until"]
