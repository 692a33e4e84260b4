"""``load_dataset``: one entry point over torchvision sets, Tiny ImageNet and offline sets."""

from __future__ import annotations

import os
from pathlib import Path

from masc_fast.data._missing import missing_dataset
from masc_fast.data.catalog import dataset_info
from masc_fast.data.idx_folder import idx_folder, load_idx_folder
from masc_fast.data.offline import OFFLINE_NAMES, load_offline
from masc_fast.data.splits import LabelledSplit
from masc_fast.data.tiny_imagenet import FOLDER_NAME, TINY_IMAGENET_URL, load_tiny_imagenet
from masc_fast.data.torchvision_sets import (
    TORCHVISION_CLASSES,
    expected_files,
    layout,
    load_torchvision,
)

__all__ = ["DEFAULT_DATA_ROOTS", "find_datasets", "load_dataset"]

#: Where ``masc-fast env`` looks for real datasets besides ``--data-root`` and
#: ``MASC_FAST_DATA_ROOT``: Debian's dataset packages, and ``data/`` in the working directory.
DEFAULT_DATA_ROOTS = (Path("/usr/share/datasets"), Path("data"))


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
        layout); for MNIST and Fashion-MNIST also ``mnist/`` or ``fashion-mnist/`` with the four
        idx files, gzipped or not (Debian's ``dataset-fashion-mnist``: root
        ``/usr/share/datasets``). Required for those sets; ignored by ``"digits"`` and
        ``"mnist1d"``, which need no files.
    download : bool, default False
        Download missing files into ``root`` first (torchvision's downloader; Tiny ImageNet
        from its official zip).
    progress : bool, default True
        Show a progress bar for slow steps (decoding Tiny ImageNet's JPEGs).

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
    folder = idx_folder(name, root)  # Debian's layout: <root>/fashion-mnist/*.gz
    if folder is not None and not all(path.is_file() for path in expected_files(name, root)):
        return load_idx_folder(name, folder)
    return load_torchvision(name, root, download=download)


def _located(name: str, root: Path) -> tuple[Path, str] | None:
    """Where ``name`` lies under ``root`` and in which layout, reading no data; None if absent."""
    if name == "tiny-imagenet":
        folder = root / FOLDER_NAME
        return (folder, "Tiny ImageNet folders") if (folder / "wnids.txt").is_file() else None
    files = expected_files(name, root)
    if all(path.is_file() for path in files):
        return files[0].parent, "torchvision"
    folder = idx_folder(name, root)
    return (folder, "Debian's idx files") if folder is not None else None


def find_datasets(roots=()) -> list[tuple[str, Path, str]]:
    """The real datasets on this machine: ``[(name, folder, layout)]``, first root first.

    Looks under ``roots``, then ``MASC_FAST_DATA_ROOT``, then :data:`DEFAULT_DATA_ROOTS`; a
    dataset found under several roots is listed once. Reads no data.
    """
    candidates = [Path(root).expanduser() for root in roots]
    if os.environ.get("MASC_FAST_DATA_ROOT"):
        candidates.append(Path(os.environ["MASC_FAST_DATA_ROOT"]).expanduser())
    candidates += DEFAULT_DATA_ROOTS
    found, seen = [], set()
    for root in candidates:
        for name in (*TORCHVISION_CLASSES, "tiny-imagenet"):
            located = None if name in seen or not root.is_dir() else _located(name, root)
            if located is not None:
                seen.add(name)
                found.append((name, *located))
    return found
