"""Check MASC on the raw input layer against the authors' numbers (SPEC §9.2, §9.8).

MASC on the flattened, preprocessed pixels depends only on the dataset, the preprocessing, the
label-corruption recipe and MASC itself, so it must reproduce the authors' values without any
trained network. For each dataset found under a data root and each corruption degree p,
:func:`verify_reference` corrupts the training labels with the authors' recipe (seed 42),
fits the class subspaces on the corrupted labels, scores the true test labels at every
threshold, rounds accuracies to 4 decimals as the authors did, and compares with the packaged
targets (``masc_fast/pipeline/experiments/reference_data/masc_input_layer_model_independent.csv``).

The pass rules and the comparison with the targets are :mod:`masc_fast.pipeline.experiments.reference_targets`
(re-exported here); this module measures.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import torch

from masc_fast._progress import progress_bar
from masc_fast._validation import check_variance
from masc_fast.pipeline.experiments.reference_targets import (
    ACCURACY_TOLERANCE,
    COMPONENTS_PER_CLASS,
    REPORT_COLUMNS,
    TARGET_NAMES,
    compare_to_targets,
    format_report,
    load_targets,
    summary_line,
)
from masc_fast.pipeline.runs.loading import resolve_device

__all__ = [
    "ACCURACY_TOLERANCE",
    "COMPONENTS_PER_CLASS",
    "REPORT_COLUMNS",
    "compare_to_targets",
    "format_report",
    "load_targets",
    "measure_input_layer",
    "summary_line",
    "verify_reference",
]

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.99, 0.75, 0.5, 0.25, 1)
DEFAULT_CORRUPTIONS = (0.0, 0.2, 0.4, 0.6, 0.8)
# The authors' seed: every corrupting dataset called np.random.seed(42) (SPEC §2.1).
_PAPER_SEED = 42
_LAYER = "input"


def _rows(loader, description: str, progress: bool):
    """Flattened float64 rows and labels: the authors projected in float64 (SPEC §5.3)."""
    bar = progress_bar(
        loader, total=len(loader), desc=description, unit="batch", leave=False, disable=not progress
    )
    for x, y in bar:
        yield x.flatten(1).to(torch.float64), y


def measure_input_layer(
    train,
    test,
    p: float,
    thresholds,
    *,
    batch_size: int = 1000,
    device: torch.device | str | None = None,
    backend: str = "auto",
    eigensolver: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """MASC on the flattened inputs of one dataset at one corruption degree, every threshold.

    The training labels are corrupted with the authors' recipe (seed 42, SPEC §2.1); one pass
    over the training set accumulates the class Grams ``X_cᵀ X_c`` of the corrupted labels in
    float64 (:class:`~masc_fast.GramAccumulator`), each threshold fits its subspaces from
    them, and one pass over the test set scores every threshold against the true labels, in
    float64 as the authors did. The "input layer" of a probe is exactly these rows, so this is
    what :func:`masc_fast.probe` with ``layers=["input"]`` computes, without the scoring pass
    over the training set and with one Gram pass for all thresholds.

    Parameters
    ----------
    train, test : masc_fast.data.LabelledSplit
        The dataset's splits (true labels).
    p : float
        Corruption degree of the training labels.
    thresholds : sequence of float
        Variance thresholds in (0, 1), or whole numbers >= 1 (components per class).
    batch_size : int, default 1000
        Rows per batch (does not change any result).
    device : torch.device or str, optional
        Default: CUDA when available, else the CPU.
    backend : str, default "auto"
        Gram and scoring backend (see :mod:`masc_fast.backends`).
    eigensolver : {"auto", "exact", "partial", "fp32"}, default "auto"
        See :mod:`masc_fast.linalg.eigensolvers`.
    progress : bool, default True
        Bars over the training and test batches.

    Returns
    -------
    pandas.DataFrame
        Per threshold: ``dataset, p, threshold, accuracy`` (unrounded, true test labels),
        ``components`` (total over classes), ``num_classes``, ``n_test`` and ``backend``.

    Notes
    -----
    Memory: ``K · d² · 8`` bytes of Grams (755 MB for CIFAR-10) plus the kept bases. Work:
    ``N · d²`` for the Grams, ``K`` eigendecompositions of ``d × d`` per threshold, and
    ``n_test · d · Σ r_k`` per threshold to score.

    Example
    -------
    >>> train, test = load_dataset("mnist", root="data")  # doctest: +SKIP
    >>> measure_input_layer(train, test, 0.2, [0.99, 1])  # doctest: +SKIP
    """
    from masc_fast.accumulator import GramAccumulator
    from masc_fast.data import BatchLoader
    from masc_fast.data.corruption import corrupt_labels

    thresholds = [check_variance(t) for t in thresholds]
    if not thresholds:
        raise ValueError("thresholds must name at least one threshold")
    device = resolve_device(device)
    info = train.info
    corrupted = corrupt_labels(
        train.labels, p, info.num_classes, seed=_PAPER_SEED, strict=info.strict_corruption
    )
    dim = int(np.prod(info.input_shape))
    where = f"{train.name} p={p:g}"
    accumulator = GramAccumulator(
        info.num_classes, dim, device=device, backend=backend, layer=_LAYER
    )
    train_loader = BatchLoader(train, corrupted, batch_size=batch_size, device=device)
    for x, y in _rows(train_loader, f"{where}: Grams", progress):
        accumulator.update(x, y)
    fits = {t: accumulator.fit(t, method=eigensolver) for t in dict.fromkeys(thresholds)}
    gram_backend = accumulator.backend
    del accumulator  # the Grams are the largest thing held; free them before scoring
    correct = dict.fromkeys(fits, 0)
    seen, scored_by = 0, set()
    test_loader = BatchLoader(test, batch_size=batch_size, device=device)
    for x, y in _rows(test_loader, f"{where}: score", progress):
        seen += int(y.numel())
        for t, subspaces in fits.items():
            result = subspaces.score(x, backend=backend)
            scored_by.add(result.backend)
            correct[t] += int((result.pred == y).sum())
    ran = {gram_backend} | scored_by
    backends = (
        gram_backend
        if len(ran) == 1
        else f"gram_update={gram_backend}, subspace_scores={'+'.join(sorted(scored_by))}"
    )
    return pd.DataFrame(
        [
            {
                "dataset": train.name,
                "p": float(p),
                "threshold": t,
                "accuracy": correct[t] / seen,
                "components": int(fits[t].num_components.sum()),
                "num_classes": info.num_classes,
                "n_test": seen,
                "backend": backends,
            }
            for t in thresholds
        ]
    )


def _check_settings(datasets, thresholds, corruptions, targets: pd.DataFrame):
    unknown = [name for name in datasets if name not in TARGET_NAMES]
    if unknown:
        raise ValueError(
            f"no reference numbers for dataset(s) {unknown}; the targets cover {list(TARGET_NAMES)}"
        )
    thresholds = [check_variance(t) for t in thresholds]
    known_t = set(targets["threshold"].round(6))
    bad_t = [t for t in thresholds if round(t, 6) not in known_t]
    if bad_t:
        raise ValueError(f"no reference numbers for threshold(s) {bad_t}; have {sorted(known_t)}")
    corruptions = [float(p) for p in corruptions]
    known_p = set(targets["p"].round(6))
    bad_p = [p for p in corruptions if round(p, 6) not in known_p]
    if bad_p:
        raise ValueError(f"no reference numbers for p = {bad_p}; have {sorted(known_p)}")
    if not (datasets and thresholds and corruptions):
        raise ValueError("datasets, thresholds and corruptions must each name at least one value")
    return list(datasets), thresholds, corruptions


def verify_reference(
    root: str | os.PathLike,
    *,
    datasets=tuple(TARGET_NAMES),
    thresholds=DEFAULT_THRESHOLDS,
    corruptions=DEFAULT_CORRUPTIONS,
    device: torch.device | str | None = None,
    backend: str = "auto",
    eigensolver: str = "auto",
    batch_size: int = 1000,
    download: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run MASC on the raw input layer of every dataset under ``root`` and compare with the paper.

    Parameters
    ----------
    root : path
        Data root as for :func:`masc_fast.data.load_dataset`.
    datasets : sequence of str, default ("mnist", "fashion-mnist", "cifar10")
        Datasets to check; those not found under ``root`` are skipped (logged at WARNING).
    thresholds : sequence of float, default (0.99, 0.75, 0.5, 0.25, 1)
        Variance thresholds; ``1`` = one component per class.
    corruptions : sequence of float, default (0.0, 0.2, 0.4, 0.6, 0.8)
        Corruption degrees p of the training labels.
    device, backend, eigensolver, batch_size, progress
        See :func:`measure_input_layer`; ``progress`` also shows a bar over the settings.
    download : bool, default False
        Download missing datasets into ``root`` first (torchvision's downloader).

    Returns
    -------
    pandas.DataFrame
        The report of :func:`compare_to_targets`, one row per (dataset, p, threshold)
        measured. ``report.attrs["skipped"]`` maps each skipped dataset to the loader's
        message (where it looked); ``report.attrs["root"]`` is the data root.

    Raises
    ------
    ValueError
        A dataset, threshold or p without reference numbers (before anything runs).

    Notes
    -----
    Per dataset and p: one pass over the training set to accumulate ``K`` Gram matrices
    (``K · d² · 8`` bytes: 755 MB for CIFAR-10), ``K`` eigendecompositions of ``d × d``
    (``d`` = 784 or 3,072) per threshold, and one scoring pass over the test set.

    Example
    -------
    >>> report = verify_reference("data", datasets=["mnist"], thresholds=[0.99])  # doctest: +SKIP
    >>> bool(report["ok"].all())  # doctest: +SKIP
    True
    """
    from masc_fast.data import load_dataset

    targets = load_targets()
    datasets, thresholds, corruptions = _check_settings(datasets, thresholds, corruptions, targets)
    loaded, skipped = {}, {}
    for name in datasets:
        try:
            loaded[name] = load_dataset(name, root=root, download=download, progress=progress)
        except FileNotFoundError as error:
            skipped[name] = str(error)
            logger.warning("verify-reference: skipping %s: %s", name, error)
    frames = []
    settings = [(name, p) for name in loaded for p in corruptions]
    for name, p in progress_bar(
        settings, desc="verify-reference", unit="setting", disable=not progress
    ):
        train, test = loaded[name]
        frames.append(
            measure_input_layer(
                train,
                test,
                p,
                thresholds,
                batch_size=batch_size,
                device=device,
                backend=backend,
                eigensolver=eigensolver,
                progress=progress,
            )
        )
    if frames:
        report = compare_to_targets(pd.concat(frames, ignore_index=True), targets)
    else:
        report = pd.DataFrame({name: [] for name in REPORT_COLUMNS})
    report.attrs["skipped"] = skipped
    report.attrs["root"] = str(root)
    return report
