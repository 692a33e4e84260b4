"""The rules of the relabelling protocol (SPEC §6 items 1, 3 and 8), on plain arrays.

How the authors split the test set 80/20 (:func:`split_test`), how they chose the relabelling
layer (:func:`select_layer`) and how they counted what relabelling did to the wrong labels
(:func:`relabel_analysis`), plus the checks of the names and seed these take. No model and no
data loading here: :mod:`masc_fast.pipeline.experiments.relabel` computes the relabels with them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "DEFAULT_SPLIT_SEED",
    "SUBSPACE_SETS",
    "check_choices",
    "check_split_seed",
    "check_subspaces",
    "relabel_analysis",
    "select_layer",
    "split_test",
]

#: ``random_state`` of the authors' 80/20 test split (pytorch_retrain_early.py:151-169).
DEFAULT_SPLIT_SEED = 2345
#: Which training labels the class subspaces are fitted on.
SUBSPACE_SETS = ("corrupted", "true")
_TEST20_SIZE = 0.20


def split_test(n_test: int, *, seed: int = DEFAULT_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the 80 % and 20 % parts of a test set, as the authors split it.

    ``sklearn.model_selection.train_test_split(np.arange(n_test), test_size=0.20,
    random_state=seed)``: the first part ("test80") scores the retrained model, the second
    ("test20") chooses the layer and drives early stopping.

    Parameters
    ----------
    n_test : int
        Size of the test set (at least 2, so both parts are non-empty).
    seed : int, default 2345
        ``random_state`` of the split (non-negative).

    Returns
    -------
    test80, test20 : numpy.ndarray of int64
        Disjoint indices into the test set, in the order sklearn returns them; together they
        cover ``range(n_test)``.

    Raises
    ------
    ValueError, TypeError
        If ``n_test < 2`` or ``seed`` is not a non-negative integer.

    Examples
    --------
    >>> test80, test20 = split_test(10_000)
    >>> len(test80), len(test20)
    (8000, 2000)
    """
    from sklearn.model_selection import train_test_split

    if isinstance(n_test, bool) or not isinstance(n_test, numbers.Integral) or n_test < 2:
        raise ValueError(f"n_test must be an integer >= 2, got {n_test!r}")
    seed = check_split_seed(seed)
    test80, test20 = train_test_split(
        np.arange(int(n_test)), test_size=_TEST20_SIZE, random_state=seed
    )
    return test80.astype(np.int64), test20.astype(np.int64)


def check_split_seed(seed) -> int:
    """``seed`` as an int; TypeError unless an integer, ValueError outside [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"split_seed must be an integer, got {seed!r}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"split_seed must lie in [0, 2**32), got {seed}")
    return int(seed)


def select_layer(accuracies: Mapping[str, float]) -> str:
    """The layer with the highest accuracy; the first in the mapping's order on ties.

    This is ``np.argmax`` over the candidate list, as the authors chose the relabelling layer.

    Parameters
    ----------
    accuracies : mapping of layer name to float
        MASC accuracy on the 20 % split per layer, in the model's layer order.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``accuracies`` is empty or holds a NaN (the message names the layer).

    Examples
    --------
    >>> select_layer({"input": 0.7, "fc1": 0.9, "fc2": 0.9})
    'fc1'
    """
    if not accuracies:
        raise ValueError("no layer accuracies to choose from")
    best_layer, best = None, None
    for layer, value in accuracies.items():
        value = float(value)
        if np.isnan(value):
            raise ValueError(f"layer {layer!r} has a NaN accuracy; cannot choose a layer")
        if best is None or value > best:
            best_layer, best = layer, value
    return best_layer


def relabel_analysis(true_labels, corrupted_labels, relabels) -> dict[str, float]:
    """What relabelling did to the wrong labels (SPEC §6 item 8, ``percentage_captured``).

    With O the original (true), C the corrupted and R the new labels:

    * ``wrong_corrected_pct = 100 · |{O ≠ C and R = O}| / |{O ≠ C}|`` (the authors'
      ``per_wlrc``: wrong labels MASC corrected);
    * ``correct_broken_pct = 100 · |{O = C and R ≠ C}| / |{O = C}|`` (``per_clwr``: correct
      labels MASC broke);
    * ``wrong_reduction = (|{O ≠ C}| − |{O ≠ R}|) / |{O ≠ C}|`` (``per_incorrect``, a
      fraction: the relative drop in the number of wrong labels; negative when relabelling
      added wrong labels).

    A ratio whose denominator is zero (no corrupted label at p = 0, or every label corrupted)
    is NaN.

    Parameters
    ----------
    true_labels, corrupted_labels, relabels : array_like of int, shape (n,)

    Returns
    -------
    dict
        ``{"wrong_corrected_pct", "correct_broken_pct", "wrong_reduction"}`` as floats.

    Raises
    ------
    ValueError
        If the arrays are not 1-D or differ in length.

    Examples
    --------
    >>> relabel_analysis([0, 1, 2, 3], [0, 1, 0, 0], [0, 2, 2, 0])
    {'wrong_corrected_pct': 50.0, 'correct_broken_pct': 50.0, 'wrong_reduction': 0.0}
    """
    arrays = [np.asarray(a) for a in (true_labels, corrupted_labels, relabels)]
    names = ("true_labels", "corrupted_labels", "relabels")
    for name, array in zip(names, arrays):
        if array.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if len({array.shape[0] for array in arrays}) != 1:
        lengths = ", ".join(f"{n} {a.shape[0]}" for n, a in zip(names, arrays))
        raise ValueError(f"label arrays differ in length: {lengths}")
    original, corrupted, relabelled = arrays
    wrong = original != corrupted
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    corrected = int((wrong & (relabelled == original)).sum())
    broken = int((~wrong & (relabelled != corrupted)).sum())
    wrong_after = int((original != relabelled).sum())
    return {
        "wrong_corrected_pct": 100.0 * corrected / n_wrong if n_wrong else float("nan"),
        "correct_broken_pct": 100.0 * broken / n_right if n_right else float("nan"),
        "wrong_reduction": (n_wrong - wrong_after) / n_wrong if n_wrong else float("nan"),
    }


def check_choices(values, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """``values`` (one name or several) as a tuple without repeats, each one of ``allowed``.

    Raises
    ------
    ValueError
        If ``values`` is empty or holds a name not in ``allowed`` (the message names ``what``).
    """
    values = (values,) if isinstance(values, str) else tuple(values)
    bad = [value for value in values if value not in allowed]
    if bad or not values:
        raise ValueError(f"{what} must be some of {tuple(allowed)}, got {list(values)}")
    return tuple(dict.fromkeys(values))


def check_subspaces(subspaces: Sequence[str]) -> tuple[str, ...]:
    """:func:`check_choices` of subspace-set names against :data:`SUBSPACE_SETS`."""
    return check_choices(subspaces, SUBSPACE_SETS, "subspaces")
