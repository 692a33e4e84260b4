"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision's own dataset classes.

torchvision reads the files (idx files for the MNIST family, pickled batches for CIFAR) exactly
as the authors' code did (SPEC §2); this module takes its ``.data`` / ``.targets`` arrays as
they come, in dataset order, and stores the pixels channel-first as ``uint8``. torchvision is
imported inside the functions, so ``import masc_fast.data`` does not need it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from masc_fast.data._missing import missing_dataset
from masc_fast.data.catalog import dataset_info
from masc_fast.data.splits import LabelledSplit

__all__ = ["TORCHVISION_CLASSES", "expected_files", "load_torchvision"]

logger = logging.getLogger(__name__)

# Dataset name -> class in torchvision.datasets.
TORCHVISION_CLASSES = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
}


def _dataset_class(name: str):
    import torchvision.datasets

    return getattr(torchvision.datasets, TORCHVISION_CLASSES[name])


def _is_mnist_family(name: str) -> bool:
    return name in ("mnist", "fashion-mnist")


def _torchvision_folder(name: str) -> str:
    if _is_mnist_family(name):
        return f"{TORCHVISION_CLASSES[name]}/raw/"
    return f"{_dataset_class(name).base_folder}/"


def layout(name: str) -> str:
    """The folder the data root holds, e.g. ``"MNIST/raw/"`` (torchvision's layout; for the
    MNIST family also its idx files in ``<name>/``, as Debian packages them)."""
    if _is_mnist_family(name):
        return (
            f"{_torchvision_folder(name)} (torchvision's layout) or {name}/ (the four idx "
            f"files, gzipped or not, as Debian's dataset-{name} package installs them under "
            f"/usr/share/datasets)"
        )
    return _torchvision_folder(name)


def expected_files(name: str, root: Path) -> list[Path]:
    """Every file torchvision checks before it loads ``name`` from ``root`` (both splits).

    Read from the torchvision class itself (``resources`` for the MNIST family, ``train_list``,
    ``test_list`` and ``meta`` for CIFAR), so the list follows torchvision.
    """
    cls = _dataset_class(name)
    root = Path(root)
    if _is_mnist_family(name):
        raw = root / cls.__name__ / "raw"
        # MNIST._check_exists looks for each resource without its ".gz".
        return [raw / Path(url).name.rsplit(".", 1)[0] for url, _ in cls.resources]
    folder = root / cls.base_folder
    files = [file for file, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / file for file in files]


def _legacy_mnist_files(name: str, root: Path) -> list[Path]:
    """The processed ``.pt`` files old torchvision versions wrote; still read when present."""
    cls = _dataset_class(name)
    processed = Path(root) / cls.__name__ / "processed"
    return [processed / cls.training_file, processed / cls.test_file]


def _as_split(name: str, split: str, dataset) -> LabelledSplit:
    """``LabelledSplit`` from a torchvision dataset's ``.data`` and ``.targets``."""
    if _is_mnist_family(name):
        data = torch.as_tensor(dataset.data, dtype=torch.uint8).unsqueeze(1)  # (N, 1, 28, 28)
    else:
        # torchvision keeps CIFAR as (N, 32, 32, 3), HWC; back to the files' CHW order.
        data = torch.from_numpy(np.asarray(dataset.data, dtype=np.uint8).transpose(0, 3, 1, 2))
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    info = dataset_info(name)
    expected = info.train_size if split == "train" else info.test_size
    if len(labels) != expected:
        logger.info("%s %s: %d samples (the full split has %d)", name, split, len(labels), expected)
    return LabelledSplit(name, split, data.contiguous(), labels.contiguous(), info)


def load_torchvision(name: str, root: Path, *, download: bool = False):
    """Train and test splits of a torchvision dataset under ``root``.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "cifar10", "cifar100"}
    root : pathlib.Path
        The data root torchvision gets (it holds ``MNIST/raw/``, ``cifar-10-batches-py/``, ...).
    download : bool, default False
        Let torchvision download and extract the files first when they are missing.

    Returns
    -------
    (LabelledSplit, LabelledSplit)
        Train and test, uint8 ``(N, C, H, W)`` pixels and int64 labels in dataset order.
        CIFAR-100 labels are the 100 fine labels (torchvision's ``targets``).

    Raises
    ------
    FileNotFoundError
        If files are missing and ``download`` is false; the message lists them and says how
        to get them.
    RuntimeError
        If torchvision cannot read the files (a failed download or a checksum mismatch); the
        message names the folder and carries torchvision's reason.
    """
    root = Path(root)
    if not download:
        missing = [path for path in expected_files(name, root) if not path.is_file()]
        legacy = _is_mnist_family(name) and all(
            path.is_file() for path in _legacy_mnist_files(name, root)
        )
        if missing and not legacy:
            raise missing_dataset(name, root, layout(name), missing)
    cls = _dataset_class(name)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as error:  # torchvision's "not found or corrupted"
        raise RuntimeError(
            f"torchvision could not read dataset {name!r} under {root / _torchvision_folder(name)}: "
            f"{error}"
        ) from error
    logger.debug("loaded %s from %s", name, root)
    return _as_split(name, "train", train), _as_split(name, "test", test)
