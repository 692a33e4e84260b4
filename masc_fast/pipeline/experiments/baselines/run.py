"""The stronger baselines of SPEC §7.2 on a trained run, as rows of the tidy results table.

For every probed layer (the paper's layers without the input) and each training label set
(the corrupted labels the model was trained on, then the true labels), each probe is fitted
on the training activations and scored on the test activations against the true test labels.
The activations come from one forward pass per split, stored under the work folder and reused
(:func:`masc_fast.pipeline.experiments.baselines.activations.split_activations`).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from masc_fast._progress import progress_bar
from masc_fast.pipeline.experiments.baselines.activations import split_activations
from masc_fast.pipeline.experiments.baselines.probes import PROBE_NAMES, make_probe
from masc_fast.pipeline.results_table import RESULT_COLUMNS, tidy_rows

__all__ = ["ALL", "EXTRA_COLUMNS", "run_baselines"]

logger = logging.getLogger(__name__)

#: Every probe, in the order the rows come out.
ALL = PROBE_NAMES
#: Columns after :data:`masc_fast.pipeline.results_table.RESULT_COLUMNS` in the rows of a baseline run.
EXTRA_COLUMNS = ("probe", "checkpoint", "epoch", "n", "error", "warning")

_TORCH_PROBES = frozenset({"logistic_regression", "ncm", "knn"})
_LABEL_SETS = ("corrupted", "true")
_CHECKPOINT = "final"


def _check_probes(probes) -> tuple[str, ...]:
    names = (probes,) if isinstance(probes, str) else tuple(probes)
    unknown = [name for name in names if name not in PROBE_NAMES]
    if unknown or not names:
        raise ValueError(f"probes must be a non-empty selection of {PROBE_NAMES}, got {names}")
    return tuple(dict.fromkeys(names))


def _select_layers(model, layers) -> dict[str, str]:
    """Display name -> module name: the paper's layers without the input, or those asked for."""
    from masc_fast.models import INPUT_LAYER

    known = dict(model.masc_layers)
    if layers is None:
        return {name: module for name, module in known.items() if module != INPUT_LAYER}
    names = (layers,) if isinstance(layers, str) else tuple(layers)
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(
            f"layers {list(unknown) or names} are not probed layers of this "
            f"{type(model).__name__}; it has {list(known)}"
        )
    return {name: known[name] for name in dict.fromkeys(names)}


def _timed(function, device: torch.device):
    """``(function(), seconds)``, with the GPU's queued work inside the measured interval."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def _warning_summary(caught) -> str:
    """``"UserWarning x2: Variables are collinear."`` for each distinct warning, ``; ``-joined."""
    counts = Counter((w.category.__name__, str(w.message)) for w in caught)
    return "; ".join(f"{kind} x{count}: {message}" for (kind, message), count in counts.items())


def _fit_and_score(name: str, train, labels, test, truth: np.ndarray, device) -> dict:
    """Fit probe ``name``, predict the test rows; accuracy, times, error and warnings.

    Warnings are recorded, not raised. An exception from a scikit-learn probe (a singular
    covariance in QDA, memory on a wide layer) is recorded as the error with NaN values; one
    from a torch probe is a bug and propagates.
    """
    probe = make_probe(name)
    outcome = {"accuracy": np.nan, "train_seconds": np.nan, "inference_seconds": np.nan}
    outcome["error"] = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _, outcome["train_seconds"] = _timed(lambda: probe.fit(train, labels), device)
            predicted, outcome["inference_seconds"] = _timed(lambda: probe.predict(test), device)
        except Exception as error:  # noqa: BLE001 - recorded in the row, see the docstring
            if name in _TORCH_PROBES:
                raise
            outcome.update(train_seconds=np.nan, inference_seconds=np.nan)
            outcome["error"] = f"{type(error).__name__}: {error}"
        else:
            if isinstance(predicted, torch.Tensor):
                predicted = predicted.cpu().numpy()
            outcome["accuracy"] = float(np.mean(predicted == truth))
    outcome["warning"] = _warning_summary(caught)
    return outcome


def _rows(layer: str, subspaces: str, probe: str, outcome: dict, n_test: int) -> list[dict]:
    """The accuracy, train-time and inference-time rows of one fitted probe."""
    rows = []
    for metric in ("accuracy", "train_seconds", "inference_seconds"):
        is_accuracy = metric == "accuracy"
        rows.append(
            {
                "layer": layer,
                "subspaces": subspaces,
                "split": "test",
                "labels": "true" if is_accuracy else "",
                "metric": metric,
                "value": outcome[metric],
                "probe": probe,
                "n": float(n_test) if is_accuracy else np.nan,
                "error": outcome["error"],
                "warning": outcome["warning"],
            }
        )
    return rows


def _layer_features(train: np.ndarray, test: np.ndarray, probes, device):
    """The layer's rows as torch tensors on ``device`` and float64 arrays, as the probes need."""
    tensors = arrays = None
    if any(name in _TORCH_PROBES for name in probes):
        tensors = (torch.from_numpy(train).to(device), torch.from_numpy(test).to(device))
    if any(name not in _TORCH_PROBES for name in probes):
        arrays = (np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64))
    return tensors, arrays


def run_baselines(
    run_dir: str | os.PathLike,
    *,
    probes: Sequence[str] = ALL,
    layers: Sequence[str] | None = None,
    device: torch.device | str | None = None,
    work_dir: str | os.PathLike | None = None,
    progress: bool = True,
    batch_size: int = 512,
    bn_train_mode: bool = False,
) -> pd.DataFrame:
    """Logistic regression, NCM, k-NN, LDA and QDA probes on a run's layers (SPEC §7.2).

    Parameters
    ----------
    run_dir : path
        A finished training run (:func:`masc_fast.pipeline.runs.train.train_run`); its ``final``
        checkpoint is probed.
    probes : sequence of str, default all
        Names from :data:`masc_fast.pipeline.experiments.baselines.PROBE_NAMES`.
    layers : sequence of str, optional
        Display names from ``model.masc_layers``; default all of them except ``"input"``.
    device : torch.device or str, optional
        Where the forward pass and the torch probes run; default CUDA when present.
        LDA and QDA always run on the CPU (scikit-learn, float64).
    work_dir : path, optional
        Folder of the stored activations (``train/<layer>.npy``, ``test/<layer>.npy``);
        default ``run_dir/activations/final`` (``final-bn-per-sample`` with ``bn_train_mode``).
    progress : bool, default True
        Progress bars.
    batch_size : int, default 512
        Rows per forward pass.
    bn_train_mode : bool, default False
        Per-sample BatchNorm during extraction, as the authors' ResNet-18 dumps
        (:func:`masc_fast.models.batchnorm_per_sample`); models without BatchNorm ignore it.

    Returns
    -------
    pandas.DataFrame
        :data:`~masc_fast.pipeline.results_table.RESULT_COLUMNS` then :data:`EXTRA_COLUMNS`; three rows
        per (layer, subspaces, probe), in that nesting order, all with ``experiment="baselines"``,
        ``split="test"`` and ``subspaces`` = the training labels used (``corrupted``/``true``):
        ``metric="accuracy"`` (fraction of test rows whose prediction equals the true label,
        ``labels="true"``, ``n`` = number of test rows), ``"train_seconds"`` (the fit) and
        ``"inference_seconds"`` (predicting the test rows) with ``labels=""``. ``error`` holds
        ``"<Exception>: message"`` when a scikit-learn probe failed (its values are then NaN),
        ``warning`` the warnings its fit and predict raised, with counts; both ``""`` otherwise.

    Raises
    ------
    ValueError
        For an unknown probe or layer.
    FileNotFoundError
        If the run or its final checkpoint is missing.

    Notes
    -----
    Times exclude moving or converting the activations (to the device, or to float64 for
    LDA/QDA); on CUDA they include the queued GPU work. One layer's train and test
    activations are held at a time, on ``device`` and (for LDA/QDA) as float64 on the host.

    Example
    -------
    >>> rows = run_baselines("runs/mlp-digits-p0.4-s0", probes=["ncm", "knn"])  # doctest: +SKIP
    >>> rows.query("metric == 'accuracy'").pivot_table("value", "layer", ["probe", "subspaces"])
    ... # doctest: +SKIP
    """
    from masc_fast.pipeline.runs.loading import checkpoint_epoch, load_run, resolve_device

    probes = _check_probes(probes)
    device = resolve_device(device)
    run_dir = Path(run_dir)
    config, model, train, test, true_labels, corrupted_labels = load_run(
        run_dir, _CHECKPOINT, device, progress=progress
    )
    selected = _select_layers(model, layers)
    if work_dir is None:
        work_dir = (
            run_dir
            / "activations"
            / (f"{_CHECKPOINT}-bn-per-sample" if bn_train_mode else _CHECKPOINT)
        )
    work_dir = Path(work_dir)
    extract = {"batch_size": batch_size, "bn_train_mode": bn_train_mode, "progress": progress}
    train_rows = split_activations(model, train, selected, work_dir / "train", **extract)
    test_rows = split_activations(model, test, selected, work_dir / "test", **extract)
    del model  # the activations are all that is needed from here on
    label_sets = {"corrupted": corrupted_labels, "true": true_labels}
    truth = test.labels.numpy()
    rows = []
    bar = progress_bar(
        total=len(selected) * len(_LABEL_SETS) * len(probes), desc="baselines", disable=not progress
    )
    with bar:
        for layer in selected:
            tensors, arrays = _layer_features(train_rows[layer], test_rows[layer], probes, device)
            for subspaces in _LABEL_SETS:
                for name in probes:
                    bar.set_postfix_str(f"{layer} {subspaces} {name}")
                    if name in _TORCH_PROBES:
                        labels = label_sets[subspaces].to(device)
                        outcome = _fit_and_score(
                            name, tensors[0], labels, tensors[1], truth, device
                        )
                    else:
                        labels = label_sets[subspaces].numpy()
                        outcome = _fit_and_score(name, arrays[0], labels, arrays[1], truth, device)
                    logger.info(
                        "%s %s %s: accuracy %.4f, fit %.2f s%s",
                        layer,
                        subspaces,
                        name,
                        outcome["accuracy"],
                        outcome["train_seconds"],
                        f" ({outcome['error']})" if outcome["error"] else "",
                    )
                    rows += _rows(layer, subspaces, name, outcome, len(truth))
                    bar.update()
            del tensors, arrays
    frame = tidy_rows(
        pd.DataFrame(rows),
        **config.run_columns(),
        experiment="baselines",
        checkpoint=_CHECKPOINT,
        epoch=checkpoint_epoch(run_dir, _CHECKPOINT),
    )
    extra = [name for name in ("randomize",) if name in frame]
    return frame[list(RESULT_COLUMNS) + extra + list(EXTRA_COLUMNS)]
