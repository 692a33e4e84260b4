"""Stronger baselines next to MASC (SPEC §7.2): logistic regression, NCM, k-NN, LDA, QDA.

:func:`run_baselines` fits each probe on a trained run's stored activations and returns rows
of the tidy results table; the probes themselves live in :mod:`.probes` and the activation
files in :mod:`.activations`.
"""

from masc_fast.pipeline.experiments.baselines.activations import split_activations
from masc_fast.pipeline.experiments.baselines.probes import (
    PROBE_NAMES,
    KNeighborsProbe,
    LDAProbe,
    LogisticRegressionProbe,
    NearestClassMeanProbe,
    QDAProbe,
    make_probe,
)
from masc_fast.pipeline.experiments.baselines.run import ALL, EXTRA_COLUMNS, run_baselines

__all__ = [
    "ALL",
    "EXTRA_COLUMNS",
    "PROBE_NAMES",
    "KNeighborsProbe",
    "LDAProbe",
    "LogisticRegressionProbe",
    "NearestClassMeanProbe",
    "QDAProbe",
    "make_probe",
    "run_baselines",
    "split_activations",
]
