"""``load_dataset``: one entry point over torchvision sets, Tiny ImageNet and offline sets."""

from __future__ import annotations

import os
from pathlib import Path

from masc_fast.data._missing import missing_dataset
from masc_fast.data.catalog import dataset_info
from masc_fast.data.offline import OFFLINE_NAMES, load_offline
from masc_fast.data.splits import LabelledSplit
from masc_fast.data.tiny_imagenet import FOLDER_NAME, TINY_IMAGENET_URL, load_tiny_imagenet
from masc_fast.data.torchvision_sets import TORCHVISION_CLASSES, layout, load_torchvision

__all__ = ["load_dataset"]


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = False,
    progress: bool = True,
) -> tuple[LabelledSplit, LabelledSplit]:
    """Load the train and test splits of a dataset, true labels in dataset order.

    Parameters
    ----------
    name : str
        One of :data:`masc_fast.data.DATASET_NAMES`.
    root : str or path-like, optional
        Data root: the folder holding ``MNIST/raw/``, ``FashionMNIST/raw/``,
        ``cifar-10-batches-py/``, ``cifar-100-python/`` or ``tiny-imagenet-200/`` (torchvision's
        layout). Required for those sets; ignored by ``"digits"`` and ``"mnist1d"``, which
        need no files.
    download : bool, default False
        Download missing files into ``root`` first (torchvision's downloader; Tiny ImageNet
        from its official zip).
    progress : bool, default True
        Show a tqdm bar for slow steps (decoding Tiny ImageNet's JPEGs).

    Returns
    -------
    train, test : LabelledSplit
        Compact storage (``uint8`` pixels ``(N, C, H, W)`` or float32 vectors ``(N, d)``);
        ``split.inputs(index)`` gives float32 model inputs with the SPEC §2 preprocessing.
        For Tiny ImageNet, ``test`` is the official validation set.

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the known ones).
    FileNotFoundError
        If the dataset is not under ``root`` (or ``root`` is ``None``) and ``download`` is
        false; the message names the dataset, the paths looked at, and how to get it.
    RuntimeError
        If torchvision fails to read or download the files.

    Examples
    --------
    >>> train, test = load_dataset("digits")
    >>> len(train), len(test), train.info.num_classes
    (1347, 450, 10)
    >>> load_dataset("mnist")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    FileNotFoundError: dataset 'mnist' needs a data root ...
    """
    info = dataset_info(name)
    if name in OFFLINE_NAMES:
        return load_offline(name)
    if root is None:
        url = TINY_IMAGENET_URL if name == "tiny-imagenet" else None
        holds = f"{FOLDER_NAME}/" if name == "tiny-imagenet" else layout(name)
        raise missing_dataset(info.name, None, holds, url=url)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path, got {type(root).__name__}")
    root = Path(root).expanduser()
    if name == "tiny-imagenet":
        return load_tiny_imagenet(root, download=download, progress=progress)
    assert name in TORCHVISION_CLASSES  # every DATASET_NAMES entry is handled above or here
    return load_torchvision(name, root, download=download)
