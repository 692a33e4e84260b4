"""``probe(model, loader)``: fit every class subspace of every layer in one streamed pass.

Pass 1 (:mod:`masc_fast.probing.fit_pass`) runs the model once over the training data;
forward hooks feed each layer's activations into per-layer :class:`GramAccumulator` s, one per
label set ("corrupted" = the labels the model was trained on, "true" when batches carry them
too), or into disk shards for layers too wide for their Grams. After the fit, scoring passes
(:mod:`masc_fast.probing.score_pass`) run the training data and each evaluation split through
the model again and score every layer against every fitted set of subspaces.

With ``thresholds`` the subspaces are fitted once, at the largest fractional threshold, and
every threshold is scored in the same passes from prefix sums over the eigen-ordered
components (:mod:`masc_fast.probing.threshold_scoring`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from masc_fast._io import process_alive, remove_stale_temporaries
from masc_fast._validation import check_precision, check_variance
from masc_fast.activations import ActivationTap, model_device, resolve_layers
from masc_fast.backends import select_backend
from masc_fast.probing.activation_store import STORE_DTYPES
from masc_fast.probing.distributed import (
    merge_counters,
    merge_sums,
    on_rank,
    rank_folder,
    resolve_group,
)
from masc_fast.probing.fit_checkpoint import FitCheckpoint
from masc_fast.probing.fit_pass import FitOptions, FitPass
from masc_fast.probing.phases import PhaseClock
from masc_fast.probing.score_pass import EmptySplitWarning, ScorePass
from masc_fast.probing.strategy import default_memory_budget, parse_bytes
from masc_fast.probing.threshold_scoring import check_thresholds, fit_variance
from masc_fast.results import ProbeResult

__all__ = ["probe"]


def announced_rows(loader) -> int | None:
    """Rows a loader says it holds: ``len(loader.dataset)`` (a DataLoader), or the labels of a
    list or tuple of batches; None when it does not say."""
    dataset = getattr(loader, "dataset", None)
    if dataset is not None and hasattr(dataset, "__len__"):
        return len(dataset)
    if isinstance(loader, (list, tuple)):
        try:
            return sum(len(batch[1]) for batch in loader)
        except (TypeError, IndexError, KeyError):
            return None
    return None


def check_loaders(train_loader, eval_loaders) -> None:
    """Refuse loaders the probe cannot use, before any work: a one-shot iterator as the
    training loader (the probe reads the training data twice: fit, then score) and eval
    loaders that are not a mapping of split names."""
    if isinstance(train_loader, Iterator):
        raise TypeError(
            f"train_loader is a one-shot iterator ({type(train_loader).__name__}); the probe "
            "reads the training data twice (fit, then score): pass a DataLoader, a list of "
            "batches or another re-iterable"
        )
    if eval_loaders is None:
        return
    if not isinstance(eval_loaders, Mapping):
        raise TypeError(
            f"eval_loaders must map split names to loaders, e.g. {{'test': test_loader}}; got "
            f"a {type(eval_loaders).__name__}"
        )
    for name in eval_loaders:
        if not isinstance(name, str) or not name:
            raise TypeError(f"eval_loaders keys are split names (non-empty str), got {name!r}")
        if name == "train":
            raise ValueError(
                "eval_loaders may not name a split 'train': the probe scores the training "
                "loader under that name; pick another name"
            )


def probe(
    model: nn.Module,
    train_loader: Iterable,
    eval_loaders: Mapping[str, Iterable] | None = None,
    *,
    layers: Sequence[str] | Mapping[str, str] | None = None,
    num_classes: int | None = None,
    variance: float | None = None,
    thresholds: Sequence[float] | None = None,
    device: torch.device | str | None = None,
    backend: str | None = "auto",
    progress: bool = True,
    accumulate_dtype: torch.dtype = torch.float64,
    eigensolver: str = "auto",
    precision: str = "fp32",
    strategy: str | Mapping[str, str] = "auto",
    memory_budget: int | str | None = None,
    activation_dir: str | Path | None = None,
    store_dtype: torch.dtype = torch.float32,
    resume: bool = False,
    keep_activations: bool = False,
    checkpoint_seconds: float = 60.0,
    distributed: bool | str = "auto",
) -> ProbeResult:
    """Fit MASC subspaces at every probed layer of ``model`` and score them on every split.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier; put in ``eval()`` mode for the probe and restored afterwards.
    train_loader : iterable of (x, y) or (x, y, y_true)
        Training batches. ``y`` are the labels the model was trained on ("corrupted");
        with ``y_true`` the true-label subspaces are fitted in the same pass.
    eval_loaders : mapping of split name to iterable of (x, y_true), optional
        E.g. ``{"test": test_loader}``.
    layers : list of module names, mapping display name → module name, or None
        ``None`` uses ``model.masc_layers`` if present, else the input, every ``nn.Flatten``
        and every ReLU after a Linear. ``"input"`` names the model input.
    num_classes : int, optional
        K; defaults to the width of the model's output.
    variance : float, optional
        Explained-variance threshold t, default 0.99 (a whole number >= 1 = components per
        class).
    thresholds : sequence of float, optional
        Score every threshold in it instead of one ``variance`` (pass one or the other), e.g.
        :data:`masc_fast.probing.threshold_scoring.DEFAULT_THRESHOLDS`. Each class is eigendecomposed
        once, at the largest fraction (or the largest count when there is no fraction;
        :func:`~masc_fast.probing.threshold_scoring.fit_variance`), and all thresholds are scored in
        one pass per split from prefix sums of the projection energies (plain torch on any
        device, whatever ``backend`` says for single-threshold scoring). A whole count larger
        than the components the largest fraction kept for some class raises ``ValueError``
        after the fit. ``ProbeResult.table`` and ``.components`` get one set of rows per
        threshold (column ``variance``).
    device : torch.device or str, optional
        Where the model runs and the subspaces live; defaults to the model's device.
    backend : {"auto", "torch", "cpp", "triton", "reference"}
        Scoring/accumulation backend; the one that ran is in ``ProbeResult.backend``.
    progress : bool, default True
        Show progress bars (rows/s per pass, classes per eigensolve).
    accumulate_dtype : torch.dtype, default torch.float64
        Gram accumulation dtype.
    eigensolver : {"auto", "exact", "partial", "fp32"}
        See :mod:`masc_fast.linalg.eigensolvers` (``gram`` layers).
    precision : {"fp32", "tf32", "tf32x3", "bf16"}
        Products of the scoring GEMM (:data:`masc_fast.backends.PRECISIONS`); the reduced modes
        are for GPUs (triton, torch backends).
    strategy : {"auto", "gram", "stored", "gram_trick", "randomized"} or mapping layer → one
        How each layer is fitted (:mod:`masc_fast.probing.strategy`): streamed Grams, or rows stored on
        disk and fitted per class by the Gram trick or randomized PCA. ``auto`` streams Grams
        where ``K·d²`` fits half of ``memory_budget``. Reported in ``ProbeResult.strategies``.
    memory_budget : int or str, optional
        Bytes (or ``"8GiB"``) the probe's own structures may use; sizes the strategy choice and
        the chunks. Default: half the host memory, or half the free memory of a CUDA device.
    activation_dir : path, optional
        Where stored layers keep their shards and the fit pass its checkpoint. Default: a
        temporary directory (no checkpoint, removed at the end).
    store_dtype : torch.float32 or torch.float16
        dtype of the stored rows.
    resume : bool, default False
        Continue a probe killed in its fit pass from the checkpoint in ``activation_dir``.
    keep_activations : bool, default False
        Keep the shards and checkpoint after a successful probe (else they are removed).
    checkpoint_seconds : float, default 60
        Least time between two checkpoints of the fit pass (with ``activation_dir``).
    distributed : {"auto", True, False}
        Probe across the ranks of the default ``torch.distributed`` process group
        (:mod:`masc_fast.probing.distributed`): each rank's loaders yield that rank's own
        disjoint rows (uneven shards allowed, nothing padded or repeated), the fit state and
        counts are summed over the ranks, and every rank returns the same result, that of one
        process over all the rows. ``"auto"`` does so when a group of more than one rank is
        initialised; ``False`` probes locally inside a group. Each rank keeps its shards and
        checkpoints in ``activation_dir/rank-<r>-of-<n>``; progress bars show on rank 0.

    Returns
    -------
    ProbeResult
        Tidy accuracy table, per-class component counts, captured variance and fit method,
        model accuracies, strategies, time and peak memory per phase, build and inference
        seconds per layer, and the subspaces.

    Raises
    ------
    ValueError
        NaN/Inf activations (naming layer and batch), labels outside ``[0, K)``, malformed
        batches, unknown layer names, a resume whose loader replays other batches, both
        ``variance`` and ``thresholds``, bad thresholds.

    Notes
    -----
    Memory: for ``gram`` layers ``K · d² · 8`` bytes per label set (freed after the fit); for
    stored layers the rows on disk (``N · d · 4`` bytes per layer) and chunks of at most an
    eighth of the budget in memory; plus the fitted float bases. Work: one forward pass to fit,
    one per split to score. Per-layer times (``ProbeResult.layer_seconds``) synchronise a CUDA
    device around each timed layer, which costs a little overlap between layers.

    Example
    -------
    >>> result = masc_fast.probe(model, train_loader, {"test": test_loader})  # doctest: +SKIP
    >>> result.best_layer(split="test")  # doctest: +SKIP
    >>> swept = masc_fast.probe(model, train_loader, thresholds=(0.5, 0.99, 1))  # doctest: +SKIP
    >>> sorted(swept.table["variance"].unique())  # doctest: +SKIP
    [0.5, 0.99, 1.0]
    """
    check_loaders(train_loader, eval_loaders)
    if thresholds is not None:
        if variance is not None:
            raise ValueError(
                f"pass variance={variance!r} or thresholds={thresholds!r}, not both (thresholds "
                f"score every threshold, including a single one)"
            )
        thresholds = check_thresholds(thresholds)
        variance = fit_variance(thresholds)
    variance = check_variance(0.99 if variance is None else variance)
    check_precision(precision)
    if store_dtype not in STORE_DTYPES:
        raise TypeError(f"store_dtype must be torch.float32 or torch.float16, got {store_dtype}")
    device = torch.device(device) if device is not None else model_device(model)
    select_backend(backend, device)  # an explicit backend that cannot run fails here, early
    group = resolve_group(distributed)
    budget = parse_bytes(memory_budget) if memory_budget is not None else None
    budget = budget or default_memory_budget(device)
    if group is not None:  # one plan on every rank: the smallest budget
        budget = group.minimum(budget, "agreeing on the memory budget")
        progress = progress and group.rank == 0
        if activation_dir is not None:
            activation_dir = rank_folder(activation_dir, group)
    store_dir, checkpoint = _store(activation_dir, resume)
    selected = resolve_layers(model, layers)
    was_training = model.training
    model.eval().to(device)
    tap = ActivationTap(model, selected)
    options = FitOptions(
        num_classes=num_classes,
        variance=variance,
        thresholds=thresholds or (),
        device=device,
        backend=backend,
        progress=progress,
        accumulate_dtype=accumulate_dtype,
        eigensolver=eigensolver,
        strategy=strategy,
        memory_budget=budget,
        store_dir=store_dir,
        store_dtype=store_dtype,
        checkpoint=checkpoint,
        resume=resume,
        checkpoint_seconds=checkpoint_seconds,
        total_rows=announced_rows(train_loader),
        group=group,
    )
    succeeded = False
    started = time.perf_counter()
    try:
        with tap.attached(), PhaseClock(device) as clock, on_rank(group):
            fit = FitPass(tap, options, clock).run(train_loader)
            fitted = time.perf_counter()
            scoring = ScorePass(
                tap,
                fit.subspaces,
                thresholds=thresholds,
                backend=backend,
                precision=precision,
                device=device,
            )
            splits = {"train": train_loader, **dict(eval_loaders or {})}
            scored = scoring.run(
                splits, fit.model_counter, clock, progress=progress, warn_empty=group is None
            )
        model_counter = fit.model_counter
        if group is not None:
            scored, model_counter = _sum_over_ranks(group, scored, model_counter, splits)
        succeeded = True
    finally:
        model.train(was_training)
        if activation_dir is None or (succeeded and not keep_activations):
            _remove_store(store_dir, checkpoint, own_dir=activation_dir is None)
    return ProbeResult.from_counts(
        layers=list(selected),
        dims=fit.dims,
        subspaces=fit.subspaces,
        score_counter=scored.counter,
        zero_rows=scored.zero_rows,
        model_counter=model_counter,
        backend=_backends_that_ran(fit.backends, scored.backends),
        variance=variance,
        thresholds=thresholds if thresholds is not None else (variance,),
        cuts=scoring.cuts(variance),
        build_seconds=fit.build_seconds,
        inference_seconds=scored.inference_seconds,
        fit_seconds=fitted - started,
        score_seconds=time.perf_counter() - fitted,
        strategies=fit.strategies,
        phases=clock.table(),
        activation_dir=str(store_dir) if keep_activations else None,
    )


def _sum_over_ranks(group, scored, model_counter, splits):
    """The scoring counts, all-zero rows and model accuracies of every rank, summed; a split
    no rank had rows of is warned about once (rank 0)."""
    from dataclasses import replace

    counter = merge_counters(group, scored.counter, "summing the scoring counts")
    zero_rows = merge_sums(group, scored.zero_rows, "summing the all-zero rows")
    model_counter = merge_counters(group, model_counter, "summing the model's accuracies")
    scored_splits = {key[2] for key in counter.total}
    for split in splits:
        if split not in scored_splits and group.rank == 0:
            warnings.warn(
                f"probe: split {split!r} yielded no rows on any rank; the table has no rows for it",
                EmptySplitWarning,
                stacklevel=3,
            )
    return replace(scored, counter=counter, zero_rows=zero_rows), model_counter


def _store(activation_dir, resume: bool) -> tuple[Path, FitCheckpoint | None]:
    """The shard directory and, for a user's directory, its checkpoint."""
    if activation_dir is None:
        if resume:
            raise ValueError("resume=True needs the activation_dir of the probe to resume")
        _remove_dead_stores(Path(tempfile.gettempdir()))
        return Path(tempfile.mkdtemp(prefix=f"{_STORE_PREFIX}{os.getpid()}_")), None
    directory = Path(activation_dir)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(directory)
    checkpoint = FitCheckpoint(directory)
    checkpoint.remove_orphans()
    if checkpoint.exists() and not resume:
        raise ValueError(
            f"{directory} holds a probe checkpoint; pass resume=True to continue it, or use an "
            f"empty directory"
        )
    return directory, checkpoint


# Default stores are temporary folders named after their process: a probe killed before its
# cleanup leaves one, and the next probe removes those whose process has ended.
_STORE_PREFIX = "masc_fast_store_"


def _remove_dead_stores(folder: Path) -> None:
    for entry in folder.glob(f"{_STORE_PREFIX}*_*"):
        pid = entry.name[len(_STORE_PREFIX) :].split("_", 1)[0]
        if entry.is_dir() and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _remove_store(directory: Path, checkpoint: FitCheckpoint | None, *, own_dir: bool) -> None:
    if own_dir:
        shutil.rmtree(directory, ignore_errors=True)
        return
    if checkpoint is not None:
        checkpoint.remove()
    for layer_dir in directory.iterdir():
        if layer_dir.is_dir() and any(layer_dir.glob("rows_*.bin")):
            shutil.rmtree(layer_dir, ignore_errors=True)


def _backends_that_ran(fit_backends: set[str], score_backends: set[str]) -> str:
    """One name when one backend ran everything, else which ran each op."""
    if len(fit_backends | score_backends) == 1:
        return next(iter(fit_backends | score_backends))
    return (
        f"gram_update={'+'.join(sorted(fit_backends))}, "
        f"subspace_scores={'+'.join(sorted(score_backends))}"
    )
