"""Small datasets that need no download, and the loader format the probe consumes.

* :func:`load_digits_split` — scikit-learn's 8x8 digits (1,797 images, bundled with
  scikit-learn), scaled to [-1, 1] like the authors' ``Normalize(0.5, 0.5)``.
* :func:`load_mnist1d` — MNIST-1D generated locally by the ``mnist1d`` package (never its
  download path).
* :func:`labelled_loader` — a ``DataLoader`` yielding ``(x, y)`` or ``(x, y, y_true)``.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)

__all__ = ["load_digits_split", "load_mnist1d", "labelled_loader"]

logger = logging.getLogger(__name__)

# Largest pixel value in scikit-learn's digits (4x4 blocks of a 32x32 bitmap are counted).
_DIGITS_MAX = 16.0


def _as_tensor(values, dtype: torch.dtype, name: str) -> torch.Tensor:
    """``values`` (array or tensor) as a tensor of ``dtype``, keeping its device."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(dtype)
    try:
        return torch.as_tensor(np.asarray(values), dtype=dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} must be an array or a tensor, got {type(values).__name__}"
        ) from error


def load_digits_split(*, test_size: float = 0.25, seed: int = 0):
    """scikit-learn's digits as a stratified train/test split, pixels scaled to [-1, 1].

    Pixels ``v`` in ``{0, ..., 16}`` become ``v / 8 - 1``, the analogue of the authors'
    ``ToTensor()`` + ``Normalize(0.5, 0.5)`` on MNIST.

    Parameters
    ----------
    test_size : float, default 0.25
        Fraction of the 1,797 images put in the test split (stratified by class).
    seed : int, default 0
        ``random_state`` of :func:`sklearn.model_selection.train_test_split`.

    Returns
    -------
    x_train : torch.Tensor, float32, shape (n_train, 64), CPU
    y_train : torch.Tensor, int64, shape (n_train,), values in [0, 10)
    x_test : torch.Tensor, float32, shape (n_test, 64), CPU
    y_test : torch.Tensor, int64, shape (n_test,)
        With the defaults ``n_train = 1347`` and ``n_test = 450``.

    Notes
    -----
    The data ships with scikit-learn, so this works offline and takes milliseconds.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_digits_split()
    >>> tuple(x_train.shape), tuple(x_test.shape)
    ((1347, 64), (450, 64))
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = digits.data.astype(np.float32) / (_DIGITS_MAX / 2) - 1.0
    x_train, x_test, y_train, y_test = train_test_split(
        pixels, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )
    return (
        torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)),
        torch.from_numpy(np.asarray(y_train, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32)),
        torch.from_numpy(np.asarray(y_test, dtype=np.int64)),
    )


def load_mnist1d(*, seed: int = 0):
    """MNIST-1D, generated locally with the ``mnist1d`` package's default recipe.

    10 classes of 1-D signals of length 40 built from digit-shaped templates by padding,
    shear, translation and correlated plus i.i.d. noise; 5,000 samples, split 4,000 / 1,000 in
    generation order, then standardised over the whole set (zero mean, unit standard
    deviation), as the package does.

    Parameters
    ----------
    seed : int, default 0
        Generator seed (``args.seed`` of ``mnist1d``). ``seed=42`` gives the package's default
        dataset.

    Returns
    -------
    x_train : torch.Tensor, float32, shape (4000, 40), CPU
    y_train : torch.Tensor, int64, shape (4000,), values in [0, 10)
    x_test : torch.Tensor, float32, shape (1000, 40), CPU
    y_test : torch.Tensor, int64, shape (1000,)

    Raises
    ------
    ImportError
        If the ``mnist1d`` package is not installed.

    Notes
    -----
    Generation takes about 1.5 s on one CPU core, plus about 1 s to import ``mnist1d`` (which
    imports matplotlib) the first time. ``mnist1d`` seeds Python's and NumPy's global
    generators; their states are saved and restored around the call, so the caller's random
    streams are unaffected. Nothing is downloaded and nothing is written to disk.

    Examples
    --------
    >>> x_train, y_train, x_test, y_test = load_mnist1d()  # doctest: +SKIP
    >>> tuple(x_train.shape)  # doctest: +SKIP
    (4000, 40)
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError(
            "load_mnist1d needs the 'mnist1d' package: pip install mnist1d "
            "(or pip install 'masc_fast[test]')"
        ) from error

    args = get_dataset_args()
    args.seed = int(seed)
    # mnist1d seeds the global generators (random.seed, np.random.seed); hand them back as found.
    numpy_state = np.random.get_state()  # noqa: NPY002
    python_state = random.getstate()
    try:
        # make_dataset generates in memory; get_dataset would try the download URL first.
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)  # noqa: NPY002
        random.setstate(python_state)
    logger.debug("generated MNIST-1D with seed %d", seed)
    return (
        torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32)),
        torch.from_numpy(np.asarray(data["y"], dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(data["x_test"], dtype=np.float32)),
        torch.from_numpy(np.asarray(data["y_test"], dtype=np.int64)),
    )


def labelled_loader(
    x,
    y,
    y_true=None,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A ``DataLoader`` over in-memory data in the batch format :mod:`masc_fast.probe` reads.

    Parameters
    ----------
    x : torch.Tensor or array_like, shape (n, ...)
        Inputs; cast to float32.
    y : torch.Tensor or array_like of int, shape (n,)
        Labels used for training and for fitting subspaces (possibly corrupted); cast to
        int64.
    y_true : torch.Tensor or array_like of int, shape (n,), optional
        Clean labels, carried along so results can be scored against them too; cast to int64.
    batch_size : int
        Samples per batch (the last batch may be smaller).
    shuffle : bool, default False
        Reshuffle every epoch. The authors trained unshuffled (SPEC §2.1), hence the default.
    seed : int, default 0
        Seed of the loader's own ``torch.Generator`` when shuffling, so the order is
        reproducible and the global torch generator is not consumed.

    Returns
    -------
    torch.utils.data.DataLoader
        Yields batches ``[x, y]`` or, when ``y_true`` is given, ``[x, y, y_true]`` (lists,
        like any ``DataLoader`` over a ``TensorDataset``), on the device the tensors were on
        (CPU for arrays).

    Raises
    ------
    ValueError
        If the lengths of ``x``, ``y`` and ``y_true`` differ, a label array is not 1-D, or
        ``batch_size < 1``.

    Examples
    --------
    >>> import torch
    >>> loader = labelled_loader(torch.randn(10, 4), torch.arange(10) % 2, batch_size=4)
    >>> [tuple(xb.shape) for xb, yb in loader]
    [(4, 4), (4, 4), (2, 4)]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    tensors = [_as_tensor(x, torch.float32, "x"), _as_tensor(y, torch.int64, "y")]
    names = ["x", "y"]
    if y_true is not None:
        tensors.append(_as_tensor(y_true, torch.int64, "y_true"))
        names.append("y_true")
    for name, tensor in zip(names[1:], tensors[1:]):
        if tensor.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(tensor.shape)}")
    if tensors[0].ndim == 0:
        raise ValueError("x must have a leading sample dimension, got a scalar")
    lengths = {name: int(tensor.shape[0]) for name, tensor in zip(names, tensors)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"x, y (and y_true) must have the same length, got {lengths}")

    dataset = TensorDataset(*tensors)
    if shuffle:
        order = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        order = SequentialSampler(dataset)
    # Index whole batches at once (TensorDataset accepts a list of indices) instead of
    # collating batch_size single samples: same batches, far less Python per batch.
    return DataLoader(
        dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None
    )
