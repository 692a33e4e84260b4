"""Activations of a trained model's probed layers, streamed once to memory-mapped ``.npy`` files.

One forward pass over a split writes every requested layer's activations (flattened, float32)
to ``<folder>/<layer>.npy``. Each file is filled under a temporary name and renamed into place
only when the pass is complete, so a crash never leaves a partial file under a real name; files
already present (with one row per sample of the split) are reused without a forward pass. The
baselines therefore read the same activations however many probes and label sets they fit.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import nn

from masc_fast._io import atomic_path
from masc_fast._progress import progress_bar

__all__ = ["split_activations"]

logger = logging.getLogger(__name__)

# Layer names become file names.
_LAYER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


def _remove_stale_temporaries(folder: Path, names) -> None:
    """Delete what a killed pass left behind: ``.<layer>.<random>.npy`` (see ``atomic_path``)."""
    if not folder.is_dir():
        return
    for name in names:
        for path in folder.glob(f".{glob.escape(name)}.*.npy"):
            logger.info("removing %s, left by an interrupted extraction", path)
            path.unlink(missing_ok=True)


def _reusable(path: Path, n_rows: int) -> np.ndarray | None:
    """The stored activations at ``path`` if they fit a split of ``n_rows`` samples."""
    if not path.is_file():
        return None
    # Copy-on-write map: consumers (torch.from_numpy) get a writable array, the file never changes.
    array = np.load(path, mmap_mode="c")
    if array.ndim == 2 and array.shape[0] == n_rows and array.dtype == np.float32:
        return array
    logger.warning(
        "%s holds %s %s, not (%d, d) float32 activations; recomputing it",
        path,
        array.dtype,
        array.shape,
        n_rows,
    )
    return None


def split_activations(
    model: nn.Module,
    split,
    layers: Mapping[str, str],
    folder: str | os.PathLike,
    *,
    batch_size: int = 512,
    bn_train_mode: bool = False,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Each layer's activations on ``split``, from ``folder`` or from one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model, on the device the forward pass should use. It runs in ``eval()``
        mode under ``torch.no_grad()``; its training flag is restored afterwards.
    split : masc_fast.data.LabelledSplit
        The samples, in dataset order (row i of every file is sample i).
    layers : mapping of str to str
        Display name (the file name, e.g. ``"fc1"``) -> module name in
        ``model.named_modules()``, or ``"input"`` (as ``model.masc_layers``).
    folder : path
        Where the ``<display name>.npy`` files live (created if needed).
    batch_size : int, default 512
        Samples per forward pass (does not change the activations beyond float rounding).
    bn_train_mode : bool, default False
        Normalise every BatchNorm per sample (:func:`masc_fast.models.batchnorm_per_sample`).
        The caller keeps files of the two modes in different folders.
    progress : bool, default True
        A progress bar over the batches of the forward pass.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{display name: float32 array of shape (len(split), d)}`` in the order of ``layers``:
        copy-on-write memory maps of the files (writing to them never changes a file).

    Raises
    ------
    ValueError
        If a display name cannot be a file name, ``layers`` is empty or the split is empty.

    Notes
    -----
    Host memory per batch: the batch's activations of all missing layers; the files take
    ``4 · len(split) · Σ d`` bytes on disk. A file that exists but has the wrong number of
    rows or dtype is recomputed (with a warning in the log); temporary files a killed pass
    left for the layers being extracted are deleted first. Files are matched by name only: a
    folder belongs to one model and checkpoint, and to one extracting process at a time.

    Example
    -------
    >>> acts = split_activations(model, test, model.masc_layers, "work/test")  # doctest: +SKIP
    >>> acts["fc1"].shape  # doctest: +SKIP
    (450, 128)
    """
    from masc_fast.activations import ActivationTap
    from masc_fast.data import BatchLoader
    from masc_fast.models import batchnorm_per_sample

    if not layers:
        raise ValueError("no layers given to extract")
    for display in layers:
        if not isinstance(display, str) or not _LAYER_NAME.match(display):
            raise ValueError(f"layer name {display!r} cannot be used as a file name")
    if len(split) == 0:
        raise ValueError(f"split {split!r} has no samples")
    folder = Path(folder)
    found = {name: _reusable(folder / f"{name}.npy", len(split)) for name in layers}
    missing = {name: layers[name] for name, array in found.items() if array is None}
    if not missing:
        logger.info("reusing the activations of %s in %s", list(layers), folder)
        return found
    _remove_stale_temporaries(folder, missing)
    device = next(iter(model.parameters()), torch.empty(0)).device
    loader = BatchLoader(split, batch_size=batch_size, device=device)
    tap = ActivationTap(model, missing)
    was_training = model.training
    model.eval()
    try:
        with ExitStack() as files:
            # Each file is renamed into place when this block ends without an error.
            temporary = {
                name: files.enter_context(atomic_path(folder / f"{name}.npy")) for name in missing
            }
            written: dict[str, np.ndarray] = {}
            mode = batchnorm_per_sample(model) if bn_train_mode else nullcontext()
            start = 0
            with mode, tap.attached():
                batches = progress_bar(
                    loader,
                    desc=f"activations {split.name} {split.split}",
                    disable=not progress,
                    leave=False,
                )
                for x, _ in batches:
                    _, captured = tap.forward(x)
                    stop = start + len(x)
                    for name, values in captured.items():
                        if name not in written:
                            written[name] = open_memmap(
                                temporary[name],
                                mode="w+",
                                dtype=np.float32,
                                shape=(len(split), values.shape[1]),
                            )
                        written[name][start:stop] = values.to(torch.float32).cpu().numpy()
                    start = stop
            for name in written:
                written[name].flush()
            written.clear()  # unmap before the files are renamed
    finally:
        model.train(was_training)
    logger.info(
        "wrote the activations of %s on %s %s to %s", list(missing), split.name, split.split, folder
    )
    return {name: _reusable(folder / f"{name}.npy", len(split)) for name in layers}
