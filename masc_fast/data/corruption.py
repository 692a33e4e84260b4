"""Label corruption exactly as the authors did it (SPEC §2.1).

Every corrupting dataset in the authors' code resets NumPy's global generator with
``np.random.seed(42)``, draws one uniform number per training sample in dataset order, and
replaces the label of every sample whose draw is ``<= p`` with a label drawn uniformly from all
``K`` classes (possibly the true one). :func:`corrupt_labels` replays the same stream from a
private ``np.random.RandomState`` so the global generator is left alone, and reproduces their
corrupted label vectors bit for bit.

:func:`noisy_labels` is the entry point experiments use: recipe ``"paper"`` is exactly that
vector (the same for every run), recipe ``"seeded"`` applies the same rule with a generator
seeded by the run, so runs with different seeds see independent noise.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["NOISE_RECIPES", "corrupt_labels", "noisy_labels"]

NOISE_RECIPES = ("paper", "seeded")


def _labels_as_int64(labels, num_classes: int) -> np.ndarray:
    """Checked int64 copy of a 1-D label vector with values in ``[0, num_classes)``."""
    if hasattr(labels, "detach"):  # a torch tensor, without importing torch here
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {tuple(array.shape)}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"labels must have an integer dtype, got {array.dtype}")
    array = array.astype(np.int64, copy=True)
    if array.size:
        bad = np.flatnonzero((array < 0) | (array >= num_classes))
        if bad.size:
            first = int(bad[0])
            raise ValueError(
                f"labels must lie in [0, num_classes={num_classes}); got {int(array[first])} "
                f"at index {first} ({bad.size} label(s) out of range)"
            )
    return array


def _check_probability(p) -> float:
    """``p`` as a float in [0, 1], or a ValueError naming it."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"p must be a real number in [0, 1], got {p!r}")
    p = float(p)
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    return p


def _check_num_classes(num_classes) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral):
        raise TypeError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def corrupt_labels(
    labels,
    p: float,
    num_classes: int,
    *,
    seed: int = 42,
    strict: bool = False,
) -> np.ndarray:
    """Replace a random fraction ``p`` of labels by uniform random classes, the authors' way.

    With ``u_i ~ U[0, 1)`` drawn once per sample in order from ``RandomState(seed)``, the
    corrupted set is ``M = {i : u_i <= p}`` (``u_i < p`` when ``strict``), and the ``j``-th
    sample of ``M`` (in index order) gets the ``j``-th of ``|M|`` labels drawn uniformly with
    replacement from ``{0, ..., K-1}`` by the same generator. The expected fraction of labels
    that actually change is ``p - p/K``, because a redrawn label equals the true one with
    probability ``1/K``.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        True labels in dataset order, values in ``[0, num_classes)``. A NumPy array, a list or
        a CPU/GPU torch tensor. Not modified.
    p : float
        Corruption probability in ``[0, 1]``. ``p = 1`` redraws every label; ``p = 0`` keeps
        all of them.
    num_classes : int
        ``K``, the number of classes replacement labels are drawn from.
    seed : int, default 42
        Seed of the private ``np.random.RandomState``. 42 is what every authors' script used
        (``np.random.seed(42)``), so the default reproduces their label vectors.
    strict : bool, default False
        Use ``u < p`` and draw nothing at all when ``p == 0``: the authors' Tiny ImageNet
        variant (``TinyImagenetCorrupted``). Both variants give the same labels unless some
        ``u_i`` equals ``p`` exactly.

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        The corrupted labels, a new array.

    Raises
    ------
    ValueError
        If ``p`` is outside ``[0, 1]`` or NaN, ``num_classes < 1``, ``labels`` is not 1-D, or a
        label lies outside ``[0, num_classes)``; the message names the offending value.
    TypeError
        If ``labels`` does not have an integer dtype, or ``p`` / ``num_classes`` is not a
        number of the right kind.

    Notes
    -----
    The global NumPy generator is not touched: ``RandomState(seed)`` yields exactly the stream
    that ``np.random.seed(seed)`` followed by ``np.random.rand`` / ``np.random.choice`` yields.
    Because the uniforms do not depend on ``p``, the corrupted sets are nested across ``p``;
    the replacement labels are not (the ``j``-th corrupted sample takes the ``j``-th draw).
    O(n) time and memory.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(10) % 3
    >>> corrupt_labels(y, 0.0, 3).tolist() == y.tolist()
    True
    >>> corrupt_labels(y, 0.5, 3).dtype
    dtype('int64')
    """
    p = _check_probability(p)
    num_classes = _check_num_classes(num_classes)
    corrupted = _labels_as_int64(labels, num_classes)
    if strict and p == 0.0:
        return corrupted

    rng = np.random.RandomState(seed)
    draws = rng.rand(corrupted.shape[0])
    mask = draws < p if strict else draws <= p
    corrupted[mask] = rng.choice(num_classes, int(mask.sum()))
    return corrupted


def noisy_labels(
    labels,
    p: float,
    num_classes: int,
    *,
    recipe: str = "paper",
    seed: int = 0,
    strict: bool = False,
) -> np.ndarray:
    """Labels with a fraction ``p`` redrawn uniformly, by the paper's recipe or a seeded one.

    Both recipes apply the rule of :func:`corrupt_labels`: one ``u_i ~ U[0, 1)`` per sample in
    order, the mask ``u_i <= p`` (``u_i < p`` when ``strict``), and the masked samples, in
    index order, take labels drawn uniformly with replacement from all ``K`` classes.

    * ``"paper"``: ``corrupt_labels(labels, p, num_classes, seed=42, strict=strict)``, the
      authors' fixed global seed; **``seed`` is ignored**, so every run of an experiment gets
      the same label vector, as in the paper (SPEC §2.1).
    * ``"seeded"``: the uniforms and then the replacement labels come from
      ``np.random.default_rng(seed)`` (``rng.random(n)``, then ``rng.integers(0, K, m)``), so
      distinct run seeds give independent noise while a fixed seed is reproducible and its
      masks are nested across ``p``.

    Parameters
    ----------
    labels : array_like of int, shape (n,)
        True labels in dataset order, values in ``[0, num_classes)``; not modified.
    p : float
        Corruption probability in ``[0, 1]``.
    num_classes : int
        ``K``.
    recipe : {"paper", "seeded"}, default "paper"
        See above; :data:`NOISE_RECIPES` lists them.
    seed : int, default 0
        Seed of the ``"seeded"`` recipe (a non-negative integer); ignored by ``"paper"``.
    strict : bool, default False
        Strict ``<`` and no draws at ``p = 0``: the authors' Tiny ImageNet variant
        (``DatasetInfo.strict_corruption``).

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
        A new array. Expected fraction changed: ``p - p/K``.

    Raises
    ------
    ValueError
        If ``recipe`` is unknown (the message lists :data:`NOISE_RECIPES`), ``seed`` is
        negative, or ``labels`` / ``p`` / ``num_classes`` fail :func:`corrupt_labels`' checks.
    TypeError
        If ``seed`` is not an integer, or as :func:`corrupt_labels`.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.arange(1000) % 10
    >>> np.array_equal(noisy_labels(y, 0.4, 10), corrupt_labels(y, 0.4, 10))
    True
    >>> a = noisy_labels(y, 0.4, 10, recipe="seeded", seed=1)
    >>> b = noisy_labels(y, 0.4, 10, recipe="seeded", seed=2)
    >>> bool(np.array_equal(a, b))
    False
    """
    if recipe not in NOISE_RECIPES:
        raise ValueError(f"unknown noise recipe {recipe!r}; expected one of {NOISE_RECIPES}")
    if recipe == "paper":
        return corrupt_labels(labels, p, num_classes, seed=42, strict=strict)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    p = _check_probability(p)
    num_classes = _check_num_classes(num_classes)
    noisy = _labels_as_int64(labels, num_classes)
    if strict and p == 0.0:
        return noisy
    rng = np.random.default_rng(int(seed))
    draws = rng.random(noisy.shape[0])
    mask = draws < p if strict else draws <= p
    noisy[mask] = rng.integers(0, num_classes, size=int(mask.sum()))
    return noisy
