"""The paper's experiments on trained runs: one module per family, one table of their names.

=====================================================  =======================================
experiments                                            module
=====================================================  =======================================
exp1, exp2, exp3, random-init, early-stop (MASC)       :mod:`~masc_fast.pipeline.experiments.masc`
baselines (LR, NCM, k-NN, LDA, QDA; SPEC §7.2)         :mod:`~masc_fast.pipeline.experiments.baselines`
retrain, retrain-10 (fine-tuning on relabels; SPEC §6)  :mod:`~masc_fast.pipeline.experiments.retrain`
learning-curves (Zhang et al.'s Figure 1)              :mod:`~masc_fast.pipeline.experiments.learning_curves`
dynamics (MASC at every saved checkpoint)              :mod:`~masc_fast.pipeline.experiments.dynamics`
memorization (Arpit et al.'s measures)                 :mod:`~masc_fast.pipeline.experiments.memorization`
the authors' input-layer table (SPEC §9.2)             :mod:`~masc_fast.pipeline.experiments.verify_reference`
=====================================================  =======================================

:func:`run_experiment` runs any name of :data:`EXPERIMENTS` on a run directory and returns tidy
rows; sweeps and ``masc-fast probe`` call it. A new experiment is a function
``(run_dir, experiment, *, p, settings) -> rows`` in its family's module, registered in
:data:`_RUNNERS` below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from masc_fast.pipeline.experiments.masc import MASC_EXPERIMENTS, run_masc_experiment
from masc_fast.pipeline.experiments.settings import ProbeSettings

__all__ = ["EXPERIMENTS", "ProbeSettings", "run_experiment"]


def _baselines(run_dir: Path, experiment: str, *, p, settings: ProbeSettings) -> pd.DataFrame:
    from masc_fast.pipeline.experiments.baselines import run_baselines
    from masc_fast.pipeline.ranks import on_main

    return on_main(  # under torchrun: rank 0 fits them, the others get its rows
        lambda: run_baselines(
            run_dir,
            device=settings.device,
            progress=settings.progress,
            bn_train_mode=settings.bn_train_mode,
        ),
        "the baselines on rank 0",
    )


def _retrain(run_dir: Path, experiment: str, *, p, settings: ProbeSettings) -> pd.DataFrame:
    from masc_fast.pipeline.experiments.retrain import retrain_run

    return retrain_run(
        run_dir,
        variants=(experiment,),
        variance=settings.variance,
        device=settings.device,
        resume=(run_dir / "retrain").exists(),
        progress=settings.progress,
        backend=settings.backend,
        memory_budget=settings.memory_budget,
    )


def _learning_curves(run_dir: Path, experiment: str, *, p, settings) -> pd.DataFrame:
    from masc_fast.pipeline.experiments.learning_curves import learning_curve_rows

    return learning_curve_rows(run_dir)


def _dynamics(run_dir: Path, experiment: str, *, p, settings) -> pd.DataFrame:
    from masc_fast.pipeline.experiments.dynamics import run_dynamics

    return run_dynamics(run_dir, experiment, p=p, settings=settings)


def _memorization(run_dir: Path, experiment: str, *, p, settings) -> pd.DataFrame:
    from masc_fast.pipeline.experiments.memorization import memorization_rows

    return memorization_rows(run_dir)


#: experiment name -> what runs it; the non-MASC ones use the run's own p.
_RUNNERS: dict[str, Callable[..., pd.DataFrame]] = {
    **{name: run_masc_experiment for name in MASC_EXPERIMENTS},
    "baselines": _baselines,
    "retrain": _retrain,
    "retrain-10": _retrain,
    "learning-curves": _learning_curves,
    "dynamics": _dynamics,
    "memorization": _memorization,
}
#: Every experiment a run can get, in the order ``masc-fast probe --help`` lists them.
EXPERIMENTS = tuple(_RUNNERS)


def run_experiment(
    run_dir: str | Path,
    experiment: str,
    *,
    p: float | None = None,
    settings: ProbeSettings | None = None,
) -> pd.DataFrame:
    """One experiment on one training run, as tidy result rows.

    Parameters
    ----------
    run_dir : path
        The training run (for ``exp3``: a run trained at p = 0).
    experiment : str
        One of :data:`EXPERIMENTS`.
    p : float, optional
        ``exp3`` only: the post-hoc corruption degree, drawn with the run's noise recipe and
        seed. Other experiments use the run's own p (an explicit different p is an error).
    settings : ProbeSettings, optional

    Returns
    -------
    pandas.DataFrame
        :data:`masc_fast.pipeline.results_table.RESULT_COLUMNS` plus the experiment's own
        columns (see :func:`masc_fast.pipeline.experiments.masc.run_masc_experiment`, the
        baselines' and the retrain's rows).

    Raises
    ------
    ValueError
        An unknown experiment, or a ``p`` the experiment cannot take.
    """
    from masc_fast.pipeline.runs.loading import load_config

    if experiment not in _RUNNERS:
        raise ValueError(f"unknown experiment {experiment!r}; expected one of {EXPERIMENTS}")
    settings = settings or ProbeSettings()
    run_dir = Path(run_dir)
    if experiment not in MASC_EXPERIMENTS and p is not None:
        own = load_config(run_dir).p
        if float(p) != float(own):
            raise ValueError(f"{experiment} uses the run's own p = {own}, got p = {p}")
    return _RUNNERS[experiment](run_dir, experiment, p=p, settings=settings)
