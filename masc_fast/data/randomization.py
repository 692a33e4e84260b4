"""Zhang et al.'s randomization tests (ICLR 2017, §2): what a network can fit.

:func:`randomize` applies one test to one split. The modes and what each split gets:

=================  ===================================================  =====================
mode               training split                                       test split
=================  ===================================================  =====================
true               as is                                                as is
partial            each label, with probability p, replaced by a        as is (true labels)
                   class drawn uniformly (possibly the same one: the
                   expected changed fraction is p − p/K)
random-labels      every label replaced by a uniform class (p = 1)      as is (true labels)
shuffled-pixels    one permutation of the pixels, the same for every    the same permutation
                   image; it depends on ``seed`` and the image shape
random-pixels      an independent permutation of each image's pixels    as is
gaussian           each image drawn from a Gaussian with the split's    as is
                   per-channel mean and standard deviation
=================  ===================================================  =====================

Zhang et al. state that the shuffled-pixels permutation is applied to the test set too, and
define random pixels and Gaussian images for the training set only, so their test set stays
real: a model trained on them has nothing to generalise, and its test accuracy shows it.
Labels are never changed in the input modes, and inputs never in the label modes.

A *pixel* is a spatial position: for images ``(N, C, H, W)`` the permutations move the C
channel values of a position together; for vectors ``(N, d)`` every feature is a pixel. The
Gaussian's moments are per channel for images (as public reproductions do, Zhang et al. say
only "mean and variance"; ``RANDOMIZATION.md`` marks it unconfirmed) and over all values for
vectors. ``uint8`` images come back ``uint8``: the Gaussian draws are rounded and clipped to
[0, 255]. NumPy in, NumPy out; torch in, torch out (on the CPU).
"""

from __future__ import annotations

import numpy as np
import torch

from masc_fast.data.corruption import noisy_labels

__all__ = [
    "INPUT_MODES",
    "LABEL_MODES",
    "RANDOMIZATIONS",
    "check_mode",
    "randomize",
    "randomize_split",
]

LABEL_MODES = ("partial", "random-labels")
INPUT_MODES = ("shuffled-pixels", "random-pixels", "gaussian")
RANDOMIZATIONS = ("true", *LABEL_MODES, *INPUT_MODES)
_SPLITS = ("train", "test")
# Separate random streams per input mode, so one seed gives unrelated draws in each.
_STREAM = {"shuffled-pixels": 1, "random-pixels": 2, "gaussian": 3}
_CHUNK = 4096  # images per block of per-image permutations (bounds the argsort's memory)


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`RANDOMIZATIONS`, else a ``ValueError`` listing them."""
    if mode not in RANDOMIZATIONS:
        raise ValueError(f"randomization must be one of {', '.join(RANDOMIZATIONS)}, got {mode!r}")
    return mode


def _generator(seed: int, mode: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[mode]])


def _pixels(x: np.ndarray) -> tuple[int, int]:
    """(channels, pixels per image) of a batch of images (N, C, H, W) or vectors."""
    if x.ndim == 4:
        return x.shape[1], x.shape[2] * x.shape[3]
    if x.ndim < 2:
        raise ValueError(f"x must hold one sample per row, (N, d) or (N, C, H, W); got {x.shape}")
    return 1, int(np.prod(x.shape[1:]))


def _as_channels(x: np.ndarray) -> np.ndarray:
    """A (N, C, P) view: channel, then pixel."""
    channels, pixels = _pixels(x)
    return x.reshape(x.shape[0], channels, pixels)


def _shuffled_pixels(x: np.ndarray, seed: int) -> np.ndarray:
    order = _generator(seed, "shuffled-pixels").permutation(_pixels(x)[1])
    return _as_channels(x)[:, :, order].reshape(x.shape)


def _random_pixels(x: np.ndarray, seed: int) -> np.ndarray:
    rng = _generator(seed, "random-pixels")
    flat = _as_channels(x)
    out = np.empty_like(flat)
    for start in range(0, flat.shape[0], _CHUNK):
        block = flat[start : start + _CHUNK]
        orders = np.argsort(rng.random((block.shape[0], block.shape[2])), axis=1)
        out[start : start + _CHUNK] = np.take_along_axis(block, orders[:, None, :], axis=2)
    return out.reshape(x.shape)


def _gaussian(x: np.ndarray, seed: int) -> np.ndarray:
    flat = _as_channels(x).astype(np.float64)
    mean = flat.mean(axis=(0, 2), keepdims=True)
    std = flat.std(axis=(0, 2), keepdims=True)
    draws = _generator(seed, "gaussian").standard_normal(flat.shape) * std + mean
    if x.dtype == np.uint8:
        return np.clip(np.rint(draws), 0, 255).astype(np.uint8).reshape(x.shape)
    return draws.astype(x.dtype).reshape(x.shape)


def _labels(y: np.ndarray, mode: str, seed: int, num_classes: int, p) -> np.ndarray:
    if mode == "random-labels":
        if p not in (None, 1, 1.0):
            raise ValueError(f"random-labels replaces every label (p = 1), got p={p!r}")
        p = 1.0
    elif p is None or not 0 < p <= 1:
        raise ValueError(f"partial needs a corruption probability p in (0, 1], got p={p!r}")
    return noisy_labels(y, p, num_classes, recipe="seeded", seed=seed)


def randomize(
    x, y, mode: str, *, seed: int, num_classes: int, p: float | None = None, split: str = "train"
):
    """One of Zhang et al.'s randomization tests applied to one split (table above).

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor, shape (N, C, H, W) or (N, d)
        Inputs: images (any dtype; ``uint8`` stays ``uint8``) or feature vectors.
    y : numpy.ndarray or torch.Tensor, shape (N,)
        Integer labels in ``[0, num_classes)``.
    mode : str
        One of :data:`RANDOMIZATIONS`.
    seed : int
        Seeds the mode's own random stream: the same seed, mode and shape give the same
        result; ``shuffled-pixels`` gives the training and the test split the same permutation.
    num_classes : int
        ``K``, for the label modes.
    p : float, optional
        ``partial`` only: the probability that a label is redrawn, in (0, 1].
    split : {"train", "test"}
        Which split ``x``, ``y`` are (the test split follows Zhang's definitions, table above).

    Returns
    -------
    (x, y)
        New arrays (or ``x``/``y`` themselves where the mode leaves them), of the input's kind.

    Raises
    ------
    ValueError
        Unknown mode or split, ``p`` missing or out of range for ``partial``, given for another
        mode, or ``x`` and ``y`` of different lengths.
    """
    check_mode(mode)
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if p is not None and mode != "partial" and not (mode == "random-labels" and p == 1):
        raise ValueError(f"p applies to the partial mode only, got p={p!r} with {mode!r}")
    is_torch = isinstance(x, torch.Tensor)
    x_np = x.detach().cpu().numpy() if is_torch else np.asarray(x)
    y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if x_np.shape[0] != y_np.shape[0]:
        raise ValueError(f"x has {x_np.shape[0]} samples but y has {y_np.shape[0]} labels")
    new_x, new_y = None, None
    if mode in LABEL_MODES and split == "train":
        new_y = _labels(y_np, mode, seed, num_classes, p)
    elif mode == "shuffled-pixels":
        new_x = _shuffled_pixels(x_np, seed)
    elif mode == "random-pixels" and split == "train":
        new_x = _random_pixels(x_np, seed)
    elif mode == "gaussian" and split == "train":
        new_x = _gaussian(x_np, seed)
    if new_x is not None:
        x = torch.from_numpy(np.ascontiguousarray(new_x)) if is_torch else new_x
    if new_y is not None:
        y = torch.from_numpy(new_y.astype(y_np.dtype)) if isinstance(y, torch.Tensor) else new_y
    return x, y


def randomize_split(split, mode: str, *, seed: int):
    """A :class:`~masc_fast.data.LabelledSplit` with ``mode``'s input randomization applied
    to its inputs (:func:`randomize`; the label modes and ``true`` return ``split`` itself:
    a run's labels come from :func:`~masc_fast.data.corruption.noisy_labels`)."""
    from dataclasses import replace

    if check_mode(mode) not in INPUT_MODES:
        return split
    data, _ = randomize(
        split.data,
        split.labels,
        mode,
        seed=seed,
        num_classes=split.info.num_classes,
        split=split.split,
    )
    return split if data is split.data else replace(split, data=data)
