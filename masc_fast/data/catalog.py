"""What each supported dataset is: classes, input shape, normalisation, sizes (SPEC §2).

The table here is the single source of these facts; loaders attach the matching
:class:`DatasetInfo` to every split they return, so model builders and the noise recipe read
``split.info`` instead of hard-coding per-dataset constants.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASET_NAMES", "DatasetInfo", "dataset_info"]

DATASET_NAMES = (
    "mnist",
    "fashion-mnist",
    "cifar10",
    "cifar100",
    "tiny-imagenet",
    "digits",
    "mnist1d",
)


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset.

    Attributes
    ----------
    name : str
        One of :data:`DATASET_NAMES`.
    num_classes : int
        ``K``, the number of classes; labels lie in ``[0, K)``.
    input_shape : tuple of int
        Shape of one model input: ``(C, H, W)`` for image sets, ``(d,)`` for the vector sets.
    mean, std : tuple of float or None
        Per-channel ``Normalize`` constants applied after ``ToTensor`` (``x/255``). ``None``
        when the authors used ``ToTensor`` only (Tiny ImageNet) or when the stored data are
        already preprocessed floats (digits, MNIST-1D).
    strict_corruption : bool
        The authors' corrupting dataset uses ``u < p`` (and draws nothing at ``p = 0``)
        instead of ``u <= p``; true only for Tiny ImageNet (SPEC §2.1). Pass it as
        ``strict=`` to :func:`masc_fast.data.corruption.noisy_labels`.
    train_size, test_size : int
        Sizes of the full splits (60,000 / 10,000 for MNIST, ...); for digits and MNIST-1D
        the sizes of the offline splits :mod:`masc_fast.data.in_memory` makes.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    strict_corruption: bool
    train_size: int
    test_size: int


_HALF_1 = (0.5,)
_HALF_3 = (0.5, 0.5, 0.5)

# SPEC §2: Normalize(0.5, 0.5) for the torchvision sets, ToTensor only for Tiny ImageNet.
_CATALOG = {
    info.name: info
    for info in (
        DatasetInfo("mnist", 10, (1, 28, 28), _HALF_1, _HALF_1, False, 60_000, 10_000),
        DatasetInfo("fashion-mnist", 10, (1, 28, 28), _HALF_1, _HALF_1, False, 60_000, 10_000),
        DatasetInfo("cifar10", 10, (3, 32, 32), _HALF_3, _HALF_3, False, 50_000, 10_000),
        DatasetInfo("cifar100", 100, (3, 32, 32), _HALF_3, _HALF_3, False, 50_000, 10_000),
        DatasetInfo("tiny-imagenet", 200, (3, 64, 64), None, None, True, 100_000, 10_000),
        # load_digits_split() defaults: 1,797 images, test_size 0.25, stratified.
        DatasetInfo("digits", 10, (64,), None, None, False, 1_347, 450),
        # load_mnist1d() defaults: 5,000 signals of length 40, split 4,000 / 1,000.
        DatasetInfo("mnist1d", 10, (40,), None, None, False, 4_000, 1_000),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of dataset ``name``.

    Parameters
    ----------
    name : str
        One of :data:`DATASET_NAMES` (exact spelling).

    Returns
    -------
    DatasetInfo

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset; the message lists the known ones.
    TypeError
        If ``name`` is not a string.

    Examples
    --------
    >>> dataset_info("cifar10").input_shape
    (3, 32, 32)
    >>> dataset_info("tiny-imagenet").strict_corruption
    True
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    try:
        return _CATALOG[name]
    except KeyError:
        raise ValueError(
            f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}"
        ) from None
